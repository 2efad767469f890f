//! `keycard hmac create|list|revoke`: RFC 9421 request-signing keys.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keycard_core::{HashDomain, Scopes, SecretBytes, new_id};
use keycard_server::{Settings, now_secs};
use keycard_store::{HmacKeyRow, NewHmacKey};
use serde::Serialize;

use super::{CliError, check_subject, master, open_store};
use crate::cli::HmacCommand;
use crate::output::{json, time_or};

/// Secret length: 256 bits (RFC 9421 §3.3.3 asks for a key as long as the hash output).
const SECRET_LEN: usize = 32;

#[derive(Serialize)]
struct Listed {
    id: String,
    key_id: String,
    alg: String,
    subject: String,
    scopes: Vec<String>,
    status: &'static str,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
}

fn listed(r: HmacKeyRow, now: i64) -> Listed {
    let status =
        crate::output::credential_status(r.revoked_at, r.expires_at, r.subject_disabled, now);
    Listed {
        status,
        scopes: r.scopes.split_whitespace().map(str::to_owned).collect(),
        created_at: keycard_core::time::rfc3339(r.created_at),
        expires_at: r.expires_at.map(keycard_core::time::rfc3339),
        revoked_at: r.revoked_at.map(keycard_core::time::rfc3339),
        id: r.id,
        key_id: r.key_id,
        alg: r
            .alg
            .unwrap_or_else(|| keycard_core::httpsig::HMAC_SHA256.into()),
        subject: r.subject,
    }
}

pub async fn run(settings: &Settings, cmd: HmacCommand, as_json: bool) -> Result<(), CliError> {
    match cmd {
        HmacCommand::Create {
            subject,
            scopes,
            expires_in,
            public_key: Some(path),
        } => {
            check_subject(&subject)?;
            let scopes =
                Scopes::from_list(&scopes).map_err(|e| CliError::Usage(format!("--scope: {e}")))?;
            let pem = std::fs::read(&path)
                .map_err(|e| CliError::Usage(format!("--public-key {}: {e}", path.display())))?;
            let public = keycard_core::httpsig::ed25519_public_key_from_pem(&pem).ok_or_else(|| {
                CliError::Usage(format!(
                    "--public-key {}: not an Ed25519 public key (PEM: openssl pkey -in key.pem -pubout)",
                    path.display()
                ))
            })?;
            let now = now_secs();
            let expires_at = match expires_in {
                Some(d) => Some(now + super::key::positive("--expires-in", &d)?),
                None => None,
            };
            let other = |e: keycard_core::MasterKeyError| CliError::Other(e.to_string());
            let id = new_id("hmac").map_err(other)?;
            let key_id = new_id("hk").map_err(other)?;
            let new = NewHmacKey {
                id: id.clone(),
                key_id: key_id.clone(),
                subject: subject.clone(),
                lookup: master(settings)?
                    .keyed_hasher()
                    .hash(HashDomain::HmacKeyId, key_id.as_bytes()),
                sealed: public.to_vec(),
                alg: Some(keycard_core::httpsig::ED25519.into()),
                scopes: scopes.as_str().to_owned(),
                created_at: now,
                expires_at,
            };
            open_store(settings).await?.create_hmac_key(&new).await?;
            if as_json {
                return json(&serde_json::json!({
                    "id": id,
                    "key_id": key_id,
                    "secret": null,
                    "alg": keycard_core::httpsig::ED25519,
                    "subject": subject,
                    "scopes": scopes.to_vec(),
                    "expires_at": expires_at.map(keycard_core::time::rfc3339),
                }));
            }
            println!("Registered Ed25519 key {id} for {subject}.");
            println!("key_id: {key_id}");
            println!("Expires: {}", time_or(expires_at, "never"));
            println!(
                "Sign a request: keycard sign --key-id {key_id} --private-key PRIVATE.pem URL"
            );
            Ok(())
        }
        HmacCommand::Create {
            subject,
            scopes,
            expires_in,
            public_key: None,
        } => {
            check_subject(&subject)?;
            let scopes =
                Scopes::from_list(&scopes).map_err(|e| CliError::Usage(format!("--scope: {e}")))?;
            let now = now_secs();
            let expires_at = match expires_in {
                Some(d) => Some(now + super::key::positive("--expires-in", &d)?),
                None => None,
            };
            let master = master(settings)?;
            let mut raw = vec![0u8; SECRET_LEN];
            aws_lc_rs::rand::fill(&mut raw)
                .map_err(|_| CliError::Other("the random number generator failed".into()))?;
            let secret = SecretBytes::new(raw);
            let other = |e: keycard_core::MasterKeyError| CliError::Other(e.to_string());
            let id = new_id("hmac").map_err(other)?;
            let key_id = new_id("hk").map_err(other)?;
            let sealed = keycard_core::httpsig::seal_secret(
                &master.sealer(),
                &key_id,
                secret.expose_secret(),
            )
            .map_err(|e| CliError::Other(e.to_string()))?;
            let new = NewHmacKey {
                id: id.clone(),
                key_id: key_id.clone(),
                subject: subject.clone(),
                lookup: master
                    .keyed_hasher()
                    .hash(HashDomain::HmacKeyId, key_id.as_bytes()),
                sealed,
                alg: None,
                scopes: scopes.as_str().to_owned(),
                created_at: now,
                expires_at,
            };
            let store = open_store(settings).await?;
            store.create_hmac_key(&new).await?;
            let secret_b64 =
                keycard_core::SecretString::new(STANDARD.encode(secret.expose_secret()));
            if as_json {
                return json(&serde_json::json!({
                    "id": id,
                    "key_id": key_id,
                    "secret": secret_b64.expose_secret(),
                    "subject": subject,
                    "scopes": scopes.to_vec(),
                    "expires_at": expires_at.map(keycard_core::time::rfc3339),
                }));
            }
            println!("Created HMAC key {id} for {subject}.");
            println!("key_id: {key_id}");
            println!("secret: {}", secret_b64.expose_secret());
            println!(
                "Keep the secret now: it is shown once (keycard keeps it sealed with the master key)."
            );
            println!("Expires: {}", time_or(expires_at, "never"));
            println!(
                "Sign a request: printf '%s' \"$SECRET\" | keycard sign --key-id {key_id} --secret-stdin URL"
            );
            Ok(())
        }
        HmacCommand::List { subject } => {
            let store = open_store(settings).await?;
            let now = now_secs();
            let keys: Vec<Listed> = store
                .list_hmac_keys(subject.as_deref())
                .await?
                .into_iter()
                .map(|r| listed(r, now))
                .collect();
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
                    k.status,
                    k.expires_at.unwrap_or_else(|| "never".into()),
                    k.scopes.join(" ")
                );
            }
            Ok(())
        }
        HmacCommand::Revoke { id } => {
            let store = open_store(settings).await?;
            store.revoke_hmac_key(&id, now_secs()).await?;
            if as_json {
                return json(&serde_json::json!({"id": id, "revoked": true}));
            }
            println!("Revoked HMAC key {id}.");
            Ok(())
        }
    }
}
