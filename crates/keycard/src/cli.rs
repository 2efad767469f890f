//! The command line (reference §2). Parse here; resolve and act in `commands`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// keycard: authenticates every request to your API — by API key, OAuth 2.0 token, JWT,
/// Basic, Digest, HMAC signature or client certificate — and issues the tokens.
#[derive(Debug, Parser)]
#[command(name = "keycard", version = env!("KEYCARD_VERSION"), propagate_version = true)]
pub struct Cli {
    /// The config file (else $KEYCARD_CONFIG, else ./keycard.toml if present). Without one,
    /// `serve` runs on built-in defaults and commands that manage a store refuse.
    #[arg(long, global = true, env = "KEYCARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// With no config file: the built-in defaults, with the store, master key and audit
    /// file in DIR (`keycard serve` without a config keeps them in ./keycard-data).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Machine-readable output: one JSON object or array on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr: `text`, or `json` (one object per line, for log shippers).
    /// Levels and targets come from $KEYCARD_LOG (e.g. `info,keycard::access=info`).
    #[arg(
        long,
        global = true,
        env = "KEYCARD_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything the config describes.
    Serve,
    /// A demo: data in DIR, a built-in echo upstream, a working credential, a ready curl command.
    #[command(
        after_help = "Example:\n  cargo run --release -- quickstart\n  keycard quickstart --listen 127.0.0.1:9090 --tls-listen 127.0.0.1:9443 --dir /tmp/kc-demo"
    )]
    Quickstart {
        /// Where keycard listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the same keycard serves HTTPS, for client certificates (mtls).
        #[arg(long, default_value = "127.0.0.1:8443")]
        tls_listen: SocketAddr,
        /// Where the demo keeps its data (store, master key, audit log, config).
        #[arg(long, default_value = "keycard-demo")]
        dir: PathBuf,
    },
    /// API keys: create, list, revoke, rotate.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Users with passwords (HTTP Basic and Digest): add, passwd, disable, enable, list,
    /// totp, logout, grants.
    #[command(subcommand)]
    User(UserCommand),
    /// HMAC request-signing keys (RFC 9421): create, list, revoke.
    #[command(subcommand)]
    Hmac(HmacCommand),
    /// Client certificates bound to subjects (the mtls method): add, list, revoke.
    #[command(subcommand)]
    Cert(CertCommand),
    /// OAuth 2.0 clients of keycard's authorization server: create, list, revoke.
    #[command(subcommand)]
    Client(ClientCommand),
    /// keycard's own JWT signing keys.
    #[command(subcommand, name = "signing-key")]
    SigningKey(SigningKeyCommand),
    /// Check the config and the store against the practices that keep APIs safe: each
    /// finding with its severity and a fix. Exit code 1 when anything is critical.
    #[command(after_help = "Examples:\n  keycard doctor\n  keycard doctor --json")]
    Doctor,
    /// Write a consistent snapshot of the SQLite store to FILE (a new file, 0600) while
    /// keycard serves. The master key is not in it: keep the key file apart, and with it.
    /// PostgreSQL: use pg_dump.
    #[command(
        after_help = "Example:\n  keycard --config /etc/keycard/keycard.toml backup /var/backups/keycard-$(date +%F).db"
    )]
    Backup {
        /// The backup file to write (must not exist).
        file: PathBuf,
    },
    /// Put a backup in place of the SQLite store of a stopped deployment. The backup must be
    /// sealed with this deployment's master key; the store it replaces is kept beside it
    /// (`….before-restore-TIME`).
    #[command(
        after_help = "Example:\n  keycard --config /etc/keycard/keycard.toml restore /var/backups/keycard-2026-12-01.db"
    )]
    Restore {
        /// The backup file (made by keycard backup).
        file: PathBuf,
    },
    /// Read the audit trail (newest last).
    #[command(
        after_help = "Examples:\n  keycard audit --since 1h --outcome failure\n  keycard audit --subject billing --json"
    )]
    Audit(AuditArgs),
    /// Print the headers that sign a request with an HMAC key (RFC 9421, hmac-sha256):
    /// Content-Digest (with a body), Signature-Input and Signature, with a fresh created
    /// and nonce, ready for `curl -H`.
    #[command(
        after_help = "Examples:\n  printf '%s' \"$SECRET\" | keycard sign --key-id hk_3kTMd9 --secret-stdin https://api.example.com/orders?page=2\n  keycard sign --key-id hk_3kTMd9 --secret-file key.b64 --method POST --body-file order.json \\\n      --header 'Content-Type: application/json' https://api.example.com/orders"
    )]
    Sign(SignArgs),
    /// Mint a JWT with a private key, to try a `[[jwt.issuers]]` setup (the quickstart's
    /// demo issuer, or a test key of your own).
    #[command(subcommand)]
    Jwt(JwtCommand),
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    #[command(
        after_help = "Examples:\n  keycard completions bash > /etc/bash_completion.d/keycard\n  keycard completions zsh > \"${fpath[1]}/_keycard\"\n  keycard completions fish > ~/.config/fish/completions/keycard.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `keycard man > /usr/share/man/man1/keycard.1`.
    Man,
    /// A plain HTTP server that answers every request with the request it received, as JSON
    /// (the quickstart's upstream; handy in tests and benchmarks).
    #[command(hide = true)]
    EchoUpstream {
        /// Where it listens.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
    },
}

