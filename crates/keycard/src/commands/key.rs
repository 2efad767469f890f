//! `keycard key create|list|revoke|rotate`.

use keycard_core::{Scopes, api_key, new_id};
use keycard_server::{Settings, now_secs};
use keycard_store::{ApiKeyRow, NewApiKey};
use serde::Serialize;

use super::{CliError, check_subject, duration_flag, master, open_store};
use crate::cli::KeyCommand;
use crate::output::{json, time_or};

#[derive(Serialize)]
struct Created<'a> {
    id: &'a str,
    key: &'a str,
    subject: &'a str,
    scopes: Vec<String>,
    expires_at: Option<String>,
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct Listed {
    id: String,
    subject: String,
    name: Option<String>,
    scopes: Vec<String>,
    status: &'static str,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
    rotated_from: Option<String>,
}

pub async fn run(settings: &Settings, cmd: KeyCommand, as_json: bool) -> Result<(), CliError> {
    match cmd {
        KeyCommand::Create {
            subject,
            scopes,
            expires_in,
            name,
        } => {
            check_subject(&subject)?;
            let scopes =
                Scopes::from_list(&scopes).map_err(|e| CliError::Usage(format!("--scope: {e}")))?;
            let now = now_secs();
            let expires_at = match expires_in {
                Some(d) => Some(now + positive("--expires-in", &d)?),
                None => None,
            };
            let store = open_store(settings).await?;
            let hasher = master(settings)?.keyed_hasher();
            let key = api_key::generate().map_err(|e| CliError::Other(e.to_string()))?;
            let id = new_id("key").map_err(|e| CliError::Other(e.to_string()))?;
            let new = NewApiKey {
                id,
                subject,
                lookup: api_key::lookup_handle(&hasher, key.expose_secret()),
                name,
                scopes: scopes.as_str().to_owned(),
                created_at: now,
                expires_at,
            };
            store.create_api_key(&new).await?;
            print_created(&new, key.expose_secret(), as_json, None)
        }
        KeyCommand::List { subject } => {
            let store = open_store(settings).await?;
            let rows = store.list_api_keys(subject.as_deref()).await?;
            let now = now_secs();
            let listed: Vec<Listed> = rows.into_iter().map(|r| listed(r, now)).collect();
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
                    k.status,
                    k.expires_at.as_deref().unwrap_or("never"),
                    k.last_used_at.as_deref().unwrap_or("-"),
                    k.name.as_deref().unwrap_or("-"),
                    k.scopes.join(" ")
                );
            }
            Ok(())
        }
        KeyCommand::Revoke { id } => {
            let store = open_store(settings).await?;
            store.revoke_api_key(&id, now_secs()).await?;
            if as_json {
                return json(&serde_json::json!({"id": id, "revoked": true}));
            }
            println!("Revoked {id}. Every keycard instance refuses it within a second.");
            Ok(())
        }
        KeyCommand::Rotate { id, grace } => {
            let grace = duration_flag("--grace", &grace)?;
            let store = open_store(settings).await?;
            let hasher = master(settings)?.keyed_hasher();
            let old = store.get_api_key(&id).await?;
            let now = now_secs();
            // The new key lives as long as the old one was meant to, counted from now.
            let expires_at = old.expires_at.map(|e| now + (e - old.created_at).max(0));
            let key = api_key::generate().map_err(|e| CliError::Other(e.to_string()))?;
            let new = NewApiKey {
                id: new_id("key").map_err(|e| CliError::Other(e.to_string()))?,
                subject: old.subject.clone(),
                lookup: api_key::lookup_handle(&hasher, key.expose_secret()),
                name: old.name.clone(),
                scopes: old.scopes.clone(),
                created_at: now,
                expires_at,
            };
            let grace_until = now + grace;
            store.rotate_api_key(&id, &new, grace_until).await?;
            let old_note = if grace > 0 {
                format!(
                    "The old key {id} keeps working until {}.",
                    keycard_core::time::rfc3339(grace_until)
                )
            } else {
                format!("The old key {id} is revoked.")
            };
            print_created(&new, key.expose_secret(), as_json, Some(&old_note))
        }
    }
}

pub(super) fn positive(flag: &str, value: &str) -> Result<i64, CliError> {
    let secs = duration_flag(flag, value)?;
    if secs <= 0 {
        return Err(CliError::Usage(format!("{flag}: must be more than 0s")));
    }
    Ok(secs)
}

fn print_created(
    new: &NewApiKey,
    key: &str,
    as_json: bool,
    note: Option<&str>,
) -> Result<(), CliError> {
    let scopes = Scopes::parse(&new.scopes)
        .map(|s| s.to_vec())
        .unwrap_or_default();
    if as_json {
        return json(&Created {
            id: &new.id,
            key,
            subject: &new.subject,
            scopes,
            expires_at: new.expires_at.map(keycard_core::time::rfc3339),
            name: new.name.as_deref(),
        });
    }
    println!("Created API key {} for subject {}", new.id, new.subject);
    println!(
        "  scopes:  {}",
        if scopes.is_empty() {
            "(none)".to_owned()
        } else {
            scopes.join(" ")
        }
    );
    println!("  expires: {}", time_or(new.expires_at, "never"));
    if let Some(note) = note {
        println!("  {note}");
    }
    println!();
    println!("The key is shown only this once; keycard keeps just a keyed hash of it:");
    println!("{key}");
    Ok(())
}

fn listed(r: ApiKeyRow, now: i64) -> Listed {
    let status =
        crate::output::credential_status(r.revoked_at, r.expires_at, r.subject_disabled, now);
    Listed {
        scopes: Scopes::parse(&r.scopes)
            .map(|s| s.to_vec())
            .unwrap_or_default(),
        status,
        created_at: keycard_core::time::rfc3339(r.created_at),
        expires_at: r.expires_at.map(keycard_core::time::rfc3339),
        revoked_at: r.revoked_at.map(keycard_core::time::rfc3339),
        last_used_at: r.last_used_at.map(keycard_core::time::rfc3339),
        id: r.id,
        subject: r.subject,
        name: r.name,
        rotated_from: r.rotated_from,
    }
}
