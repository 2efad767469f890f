//! `keycard cert add|list|revoke` (the operations are `keycard_server::manage`'s).

use keycard_core::cert::CertIdentity;
use keycard_server::Settings;
use keycard_server::manage::NewCertRequest;

use super::common::{CliError, flag_names, manager};
use crate::cli::CertCommand;
use crate::output::json;

/// The certificate (first of the PEM file) and the file's text.
pub(crate) fn read_cert(path: &std::path::Path) -> Result<(CertIdentity, String), CliError> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("--cert {}: {e}", path.display())))?;
    let identity = keycard_server::manage::read_cert_pem("certificate", pem.as_bytes())
        .map_err(|e| CliError::Usage(format!("--cert {}: {e}", path.display())))?;
    Ok((identity, pem))
}

pub async fn run(settings: &Settings, cmd: CertCommand, as_json: bool) -> Result<(), CliError> {
    let m = manager(settings).await?;
    match cmd {
        CertCommand::Add {
            subject,
            cert,
            scopes,
            expires_in,
        } => {
            let (identity, cert_pem) = read_cert(&cert)?;
            let b = m
                .add_cert(NewCertRequest {
                    subject,
                    cert_pem,
                    scopes,
                    expires_in,
                })
                .await
                .map_err(flag_names)?;
            let not_after = keycard_core::time::rfc3339(identity.not_after);
            if as_json {
                let mut v = serde_json::to_value(&b).map_err(|e| CliError::Other(e.to_string()))?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("cert_subject_dn".into(), identity.subject_dn.into());
                    o.insert("cert_not_after".into(), not_after.into());
                }
                return json(&v);
            }
            println!(
                "Bound certificate {} to {} ({}).",
                b.fingerprint, b.subject, b.id
            );
            println!("Certificate subject: {}", identity.subject_dn);
            println!(
                "Certificate valid until {not_after}; binding expires: {}",
                b.life.expires_at.as_deref().unwrap_or("never")
            );
            if settings.mtls.client_ca.is_none() {
                println!(
                    "Note: no client CA is configured (server.tls.client_ca): keycard asks for no client certificate until there is one."
                );
            }
            Ok(())
        }
        CertCommand::List => {
            let rows = m.list_certs().await?;
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
                    r.life.status,
                    r.fingerprint,
                    r.scopes.join(" ")
                );
            }
            Ok(())
        }
        CertCommand::Revoke { id } => {
            m.revoke_cert(&id).await?;
            if as_json {
                return json(&serde_json::json!({"id": id, "revoked": true}));
            }
            println!("Revoked certificate binding {id}: refused everywhere within a second.");
            Ok(())
        }
    }
}
