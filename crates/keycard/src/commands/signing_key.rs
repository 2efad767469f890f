//! `keycard signing-key rotate`.

use keycard_server::own_keys::new_key_row;
use keycard_server::{Settings, now_secs};

use super::{CliError, master, open_store};
use crate::cli::SigningKeyCommand;
use crate::output::json;

/// Retired keys stay published this much longer than the tokens they signed (clock skew).
const PUBLISH_MARGIN_SECS: i64 = 60;

pub async fn run(
    settings: &Settings,
    cmd: SigningKeyCommand,
    as_json: bool,
) -> Result<(), CliError> {
    match cmd {
        SigningKeyCommand::Rotate => {
            let store = open_store(settings).await?;
            let sealer = master(settings)?.sealer();
            let now = now_secs();
            let before = store.published_signing_keys(now).await?;
            let previous = before
                .iter()
                .find(|k| k.retired_at.is_none())
                .map(|k| k.kid.clone());
            let row = new_key_row(settings.tokens.algorithm, &sealer, now)
                .map_err(|e| CliError::Other(e.to_string()))?;
            let ttl = i64::try_from(settings.tokens.access_token_ttl.as_secs()).unwrap_or(86_400);
            let publish_until = now + ttl + PUBLISH_MARGIN_SECS;
            store.add_signing_key(&row, publish_until, false).await?;
            if as_json {
                return json(&serde_json::json!({
                    "kid": row.kid,
                    "alg": row.alg,
                    "previous": previous,
                    "previous_published_until": previous.as_ref().map(|_| keycard_core::time::rfc3339(publish_until)),
                }));
            }
            println!("New signing key {} ({}).", row.kid, row.alg);
            if let Some(p) = previous {
                println!(
                    "The previous key {p} signs no more and stays in /.well-known/jwks.json until {}.",
                    keycard_core::time::rfc3339(publish_until)
                );
            }
            Ok(())
        }
    }
}
