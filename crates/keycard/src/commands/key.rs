//! `keycard key create|list|revoke|rotate` (the operations are `keycard_server::manage`'s).

use keycard_server::Settings;
use keycard_server::manage::{KeyCreated, NewKeyRequest};

use super::common::{CliError, duration_flag, flag_names, manager};
use crate::cli::KeyCommand;
use crate::output::json;

pub async fn run(settings: &Settings, cmd: KeyCommand, as_json: bool) -> Result<(), CliError> {
    let m = manager(settings).await?;
    match cmd {
        KeyCommand::Create {
            subject,
            scopes,
            expires_in,
            name,
        } => {
            let created = m
                .create_api_key(NewKeyRequest {
                    subject,
                    scopes,
                    expires_in,
                    name,
                })
                .await
                .map_err(flag_names)?;
            print_created(&created, as_json, None)
        }
        KeyCommand::List { subject } => {
            let listed = m.list_api_keys(subject.as_deref()).await?;
            if as_json {
                return json(&listed);
            }
            if listed.is_empty() {
                println!("No API keys.");
                return Ok(());
            }
            println!(
                "{:<21} {:<16} {:<8} {:<20} {:<20} {:<20} SCOPES",
                "ID", "SUBJECT", "STATUS", "EXPIRES", "LAST USED", "NAME"
            );
            for k in listed {
                println!(
                    "{:<21} {:<16} {:<8} {:<20} {:<20} {:<20} {}",
                    k.id,
                    k.subject,
                    k.life.status,
                    k.life.expires_at.as_deref().unwrap_or("never"),
                    k.last_used_at.as_deref().unwrap_or("-"),
                    k.name.as_deref().unwrap_or("-"),
                    k.scopes.join(" ")
                );
            }
            Ok(())
        }
        KeyCommand::Revoke { id } => {
            m.revoke_api_key(&id).await?;
            if as_json {
                return json(&serde_json::json!({"id": id, "revoked": true}));
            }
            println!("Revoked {id}. Every keycard instance refuses it within a second.");
            Ok(())
        }
        KeyCommand::Rotate { id, grace } => {
            let grace = duration_flag("--grace", &grace)?;
            let created = m.rotate_api_key(&id, grace).await.map_err(flag_names)?;
            let old_note = if grace > 0 {
                format!(
                    "The old key {id} keeps working until {}.",
                    created.old_valid_until.as_deref().unwrap_or("-")
                )
            } else {
                format!("The old key {id} is revoked.")
            };
            print_created(&created, as_json, Some(&old_note))
        }
    }
}

fn print_created(k: &KeyCreated, as_json: bool, note: Option<&str>) -> Result<(), CliError> {
    if as_json {
        return json(k);
    }
    println!("Created API key {} for subject {}", k.id, k.subject);
    println!(
        "  scopes:  {}",
        if k.scopes.is_empty() {
            "(none)".to_owned()
        } else {
            k.scopes.join(" ")
        }
    );
    println!("  expires: {}", k.expires_at.as_deref().unwrap_or("never"));
    if let Some(note) = note {
        println!("  {note}");
    }
    println!();
    println!("The key is shown only this once; keycard keeps just a keyed hash of it:");
    println!("{}", k.key);
    Ok(())
}
