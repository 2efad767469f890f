//! Acting on a parsed command line.

mod audit;
mod cert;
mod client;
pub(crate) mod common;
mod doctor;
mod hmac;
mod jwt;
mod key;
mod quickstart;
mod serve;
mod sign;
mod signing_key;
mod user;

pub use common::CliError;
use common::load_settings;

use crate::cli::{Cli, Command};

/// Runs the command, then writes the audit events of the management operations it ran.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let result = dispatch(cli).await;
    common::flush_journal().await;
    result
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let json = cli.json;
    match cli.command {
        Command::EchoUpstream { listen } => crate::echo::run_until_signal(listen).await,
        Command::Quickstart {
            listen,
            tls_listen,
            dir,
        } => quickstart::run(listen, tls_listen, &dir, json).await,
        Command::Serve => serve::serve(&load_settings(cli.config.as_deref())?).await,
        Command::Key(cmd) => key::run(&load_settings(cli.config.as_deref())?, cmd, json).await,
        Command::SigningKey(cmd) => {
            signing_key::run(&load_settings(cli.config.as_deref())?, cmd, json).await
        }
        Command::Sign(args) => sign::run(args, json),
        Command::Jwt(cmd) => jwt::run(cmd, json),
        Command::Hmac(cmd) => hmac::run(&load_settings(cli.config.as_deref())?, cmd, json).await,
        Command::Doctor => doctor::run(&load_settings(cli.config.as_deref())?, json).await,
        Command::Cert(cmd) => cert::run(&load_settings(cli.config.as_deref())?, cmd, json).await,
        Command::Client(cmd) => {
            client::run(&load_settings(cli.config.as_deref())?, cmd, json).await
        }
        Command::User(cmd) => user::run(&load_settings(cli.config.as_deref())?, cmd, json).await,
        Command::Audit(args) => {
            audit::run(&load_settings(cli.config.as_deref())?, args, json).await
        }
    }
}
