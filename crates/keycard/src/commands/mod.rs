//! Acting on a parsed command line.

mod audit;
mod backup;
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
use common::{find_settings, serve_settings, store_settings};

use crate::cli::{Cli, Command};

/// Runs the command, then writes the audit events of the management operations it ran.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let result = dispatch(cli).await;
    common::flush_journal().await;
    result
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let json = cli.json;
    let (config, data_dir) = (cli.config.as_deref(), cli.data_dir.as_deref());
    let store = || store_settings(config, data_dir);
    match cli.command {
        Command::EchoUpstream { listen } => crate::echo::run_until_signal(listen).await,
        Command::Quickstart {
            listen,
            tls_listen,
            dir,
        } => quickstart::run(listen, tls_listen, &dir, json).await,
        Command::Serve => serve::serve(&serve_settings(config, data_dir)?).await,
        Command::Key(cmd) => key::run(&store()?, cmd, json).await,
        Command::SigningKey(cmd) => signing_key::run(&store()?, cmd, json).await,
        Command::Sign(args) => sign::run(args, json),
        Command::Jwt(cmd) => jwt::run(cmd, json),
        Command::Hmac(cmd) => hmac::run(&store()?, cmd, json).await,
        Command::Doctor => doctor::run(find_settings(config, data_dir)?.as_ref(), json).await,
        Command::Cert(cmd) => cert::run(&store()?, cmd, json).await,
        Command::Client(cmd) => client::run(&store()?, cmd, json).await,
        Command::User(cmd) => user::run(&store()?, cmd, json).await,
        Command::Backup { file } => backup::backup(&store()?, &file, json).await,
        Command::Restore { file } => backup::restore(&store()?, &file, json),
        Command::Audit(args) => audit::run(&store()?, args, json).await,
    }
}
