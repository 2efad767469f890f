//! `keycard cert add|list|revoke`: client certificates bound to subjects (the `mtls` method).

use keycard_core::cert::CertIdentity;
use keycard_core::{HashDomain, Scopes, new_id};
use keycard_server::{Settings, now_secs};
use keycard_store::{CertBindingRow, NewCertBinding};
use serde::Serialize;

use super::{CliError, check_subject, master, open_store};
use crate::cli::CertCommand;
use crate::output::{json, time_or};

#[derive(Serialize)]
struct Listed {
    id: String,
    subject: String,
    fingerprint: String,
    scopes: Vec<String>,
    status: &'static str,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
}

fn listed(r: CertBindingRow, now: i64) -> Listed {
    let status =
        crate::output::credential_status(r.revoked_at, r.expires_at, r.subject_disabled, now);
    Listed {
        status,
        scopes: r.scopes.split_whitespace().map(str::to_owned).collect(),
        created_at: keycard_core::time::rfc3339(r.created_at),
        expires_at: r.expires_at.map(keycard_core::time::rfc3339),
        revoked_at: r.revoked_at.map(keycard_core::time::rfc3339),
        last_used_at: r.last_used_at.map(keycard_core::time::rfc3339),
        id: r.id,
        subject: r.subject,
        fingerprint: r.fingerprint,
    }
}

/// The first certificate of a PEM file, read.
pub(crate) fn read_cert(path: &std::path::Path) -> Result<CertIdentity, CliError> {
    let pem = std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("--cert {}: {e}", path.display())))?;
    let der = keycard_core::cert::certs_from_pem(&pem)
        .map_err(|e| CliError::Usage(format!("--cert {}: {e}", path.display())))?;
    let first = der
        .first()
        .ok_or_else(|| CliError::Usage(format!("--cert {}: no certificate", path.display())))?;
    CertIdentity::from_der(first)
        .map_err(|e| CliError::Usage(format!("--cert {}: {e}", path.display())))
}

pub async fn run(settings: &Settings, cmd: CertCommand, as_json: bool) -> Result<(), CliError> {
    match cmd {
        CertCommand::Add {
            subject,
            cert,
            scopes,
            expires_in,
        } => {
            check_subject(&subject)?;
            let scopes =
                Scopes::from_list(&scopes).map_err(|e| CliError::Usage(format!("--scope: {e}")))?;
            let identity = read_cert(&cert)?;
            let now = now_secs();
            if identity.not_after < now {
                return Err(CliError::Usage(format!(
                    "--cert {}: the certificate expired on {}",
                    cert.display(),
                    keycard_core::time::rfc3339(identity.not_after)
                )));
            }
            let expires_at = match expires_in {
                Some(d) => Some(now + super::key::positive("--expires-in", &d)?),
                None => None,
            };
            let fingerprint = identity.fingerprint_hex();
            let id = new_id("cert").map_err(|e| CliError::Other(e.to_string()))?;
            let new = NewCertBinding {
                id: id.clone(),
                subject: subject.clone(),
                lookup: master(settings)?
                    .keyed_hasher()
                    .hash(HashDomain::CertFingerprint, fingerprint.as_bytes()),
                fingerprint: fingerprint.clone(),
                scopes: scopes.as_str().to_owned(),
                created_at: now,
                expires_at,
            };
            let store = open_store(settings).await?;
            store.create_cert_binding(&new).await?;
            if as_json {
                return json(&serde_json::json!({
                    "id": id,
                    "subject": subject,
                    "fingerprint": fingerprint,
                    "scopes": scopes.to_vec(),
                    "expires_at": expires_at.map(keycard_core::time::rfc3339),
                    "cert_subject_dn": identity.subject_dn,
                    "cert_not_after": keycard_core::time::rfc3339(identity.not_after),
                }));
            }
            println!("Bound certificate {fingerprint} to {subject} ({id}).");
            println!("Certificate subject: {}", identity.subject_dn);
            println!(
                "Certificate valid until {}; binding expires: {}",
                keycard_core::time::rfc3339(identity.not_after),
                time_or(expires_at, "never")
            );
            if settings.mtls.client_ca.is_none() {
                println!(
                    "Note: no client CA is configured (server.tls.client_ca): keycard asks for no client certificate until there is one."
                );
            }
            Ok(())
        }
        CertCommand::List => {
            let store = open_store(settings).await?;
            let now = now_secs();
            let rows: Vec<Listed> = store
                .list_cert_bindings()
                .await?
                .into_iter()
                .map(|r| listed(r, now))
                .collect();
            if as_json {
                return json(&rows);
            }
            if rows.is_empty() {
                println!("No certificate bindings.");
                return Ok(());
            }
            println!(
                "{:<22} {:<16} {:<8} {:<64} SCOPES",
                "ID", "SUBJECT", "STATUS", "FINGERPRINT (SHA-256)"
            );
            for r in rows {
                println!(
                    "{:<22} {:<16} {:<8} {:<64} {}",
                    r.id,
                    r.subject,
                    r.status,
                    r.fingerprint,
                    r.scopes.join(" ")
                );
            }
            Ok(())
        }
        CertCommand::Revoke { id } => {
            let store = open_store(settings).await?;
            store.revoke_cert_binding(&id, now_secs()).await?;
            if as_json {
                return json(&serde_json::json!({"id": id, "revoked": true}));
            }
            println!("Revoked certificate binding {id}: refused everywhere within a second.");
            Ok(())
        }
    }
}
