//! The command line (SPEC §2). Parse here; resolve and act in `commands`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// keycard: authenticates every request to your API — by API key, OAuth 2.0 token, JWT,
/// Basic, Digest, HMAC signature or client certificate — and issues the tokens.
#[derive(Debug, Parser)]
#[command(name = "keycard", version, propagate_version = true)]
pub struct Cli {
    /// The config file (else $KEYCARD_CONFIG, else ./keycard.toml if present, else built-in
    /// defaults).
    #[arg(long, global = true, env = "KEYCARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Machine-readable output: one JSON object or array on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything the config describes.
    Serve,
    /// A demo: data in DIR, a built-in echo upstream, a working credential, a ready curl command.
    #[command(
        after_help = "Example:\n  cargo run --release -- quickstart\n  keycard quickstart --listen 127.0.0.1:9090 --dir /tmp/kc-demo"
    )]
    Quickstart {
        /// Where keycard listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo keeps its data (store, master key, audit log, config).
        #[arg(long, default_value = "keycard-demo")]
        dir: PathBuf,
    },
    /// API keys: create, list, revoke, rotate.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Users with passwords (HTTP Basic and Digest): add, passwd, disable, enable, list.
    #[command(subcommand)]
    User(UserCommand),
    /// keycard's own JWT signing keys.
    #[command(subcommand, name = "signing-key")]
    SigningKey(SigningKeyCommand),
    /// Read the audit trail (newest last).
    #[command(
        after_help = "Examples:\n  keycard audit --since 1h --outcome failure\n  keycard audit --subject billing --json"
    )]
    Audit(AuditArgs),
    /// A plain HTTP server that answers every request with the request it received, as JSON
    /// (the quickstart's upstream; handy in tests and benchmarks).
    #[command(hide = true)]
    EchoUpstream {
        /// Where it listens.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
    },
}

impl Command {
    /// Whether the command runs a server (logs at info by default).
    pub fn is_server(&self) -> bool {
        matches!(
            self,
            Command::Serve | Command::Quickstart { .. } | Command::EchoUpstream { .. }
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key. The key is printed once; keycard keeps only a keyed hash of it.
    #[command(
        after_help = "Examples:\n  keycard key create --subject billing --scope orders:read --expires-in 90d\n  keycard key create --subject ci --name github-actions --json"
    )]
    Create {
        /// The subject the key authenticates as (created as a service when new).
        #[arg(long)]
        subject: String,
        /// A scope requests made with the key hold (repeat for several).
        #[arg(long = "scope", value_name = "S")]
        scopes: Vec<String>,
        /// Lifetime, such as 30d or 12h (default: never expires).
        #[arg(long, value_name = "DUR")]
        expires_in: Option<String>,
        /// A label to recognise the key by.
        #[arg(long, value_name = "LABEL")]
        name: Option<String>,
    },
    /// List keys (never their values).
    List {
        /// Only this subject's keys.
        #[arg(long)]
        subject: Option<String>,
    },
    /// Revoke a key: every instance refuses it within a second.
    Revoke {
        /// The key's id (`key_…`).
        id: String,
    },
    /// Replace a key with a new one (same subject, scopes and lifetime).
    #[command(
        after_help = "Example:\n  keycard key rotate key_3kTMd9pQ2x7LmZ0a --grace 24h   # both keys work for a day"
    )]
    Rotate {
        /// The key's id.
        id: String,
        /// How long the old key keeps working (default 0s: refused at once).
        #[arg(long, value_name = "DUR", default_value = "0s")]
        grace: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Make a new current signing key (`tokens.algorithm`); the old one stays published in
    /// /.well-known/jwks.json until the tokens it signed have expired (`access_token_ttl`).
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user. The password is kept only as an argon2id hash.
    #[command(
        after_help = "Examples:\n  keycard user add alice --scope orders:read        # prompts for the password\n  printf '%s' \"$PW\" | keycard user add bob --password-stdin --digest"
    )]
    Add {
        /// The user name.
        name: String,
        /// Read the password from standard input (one trailing newline is dropped).
        #[arg(long)]
        password_stdin: bool,
        /// A scope the user's requests hold (repeat for several).
        #[arg(long = "scope", value_name = "S")]
        scopes: Vec<String>,
        /// Also allow HTTP Digest: stores the RFC 7616 hash, sealed with the master key
        /// (opt-in: that hash is password-equivalent).
        #[arg(long)]
        digest: bool,
    },
    /// Change a user's password (takes effect everywhere within a second).
    Passwd {
        /// The user name.
        name: String,
        /// Read the password from standard input (one trailing newline is dropped).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a subject: all its credentials are refused within a second.
    Disable {
        /// The user (or service) name.
        name: String,
    },
    /// Enable a disabled subject again.
    Enable {
        /// The user (or service) name.
        name: String,
    },
    /// List users (never their passwords).
    List,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only events this recent, such as 10m or 24h.
    #[arg(long, value_name = "DUR")]
    pub since: Option<String>,
    /// Only this subject's events.
    #[arg(long)]
    pub subject: Option<String>,
    /// Only this outcome.
    #[arg(long, value_parser = ["success", "failure", "throttled", "forbidden"])]
    pub outcome: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}
