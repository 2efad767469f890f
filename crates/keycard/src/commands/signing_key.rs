//! `keycard signing-key rotate` (the operation is `keycard_server::manage`'s).

use keycard_server::Settings;

use super::common::{CliError, manager};
use crate::cli::SigningKeyCommand;
use crate::output::json;

pub async fn run(
    settings: &Settings,
    cmd: SigningKeyCommand,
    as_json: bool,
) -> Result<(), CliError> {
    match cmd {
        SigningKeyCommand::Rotate => {
            let r = manager(settings).await?.rotate_signing_key().await?;
            if as_json {
                return json(&r);
            }
            println!("New signing key {} ({}).", r.kid, r.alg);
            if let (Some(p), Some(until)) = (&r.previous, &r.previous_published_until) {
                println!(
                    "The previous key {p} signs no more and stays in /.well-known/jwks.json until {until}."
                );
            }
            Ok(())
        }
    }
}
