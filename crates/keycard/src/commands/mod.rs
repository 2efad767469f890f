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
        Command::Completions { shell } => {
            // Written to memory first: clap_complete panics when its writer fails (a closed
            // pipe), and a failed write is an error here, not a panic.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "keycard", &mut script);
            write_stdout(&script, "the completion script")
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command())
                .render(&mut page)
                .map_err(|e| CliError::Other(format!("cannot make the manual page: {e}")))?;
            write_stdout(&page, "the manual page")
        }
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

/// The command line's definition (for completions and the manual page).
fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Writes `bytes` to standard output; a closed pipe or full disk is an error naming `what`.
fn write_stdout(bytes: &[u8], what: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Other(format!("cannot write {what}: {e}")))
}