/// `keycard jwt …`.
#[derive(Debug, Subcommand)]
pub enum JwtCommand {
    /// Print a signed JWT (compact form). The key's algorithm decides `alg` (ES256 for P-256,
    /// EdDSA for Ed25519, RS256 for RSA); `kid` is the key's RFC 7638 thumbprint unless given.
    #[command(
        after_help = "Example:\n  keycard jwt mint --key demo-issuer-key.pem --issuer https://demo-issuer.keycard.test/ \\\n      --audience demo-api --subject demo-user --scope demo:read"
    )]
    Mint {
        /// The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
        #[arg(long, value_name = "FILE.pem")]
        key: PathBuf,
        /// `iss`.
        #[arg(long)]
        issuer: String,
        /// `aud` (repeat for several).
        #[arg(long = "audience", required = true)]
        audiences: Vec<String>,
        /// `sub`.
        #[arg(long)]
        subject: String,
        /// A scope for the `scope` claim (repeats).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime: `exp` is now plus this.
        #[arg(long, default_value = "10m", value_name = "DUR")]
        expires_in: String,
        /// `kid` in the header (default: the RFC 7638 thumbprint of the public key).
        #[arg(long)]
        kid: Option<String>,
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
    /// Disable a subject: every principal with that name is refused within a second,
    /// whatever proved it (a name only a certificate rule or an external issuer gives too).
    Disable {
        /// The subject name (a user, a service, a SPIFFE ID, an issuer's `sub`).
        name: String,
    },
    /// Enable a disabled subject again.
    Enable {
        /// The user (or service) name.
        name: String,
    },
    /// List users (never their passwords).
    List,
    /// Sign a user out everywhere: end every login session and revoke every grant (the
    /// applications' refresh tokens and access tokens stop within a second).
    Logout {
        /// The user name.
        name: String,
    },
    /// List a user's grants (what each application was given at sign-in), or revoke them.
    #[command(
        after_help = "Examples:\n  keycard user grants alice\n  keycard user grants alice --revoke            # every grant\n  keycard user grants alice --revoke gr_2Xy…   # one grant"
    )]
    Grants {
        /// The user name.
        name: String,
        /// Revoke the grant with this id, or every grant when no id follows.
        #[arg(long, value_name = "ID", num_args = 0..=1, default_missing_value = "")]
        revoke: Option<String>,
    },
    /// Enrol a user in TOTP (RFC 6238): prints the otpauth:// URI and the base32 secret for
    /// an authenticator app; the login page then asks for a code. Replaces an earlier seed.
    Totp {
        /// The user name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client. A confidential client's secret is printed once; keycard keeps only
    /// a keyed hash of it. Public clients (apps that cannot keep a secret) must use PKCE,
    /// as every client does.
    #[command(after_help = "Examples:
  keycard client create billing-worker --grant client_credentials --scope orders:read
  keycard client create web --redirect-uri https://app.example.com/callback --scope openid --scope orders:read
  keycard client create cli --public --redirect-uri http://127.0.0.1/callback --scope openid")]
    Create {
        /// The client_id.
        client_id: String,
        /// A public client: no secret (native and browser apps).
        #[arg(long)]
        public: bool,
        /// A redirect URI, matched exactly (repeat for several); for http://127.0.0.1 and
        /// `http://[::1]` on any port matches (RFC 8252).
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// A grant type it may use: authorization_code, refresh_token, client_credentials
        /// (repeat; default: authorization_code and refresh_token with a redirect URI,
        /// else client_credentials).
        #[arg(long = "grant", value_name = "G")]
        grants: Vec<String>,
        /// A scope it may ask for (repeat for several).
        #[arg(long = "scope", value_name = "S")]
        scopes: Vec<String>,
        /// How it authenticates at the token endpoint.
        #[arg(long, value_name = "METHOD", value_parser = ["client_secret_basic", "client_secret_post", "tls_client_auth", "self_signed_tls_client_auth"])]
        auth: Option<String>,
        /// The client certificate (tls_client_auth / self_signed_tls_client_auth).
        #[arg(long, value_name = "FILE.pem")]
        cert: Option<std::path::PathBuf>,
        /// The certificate subject DN (tls_client_auth).
        #[arg(long, value_name = "DN")]
        tls_subject_dn: Option<String>,
        /// A first-party client: users are not asked for consent.
        #[arg(long)]
        first_party: bool,
    },
    /// List clients (never their secrets).
    List,
    /// Revoke a client: its refresh tokens stop at once and its access tokens within a second.
    Revoke {
        /// The client_id.
        client_id: String,
    },
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

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The key's id (the RFC 9421 `keyid`, `key_id` of `hmac create`).
    #[arg(long, value_name = "ID")]
    pub key_id: String,
    /// Read the secret (standard base64, as `hmac create` prints it) from standard input.
    #[arg(
        long,
        conflicts_with_all = ["secret_file", "private_key"],
        required_unless_present_any = ["secret_file", "private_key"]
    )]
    pub secret_stdin: bool,
    /// Read the secret from a file.
    #[arg(long, value_name = "F", conflicts_with = "private_key")]
    pub secret_file: Option<std::path::PathBuf>,
    /// Sign with an Ed25519 private key (PEM, PKCS#8) whose public key was registered with
    /// `hmac create --public-key` (alg="ed25519").
    #[arg(long, value_name = "FILE.pem")]
    pub private_key: Option<std::path::PathBuf>,
    /// The request method (default GET, or POST with --body-file).
    #[arg(long, value_name = "M")]
    pub method: Option<String>,
    /// A header the request carries that the signature should cover (repeat).
    #[arg(long = "header", value_name = "N: v")]
    pub headers: Vec<String>,
    /// The request body: signed through its Content-Digest (sha-256).
    #[arg(long, value_name = "F")]
    pub body_file: Option<std::path::PathBuf>,
    /// The URL the request goes to.
    pub url: String,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Bind a client certificate (by its SHA-256 fingerprint) to a subject. The certificate
    /// must still chain to the client CA (server.tls.client_ca) to be accepted.
    #[command(
        after_help = "Example:\n  keycard cert add --subject billing --cert billing.pem --scope orders:read --json"
    )]
    Add {
        /// The subject requests with this certificate authenticate as (created as a service
        /// when new).
        #[arg(long)]
        subject: String,
        /// The certificate, PEM (the first certificate in the file is bound).
        #[arg(long, value_name = "FILE.pem")]
        cert: std::path::PathBuf,
        /// A scope requests with the certificate hold (repeat for several).
        #[arg(long = "scope", value_name = "S")]
        scopes: Vec<String>,
        /// Lifetime of the binding, such as 90d (default: until revoked; the certificate's
        /// own expiry always applies).
        #[arg(long, value_name = "DUR")]
        expires_in: Option<String>,
    },
    /// List bindings.
    List,
    /// Revoke a binding: refused everywhere within a second.
    Revoke {
        /// The binding's id (`cert_…`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum HmacCommand {
    /// Create a key: a 256-bit secret, printed once (standard base64), sealed at rest with
    /// the master key. Its `key_id` is the RFC 9421 `keyid` clients put in Signature-Input.
    #[command(
        after_help = "Example:\n  keycard hmac create --subject billing --scope orders:write --json"
    )]
    Create {
        /// The subject the key authenticates as (created as a service when new).
        #[arg(long)]
        subject: String,
        /// A scope requests signed with the key hold (repeat for several).
        #[arg(long = "scope", value_name = "S")]
        scopes: Vec<String>,
        /// Lifetime, such as 30d or 12h (default: never expires).
        #[arg(long, value_name = "DUR")]
        expires_in: Option<String>,
        /// Register an Ed25519 public key (PEM) instead of making a shared secret: the
        /// client signs with its private key (RFC 9421 `ed25519`) and keycard holds no secret.
        #[arg(long, value_name = "FILE.pem")]
        public_key: Option<std::path::PathBuf>,
    },
    /// List keys (never their secrets).
    List {
        /// Only this subject's keys.
        #[arg(long)]
        subject: Option<String>,
    },
    /// Revoke a key (by its id or its key_id).
    Revoke {
        /// The key's id (`hmac_…`) or key_id (`hk_…`).
        id: String,
    },
}
