//! `keycard client create|list|revoke` (the operations are `keycard_server::manage`'s).

use keycard_server::Settings;
use keycard_server::manage::NewClientRequest;

use super::common::{CliError, flag_names, manager};
use crate::cli::ClientCommand;
use crate::output::json;

pub async fn run(settings: &Settings, cmd: ClientCommand, as_json: bool) -> Result<(), CliError> {
    let m = manager(settings).await?;
    match cmd {
        ClientCommand::Create {
            client_id,
            public,
            redirect_uris,
            grants,
            scopes,
            auth,
            cert,
            tls_subject_dn,
            first_party,
        } => {
            let cert_pem = match &cert {
                Some(path) => Some(super::cert::read_cert(path)?.1),
                None => None,
            };
            let created = m
                .create_client(NewClientRequest {
                    client_id,
                    public,
                    redirect_uris,
                    grants,
                    scopes,
                    auth,
                    cert_pem,
                    tls_subject_dn,
                    first_party,
                })
                .await
                .map_err(flag_names)?;
            if as_json {
                return json(&created);
            }
            let c = &created.client;
            println!("Created client {} ({}).", c.client_id, c.auth);
            if let Some(s) = &created.client_secret {
                println!("client_secret: {s}");
                println!("Keep it now: keycard stores only a keyed hash and cannot show it again.");
            }
            println!("Token endpoint: {}/oauth2/token", settings.public_url);
            Ok(())
        }
        ClientCommand::List => {
            let clients = m.list_clients().await?;
            if as_json {
                return json(&clients);
            }
            if clients.is_empty() {
                println!("No clients.");
                return Ok(());
            }
            println!(
                "{:<24} {:<8} {:<20} {:<44} SCOPES",
                "CLIENT_ID", "STATUS", "AUTH", "GRANTS"
            );
            for c in clients {
                println!(
                    "{:<24} {:<8} {:<20} {:<44} {}",
                    c.client_id,
                    c.status,
                    c.auth,
                    c.grants.join(","),
                    c.scopes.join(" ")
                );
            }
            Ok(())
        }
        ClientCommand::Revoke { client_id } => {
            m.revoke_client(&client_id).await?;
            if as_json {
                return json(&serde_json::json!({"client_id": client_id, "revoked": true}));
            }
            println!(
                "Revoked client {client_id}: its tokens are refused everywhere within a second."
            );
            Ok(())
        }
    }
}
