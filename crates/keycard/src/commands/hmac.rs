//! `keycard hmac create|list|revoke` (the operations are `keycard_server::manage`'s).

use keycard_server::Settings;
use keycard_server::manage::NewHmacRequest;

use super::common::{CliError, flag_names, manager};
use crate::cli::HmacCommand;
use crate::output::json;

pub async fn run(settings: &Settings, cmd: HmacCommand, as_json: bool) -> Result<(), CliError> {
    let m = manager(settings).await?;
    match cmd {
        HmacCommand::Create {
            subject,
            scopes,
            expires_in,
            public_key,
        } => {
            let public_key_pem = match &public_key {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                    CliError::Usage(format!("--public-key {}: {e}", path.display()))
                })?),
                None => None,
            };
            let k = m
                .create_hmac_key(NewHmacRequest {
                    subject,
                    scopes,
                    expires_in,
                    public_key_pem,
                })
                .await
                .map_err(flag_names)?;
            if as_json {
                return json(&k);
            }
            let expires = k.expires_at.as_deref().unwrap_or("never");
            match &k.secret {
                Some(secret) => {
                    println!("Created HMAC key {} for {}.", k.id, k.subject);
                    println!("key_id: {}", k.key_id);
                    println!("secret: {secret}");
                    println!(
                        "Keep the secret now: it is shown once (keycard keeps it sealed with the master key)."
                    );
                    println!("Expires: {expires}");
                    println!(
                        "Sign a request: printf '%s' \"$SECRET\" | keycard sign --key-id {} --secret-stdin URL",
                        k.key_id
                    );
                }
                None => {
                    println!("Registered Ed25519 key {} for {}.", k.id, k.subject);
                    println!("key_id: {}", k.key_id);
                    println!("Expires: {expires}");
                    println!(
                        "Sign a request: keycard sign --key-id {} --private-key PRIVATE.pem URL",
                        k.key_id
                    );
                }
            }
            Ok(())
        }
        HmacCommand::List { subject } => {
            let keys = m.list_hmac_keys(subject.as_deref()).await?;
            if as_json {
                return json(&keys);
            }
            if keys.is_empty() {
                println!("No HMAC keys.");
                return Ok(());
            }
            println!(
                "{:<22} {:<20} {:<16} {:<8} {:<21} SCOPES",
                "ID", "KEY_ID", "SUBJECT", "STATUS", "EXPIRES"
            );
            for k in keys {
                println!(
                    "{:<22} {:<20} {:<16} {:<8} {:<21} {}",
                    k.id,
                    k.key_id,
                    k.subject,
                    k.life.status,
                    k.life.expires_at.unwrap_or_else(|| "never".into()),
                    k.scopes.join(" ")
                );
            }
            Ok(())
        }
        HmacCommand::Revoke { id } => {
            m.revoke_hmac_key(&id).await?;
            if as_json {
                return json(&serde_json::json!({"id": id, "revoked": true}));
            }
            println!("Revoked HMAC key {id}.");
            Ok(())
        }
    }
}
