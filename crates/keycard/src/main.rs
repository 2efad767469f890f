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
    // The access log (target `keycard::access`) is off unless KEYCARD_LOG turns it on.
    let default = if cli.command.is_server() {
        "info,keycard::access=off"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_env("KEYCARD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cli.log_format {
        cli::LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
        // `{"timestamp","level","target","message",…fields}` on one line.
        cli::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}
