//! The `keycard` binary: one program that authenticates every request to your API.

mod cli;
mod commands;
mod echo;
mod output;

use std::process::ExitCode;

use clap::Parser;

// mimalloc: fewer cycles per allocation than glibc's malloc on the request path, and no
// arena growth under many threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_logging(cli: &cli::Cli) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = if cli.command.is_server() {
        "info"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_env("KEYCARD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
