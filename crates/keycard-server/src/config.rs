//! Configuration (reference §3): the TOML file parses into `deny_unknown_fields` structs, then
//! validates into [`Settings`], the form the program uses. Every error names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;
use keycard_core::digest::Algorithm;
use keycard_core::route::RoutePolicy;
use keycard_core::{Method, MethodSet, Rate, Scopes, parse_duration, parse_rate};
use serde::Deserialize;

/// Why a configuration was refused. The message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file (or `<built-in defaults>`).
        path: String,
        /// The parser's message, with line and key.
        message: String,
    },
    /// A value that parsed but is not acceptable.
    #[error("config file {path}: `{key}`: {message}")]
    Invalid {
        /// The file (or `<built-in defaults>`).
        path: String,
        /// The key, such as `routes[1].upstream`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    secrets: RawSecrets,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    digest: RawDigest,
    #[serde(default)]
    tokens: RawTokens,
    #[serde(default)]
    hmac: RawHmac,
    #[serde(default)]
    jwt: RawJwt,
    #[serde(default)]
    mtls: RawMtls,
    #[serde(default)]
    forward_auth: RawForwardAuth,
    #[serde(default)]
    oauth: RawOAuth,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth {
    issuer_host: Option<String>,
    cors_origins: Option<Vec<String>>,
    refresh_idle_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwardAuth {
    uri_header: Option<String>,
    method_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
    client_ca: Option<String>,
    client_auth: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMtls {
    client_ca: Option<String>,
    forwarded_cert_header: Option<String>,
    #[serde(default)]
    forwarded_cert_from: Vec<String>,
    #[serde(default)]
    rules: Vec<RawMtlsRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMtlsRule {
    ca: Option<String>,
    san_uri_prefix: Option<String>,
    san_dns: Option<String>,
    cn: Option<String>,
    subject: String,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    metrics_listen: Option<String>,
    public_url: Option<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    realm: Option<String>,
    upstream_timeout: Option<String>,
    tls: Option<RawTls>,
    allow_underscore_headers: Option<bool>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    first_request_timeout: Option<String>,
    idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    redis_url: Option<String>,
    failed_auth: Option<String>,
    account_failed_auth: Option<String>,
    rate_limit_fail_open: Option<bool>,
    redis_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDigest {
    realm: Option<String>,
    algorithms: Option<Vec<String>>,
    nonce_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHmac {
    max_skew: Option<String>,
    required_components: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    algorithm: Option<String>,
    access_token_ttl: Option<String>,
    refresh_token_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    #[serde(default)]
    issuers: Vec<RawIssuer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    jwks_url: Option<String>,
    jwks_file: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    leeway: Option<String>,
    subject_claim: Option<String>,
    scopes_claim: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    master_key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: String,
    upstream: Option<String>,
    methods: Option<Vec<String>>,
    #[serde(default)]
    scopes: Vec<String>,
    rate_limit: Option<String>,
    rate_limit_burst: Option<u32>,
    #[serde(default)]
    public: bool,
    upstream_timeout: Option<String>,
    #[serde(default)]
    allow_encoded_slash: bool,
}

/// A database or Redis URL. It may carry a password (`postgres://user:pw@host/db`), so its
/// `Debug` shows it with the password replaced.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl(String);

impl ServiceUrl {
    /// The URL, password included (to connect with; never to log).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("redacted"));
                write!(f, "{:?}", u.as_str())
            }
            Ok(_) => write!(f, "{:?}", self.0),
            Err(_) => f.write_str("\"[unparsable URL]\""),
        }
    }
}

/// `server.tls`: keycard terminates TLS itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to; absent: no client
    /// certificate is asked for.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required to complete the handshake.
    pub client_auth: ClientAuth,
}

/// `server.tls.client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Asked for; a client without one still connects (other methods then apply).
    Optional,
    /// A client without a certificate cannot complete the handshake.
    Required,
}

/// `[mtls]`: client certificates as identities.
#[derive(Debug, Clone, Default)]
pub struct MtlsSettings {
    /// The CA client certificates are verified against (`mtls.client_ca`, else
    /// `server.tls.client_ca`); forwarded certificates too.
    pub client_ca: Option<PathBuf>,
    /// `[[mtls.rules]]`, in order: the first that matches names the subject.
    pub rules: Vec<MtlsRule>,
    /// `mtls.forwarded_cert_header` and `mtls.forwarded_cert_from`: the one header a
    /// TLS-terminating proxy puts the client certificate in, and the proxies believed;
    /// `None`: forwarded certificates are off.
    pub forwarded: Option<ForwardedCerts>,
}

/// One `[[mtls.rules]]` entry.
#[derive(Debug, Clone)]
pub struct MtlsRule {
    /// What it matches and the subject it names.
    pub rule: keycard_core::cert::CertRule,
    /// `ca`: the trust bundle whose certificates it may map (else any that chains to
    /// `client_ca`).
    pub ca: Option<PathBuf>,
}

/// Where forwarded client certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedCerts {
    /// The one header read.
    pub header: ForwardedCertHeader,
    /// The peers it is read from (a connection from anywhere else: the header is ignored).
    pub from: Vec<IpNet>,
}

/// `mtls.forwarded_cert_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedCertHeader {
    /// `X-SSL-Client-Cert`: nginx's `$ssl_client_escaped_cert` (URL-encoded PEM).
    SslClientCert,
    /// `X-Forwarded-Client-Cert`: Envoy's XFCC (`Cert="…"` / `Chain="…"`, URL-encoded PEM).
    ForwardedClientCert,
}

impl ForwardedCertHeader {
    /// The value `mtls.forwarded_cert_header` takes (also the header's name).
    pub const fn as_str(self) -> &'static str {
        match self {
            ForwardedCertHeader::SslClientCert => "x-ssl-client-cert",
            ForwardedCertHeader::ForwardedClientCert => "x-forwarded-client-cert",
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The folder relative paths were resolved against.
    pub base_dir: PathBuf,
    /// `server.listen`.
    pub listen: SocketAddr,
    /// `server.metrics_listen`: a plain-HTTP listener of its own serving
    /// `/_keycard/metrics` (every reason code) and `/_keycard/health`, nothing else.
    pub metrics_listen: Option<SocketAddr>,
    /// `server.public_url`, without a trailing slash.
    pub public_url: String,
    /// `server.trusted_proxies`.
    pub trusted_proxies: Vec<IpNet>,
    /// `server.realm`: the realm of `Bearer` and `Basic` challenges.
    pub realm: String,
    /// `store.url`, with a relative SQLite path resolved.
    pub store_url: ServiceUrl,
    /// `secrets.master_key_file`, resolved.
    pub master_key_file: PathBuf,
    /// `audit.file`.
    pub audit: AuditTarget,
    /// `routes`, in configured order.
    pub routes: Vec<RouteSettings>,
    /// `limits.failed_auth`: failed attempts allowed per client IP (and per subject and IP);
    /// `None` when set to `"off"` (`keycard doctor` flags it).
    pub failed_auth: Option<Rate>,
    /// `limits.account_failed_auth`: failed passwords and one-time codes allowed per
    /// account, from any address, before the account must wait. `None` when `"off"`.
    pub account_failed_auth: Option<Rate>,
    /// `[digest]`.
    pub digest: DigestSettings,
    /// `[hmac]`.
    pub hmac: HmacSettings,
    /// `[[jwt.issuers]]`: external issuers whose JWTs the `jwt` method accepts.
    pub jwt_issuers: Vec<JwtIssuerSettings>,
    /// `[tokens]`: keycard's own tokens.
    pub tokens: TokenSettings,
    /// `server.tls`; `None`: plain HTTP.
    pub tls: Option<TlsSettings>,
    /// `[mtls]`.
    pub mtls: MtlsSettings,
    /// `limits.redis_url`: shared counters and replay caches; `None`: in-process.
    pub redis_url: Option<ServiceUrl>,
    /// `limits.rate_limit_fail_open`: when Redis cannot be asked, let rate-limited routes
    /// through (logged) instead of answering 503. Replay checks always fail closed.
    pub rate_limit_fail_open: bool,
    /// `limits.redis_prefix`: put before every Redis key and channel keycard uses, so that
    /// several deployments can share one Redis (default `keycard:`).
    pub redis_prefix: String,
    /// `server.allow_underscore_headers`: forward header names with `_` (dropped by
    /// default, as nginx does: CGI-style upstreams read `X_Foo` and `X-Foo` as one).
    pub allow_underscore_headers: bool,
    /// `server.max_connections*`, `server.first_request_timeout`, `server.idle_timeout`.
    pub connections: ConnectionLimits,
    /// `[forward_auth]`.
    pub forward_auth: ForwardAuthSettings,
    /// `[oauth]`: the authorization server's own settings.
    pub oauth: OAuthSettings,
}

/// `[oauth]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthSettings {
    /// `issuer_host`: the one `Host` (lowercase, with a port when not the default) the
    /// login pages and `/oauth2/*` are served on; `None`: every host.
    pub issuer_host: Option<String>,
    /// `cors_origins`: the exact origins (`scheme://host[:port]`) whose browser scripts may
    /// call the token, userinfo, revocation and JWKS endpoints. Empty: no CORS.
    pub cors_origins: Vec<String>,
    /// `refresh_idle_ttl` (default 14d): a refresh token unused this long has expired.
    pub refresh_idle_ttl: Duration,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        Self {
            issuer_host: None,
            cors_origins: Vec::new(),
            refresh_idle_ttl: Duration::from_secs(14 * 86_400),
        }
    }
}

/// `[hmac]`: RFC 9421 request signatures.
#[derive(Debug, Clone)]
pub struct HmacSettings {
    /// `max_skew` (default 60s): how far `created` may be from now, either way; signatures
    /// are remembered against replay for twice that.
    pub max_skew: Duration,
    /// `required_components` (default `@method @authority @path @query content-digest`;
    /// `@query` only when the URL has one, `content-digest` only with a body).
    pub required_components: Vec<String>,
}

/// `[tokens]`.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `algorithm` of new signing keys (ES256 default, EdDSA, RS256).
    pub algorithm: keycard_core::jwt::Alg,
    /// `access_token_ttl` (default 10m): also how long a retired key stays published.
    pub access_token_ttl: Duration,
    /// `refresh_token_ttl` (default 30d).
    pub refresh_token_ttl: Duration,
}

/// One `[[jwt.issuers]]` entry.
#[derive(Debug, Clone)]
pub struct JwtIssuerSettings {
    /// `issuer`: the `iss` tokens must carry.
    pub issuer: String,
    /// Where its keys come from.
    pub jwks: JwksSource,
    /// `audiences`: `aud` must hold one of them.
    pub audiences: Vec<String>,
    /// `leeway` for `exp`, `nbf`, `iat` (default 30 s).
    pub leeway: Duration,
    /// `subject_claim` (default `sub`).
    pub subject_claim: String,
    /// `scopes_claim` (default `scope`, else `scp`).
    pub scopes_claim: Option<String>,
}

/// `jwks_file` or `jwks_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A local JWKS file, read at start.
    File(PathBuf),
    /// A JWKS URL, fetched and cached.
    Url(Uri),
}

/// `[digest]`: HTTP Digest (RFC 7616).
#[derive(Debug, Clone)]
pub struct DigestSettings {
    /// `digest.realm`: part of every stored Digest hash (changing it needs new passwords).
    pub realm: String,
    /// `digest.algorithms`, SHA-256 first when listed: one challenge each.
    pub algorithms: Vec<Algorithm>,
    /// `digest.nonce_ttl`.
    pub nonce_ttl: Duration,
}

/// Where audit events go besides the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// `"-"`: standard output.
    Stdout,
    /// A JSON-lines file, appended to.
    File(PathBuf),
}

/// One validated route.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// What it asks of a request.
    pub policy: RoutePolicy,
    /// Where the gateway forwards it (none: forward-auth only).
    pub upstream: Option<Upstream>,
    /// How long to wait for the upstream's response headers.
    pub upstream_timeout: Duration,
    /// `allow_encoded_slash`: take paths with `%2F` (when the decoded path would choose
    /// this same route).
    pub allow_encoded_slash: bool,
}

/// `[forward_auth]`: which header of the proxy's carries each part of the original
/// request. One name each, never a fallback: a request with the other name too is refused.
#[derive(Debug, Clone)]
pub struct ForwardAuthSettings {
    /// `forward_auth.uri_header`: `X-Forwarded-Uri` (Traefik, Caddy; the default) or
    /// `X-Original-URI` (nginx `auth_request`).
    pub uri_header: http::HeaderName,
    /// `forward_auth.method_header`: `X-Forwarded-Method` (the default) or
    /// `X-Original-Method`.
    pub method_header: http::HeaderName,
}

/// The two names a proxy may give the original request-target.
pub const URI_HEADERS: [&str; 2] = ["x-forwarded-uri", "x-original-uri"];
/// The two names a proxy may give the original method.
pub const METHOD_HEADERS: [&str; 2] = ["x-forwarded-method", "x-original-method"];

impl Default for ForwardAuthSettings {
    fn default() -> Self {
        Self {
            uri_header: http::HeaderName::from_static(URI_HEADERS[0]),
            method_header: http::HeaderName::from_static(METHOD_HEADERS[0]),
        }
    }
}

/// What a connection may hold (`server.max_connections*`, `server.*_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// `server.max_connections`: open client connections in all; beyond, new ones are
    /// closed at once.
    pub max: usize,
    /// `server.max_connections_per_client`: open connections from one address (a
    /// trusted proxy is not counted).
    pub per_client: usize,
    /// `server.first_request_timeout`: from accept to the first complete request head
    /// (the TLS handshake included).
    pub first_request: Duration,
    /// `server.idle_timeout`: a connection with no request in flight for this long is
    /// closed.
    pub idle: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max: 10_000,
            per_client: 256,
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(75),
        }
    }
}

/// An upstream base URL, split for fast request building.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// `host:port`.
    pub authority: http::uri::Authority,
    /// A path that replaces the route prefix (nginx `proxy_pass` with a URI); empty: the
    /// request path is forwarded as it is.
    pub base_path: String,
    /// The `Host` the upstream receives: its host, and the port unless the scheme's default
    /// (what nginx sends as `$proxy_host`). Built once, cloned per request.
    pub host: http::HeaderValue,
}

const DEFAULTS: &str = "<built-in defaults>";

impl Settings {
    /// Loads `path`, resolving relative paths against its folder.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::from_toml(&text, &base, &path.display().to_string())
    }

    /// The built-in defaults, with relative paths against `base_dir`.
    pub fn defaults(base_dir: &Path) -> Result<Settings, ConfigError> {
        Self::from_toml("", base_dir, DEFAULTS)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, base_dir: &Path, origin: &str) -> Result<Settings, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Validator { origin, base_dir }.validate(raw)
    }
}

struct Validator<'a> {
    origin: &'a str,
    base_dir: &'a Path,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => parse_duration(v).map_err(|e| self.err(key, e.to_string())),
        }
    }

    fn validate(&self, raw: RawConfig) -> Result<Settings, ConfigError> {
        let connections = self.connections(&raw.server)?;
        let forward_auth = self.forward_auth(&raw.forward_auth)?;
        let redis_url = match raw.limits.redis_url {
            None => None,
            Some(u) => {
                let parsed = url::Url::parse(&u).map_err(|_| {
                    self.err(
                        "limits.redis_url",
                        "not a URL such as redis://127.0.0.1:6379/0",
                    )
                })?;
                if parsed.scheme() != "redis" {
                    return Err(self.err("limits.redis_url", "must be a redis:// URL (TLS to Redis is not supported: keep it on a private network)"));
                }
                Some(ServiceUrl(u))
            }
        };
        let rate_limit_fail_open = raw.limits.rate_limit_fail_open.unwrap_or(false);
        let redis_prefix = raw.limits.redis_prefix.unwrap_or_else(|| "keycard:".into());
        if redis_prefix.is_empty()
            || redis_prefix.len() > 64
            || redis_prefix.contains(char::is_whitespace)
        {
            return Err(self.err(
                "limits.redis_prefix",
                "1 to 64 characters, no spaces, such as \"keycard:\"",
            ));
        }
        let metrics_listen = match raw.server.metrics_listen.as_deref() {
            Some(t) => Some(t.parse::<SocketAddr>().map_err(|_| {
                self.err(
                    "server.metrics_listen",
                    format!("`{t}` is not an address such as 127.0.0.1:9100"),
                )
            })?),
            None => None,
        };
        let listen_text = raw.server.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            self.err(
                "server.listen",
                format!("`{listen_text}` is not an address such as 127.0.0.1:8080"),
            )
        })?;
        let public_url = match raw.server.public_url {
            Some(u) => {
                let uri: Uri = u
                    .parse()
                    .map_err(|_| self.err("server.public_url", "not a URL"))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none()
                {
                    return Err(self.err(
                        "server.public_url",
                        "must be an absolute http:// or https:// URL",
                    ));
                }
                u.trim_end_matches('/').to_owned()
            }
            None if raw.server.tls.is_some() => format!("https://{listen}"),
            None => format!("http://{listen}"),
        };
        let trusted_proxies =
            self.networks("server.trusted_proxies", &raw.server.trusted_proxies)?;
        let realm = self.realm("server.realm", raw.server.realm)?;
        let tls = match raw.server.tls {
            Some(t) => Some(self.tls(t)?),
            None => None,
        };
        let mtls = self.mtls(raw.mtls, tls.as_ref())?;
        let failed_auth = match raw.limits.failed_auth.as_deref().unwrap_or("10/min") {
            "off" => None,
            rate => Some(
                parse_rate(rate)
                    .map_err(|e| self.err("limits.failed_auth", format!("{e}, or \"off\"")))?,
            ),
        };
        let account_failed_auth =
            match raw
                .limits
                .account_failed_auth
                .as_deref()
                .unwrap_or("10/15m")
            {
                "off" => None,
                rate => Some(parse_rate(rate).map_err(|e| {
                    self.err("limits.account_failed_auth", format!("{e}, or \"off\""))
                })?),
            };
        let oauth = self.oauth(raw.oauth)?;
        if let Some(host) = &oauth.issuer_host {
            let issuer = public_url
                .parse::<Uri>()
                .ok()
                .and_then(|u| u.authority().map(|a| a.as_str().to_ascii_lowercase()));
            if issuer.as_deref() != Some(host.as_str()) {
                return Err(self.err(
                    "oauth.issuer_host",
                    format!(
                        "`{host}` is not the host of server.public_url (`{public_url}`): the issuer's URL is where its pages are, so set public_url to https://{host}"
                    ),
                ));
            }
        }
        let digest = self.digest(raw.digest)?;
        let tokens = self.tokens(raw.tokens)?;
        let hmac = self.hmac(raw.hmac)?;
        let mut jwt_issuers = Vec::new();
        for (i, r) in raw.jwt.issuers.into_iter().enumerate() {
            let issuer = self.jwt_issuer(i, r)?;
            if jwt_issuers
                .iter()
                .any(|o: &JwtIssuerSettings| o.issuer == issuer.issuer)
            {
                return Err(self.err(format!("jwt.issuers[{i}].issuer"), "configured twice"));
            }
            if issuer.issuer.trim_end_matches('/') == public_url.trim_end_matches('/') {
                return Err(self.err(
                    format!("jwt.issuers[{i}].issuer"),
                    "is keycard's own issuer (server.public_url): its tokens are the oauth2 method, verified with its own keys",
                ));
            }
            jwt_issuers.push(issuer);
        }
        let default_timeout = self.duration(
            "server.upstream_timeout",
            raw.server.upstream_timeout.as_deref(),
            Duration::from_secs(30),
        )?;

        let store_url = self.store_url(
            raw.store
                .url
                .as_deref()
                .unwrap_or("sqlite://keycard-data/keycard.db"),
        )?;
        let master_key_file = self.path(
            raw.secrets
                .master_key_file
                .as_deref()
                .unwrap_or("keycard-data/master.key"),
        );
        let audit = match raw
            .audit
            .file
            .as_deref()
            .unwrap_or("keycard-data/audit.jsonl")
        {
            "-" => AuditTarget::Stdout,
            "" => {
                return Err(self.err(
                    "audit.file",
                    "must be a file path, or \"-\" for standard output",
                ));
            }
            f => AuditTarget::File(self.path(f)),
        };

        let mut routes = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            routes.push(self.route(i, r, default_timeout)?);
        }
        for (i, r) in routes.iter().enumerate() {
            if routes
                .iter()
                .take(i)
                .any(|o| o.policy.prefix == r.policy.prefix)
            {
                return Err(self.err(
                    format!("routes[{i}].prefix"),
                    format!("`{}` is configured twice", r.policy.prefix),
                ));
            }
        }
        Ok(Settings {
            base_dir: self.base_dir.to_path_buf(),
            listen,
            metrics_listen,
            public_url,
            trusted_proxies,
            realm,
            store_url: ServiceUrl(store_url),
            master_key_file,
            audit,
            routes,
            failed_auth,
            account_failed_auth,
            digest,
            hmac,
            jwt_issuers,
            tokens,
            tls,
            mtls,
            redis_url,
            rate_limit_fail_open,
            redis_prefix,
            allow_underscore_headers: raw.server.allow_underscore_headers.unwrap_or(false),
            connections,
            forward_auth,
            oauth,
        })
    }

    fn oauth(&self, raw: RawOAuth) -> Result<OAuthSettings, ConfigError> {
        let d = OAuthSettings::default();
        let refresh_idle_ttl = self.duration(
            "oauth.refresh_idle_ttl",
            raw.refresh_idle_ttl.as_deref(),
            d.refresh_idle_ttl,
        )?;
        if refresh_idle_ttl.is_zero() {
            return Err(self.err("oauth.refresh_idle_ttl", "must be more than 0s"));
        }
        let issuer_host = match raw.issuer_host {
            None => None,
            Some(h) => {
                let valid = !h.is_empty()
                    && h.parse::<http::uri::Authority>()
                        .is_ok_and(|a| a.as_str() == h && !h.contains('@'));
                if !valid {
                    return Err(self.err(
                        "oauth.issuer_host",
                        format!(
                            "`{h}` is not a host such as auth.example.com or auth.example.com:8443"
                        ),
                    ));
                }
                Some(h.to_ascii_lowercase())
            }
        };
        let mut cors_origins = Vec::new();
        for (i, o) in raw.cors_origins.unwrap_or_default().into_iter().enumerate() {
            let key = format!("oauth.cors_origins[{i}]");
            let parsed = url::Url::parse(&o).map_err(|_| {
                self.err(
                    &key,
                    format!("`{o}` is not an origin such as https://app.example.com"),
                )
            })?;
            let origin = parsed.origin().ascii_serialization();
            if o.contains('*')
                || !matches!(parsed.scheme(), "http" | "https")
                || origin != o.trim_end_matches('/')
                || parsed.path() != "/"
            {
                return Err(self.err(
                    &key,
                    format!("`{o}` is not an exact origin: write scheme://host[:port], such as https://app.example.com (no path, no wildcard)"),
                ));
            }
            cors_origins.push(origin);
        }
        Ok(OAuthSettings {
            issuer_host,
            cors_origins,
            refresh_idle_ttl,
        })
    }

    fn connections(&self, raw: &RawServer) -> Result<ConnectionLimits, ConfigError> {
        let d = ConnectionLimits::default();
        let count = |key: &str, v: Option<usize>, default: usize| match v {
            None => Ok(default),
            Some(0) => Err(self.err(key, "must be at least 1")),
            Some(n) => Ok(n),
        };
        let limits = ConnectionLimits {
            max: count("server.max_connections", raw.max_connections, d.max)?,
            per_client: count(
                "server.max_connections_per_client",
                raw.max_connections_per_client,
                d.per_client,
            )?,
            first_request: self.duration(
                "server.first_request_timeout",
                raw.first_request_timeout.as_deref(),
                d.first_request,
            )?,
            idle: self.duration("server.idle_timeout", raw.idle_timeout.as_deref(), d.idle)?,
        };
        if limits.per_client > limits.max {
            return Err(self.err(
                "server.max_connections_per_client",
                "cannot be more than server.max_connections",
            ));
        }
        for (key, v) in [
            ("server.first_request_timeout", limits.first_request),
            ("server.idle_timeout", limits.idle),
        ] {
            if v.is_zero() {
                return Err(self.err(key, "must be more than 0s"));
            }
        }
        Ok(limits)
    }

    fn forward_auth(&self, raw: &RawForwardAuth) -> Result<ForwardAuthSettings, ConfigError> {
        let pick = |key: &str, v: Option<&str>, names: [&'static str; 2]| match v {
            None => Ok(http::HeaderName::from_static(names[0])),
            Some(v) => names
                .iter()
                .find(|n| n.eq_ignore_ascii_case(v))
                .map(|n| http::HeaderName::from_static(n))
                .ok_or_else(|| self.err(key, format!("`{v}` is not one of {}", names.join(", ")))),
        };
        Ok(ForwardAuthSettings {
            uri_header: pick(
                "forward_auth.uri_header",
                raw.uri_header.as_deref(),
                URI_HEADERS,
            )?,
            method_header: pick(
                "forward_auth.method_header",
                raw.method_header.as_deref(),
                METHOD_HEADERS,
            )?,
        })
    }

    fn tls(&self, raw: RawTls) -> Result<TlsSettings, ConfigError> {
        let client_auth = match raw.client_auth.as_deref() {
            None | Some("optional") => ClientAuth::Optional,
            Some("required") => ClientAuth::Required,
            Some(other) => {
                return Err(self.err(
                    "server.tls.client_auth",
                    format!("`{other}` is not \"optional\" or \"required\""),
                ));
            }
        };
        if raw.client_auth.is_some() && raw.client_ca.is_none() {
            return Err(self.err(
                "server.tls.client_auth",
                "needs server.tls.client_ca: the CA that client certificates are verified against",
            ));
        }
        let settings = TlsSettings {
            cert: self.path(&raw.cert),
            key: self.path(&raw.key),
            client_ca: raw.client_ca.as_deref().map(|p| self.path(p)),
            client_auth,
        };
        // Read now, so a broken file stops start-up with the key that names it.
        crate::tls::server_config(&settings, &Default::default())
            .map_err(|e| self.err(format!("server.tls.{}", e.key), e.message))?;
        Ok(settings)
    }

    /// Addresses and CIDRs (`10.0.0.0/8`, `127.0.0.1`, `::1`) under `key`.
    fn networks(&self, key: &str, raw: &[String]) -> Result<Vec<IpNet>, ConfigError> {
        raw.iter()
            .enumerate()
            .map(|(i, p)| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        self.err(
                            format!("{key}[{i}]"),
                            format!("`{p}` is not an address or a CIDR such as 10.0.0.0/8"),
                        )
                    })
            })
            .collect()
    }

    fn forwarded_certs(
        &self,
        header: Option<&str>,
        from: &[String],
        client_ca: Option<&Path>,
    ) -> Result<Option<ForwardedCerts>, ConfigError> {
        let from = self.networks("mtls.forwarded_cert_from", from)?;
        let Some(name) = header else {
            if !from.is_empty() {
                return Err(self.err(
                    "mtls.forwarded_cert_from",
                    "needs mtls.forwarded_cert_header: the one header the proxy sets (\"x-ssl-client-cert\" or \"x-forwarded-client-cert\")",
                ));
            }
            return Ok(None);
        };
        let header = [
            ForwardedCertHeader::SslClientCert,
            ForwardedCertHeader::ForwardedClientCert,
        ]
        .into_iter()
        .find(|h| h.as_str().eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            self.err(
                "mtls.forwarded_cert_header",
                format!(
                    "`{name}`: must be \"x-ssl-client-cert\" (nginx) or \"x-forwarded-client-cert\" (Envoy)"
                ),
            )
        })?;
        if from.is_empty() {
            return Err(self.err(
                "mtls.forwarded_cert_from",
                "must name the proxies (addresses or CIDRs) whose forwarded certificates are believed",
            ));
        }
        if client_ca.is_none() {
            return Err(self.err(
                "mtls.forwarded_cert_header",
                "needs mtls.client_ca: the CA forwarded certificates are verified against",
            ));
        }
        Ok(Some(ForwardedCerts { header, from }))
    }

    fn mtls(&self, raw: RawMtls, tls: Option<&TlsSettings>) -> Result<MtlsSettings, ConfigError> {
        let client_ca = match raw.client_ca.as_deref() {
            Some(p) => Some(self.path(p)),
            None => tls.and_then(|t| t.client_ca.clone()),
        };
        if let Some(ca) = &client_ca {
            crate::tls::ClientCa::load(ca).map_err(|e| {
                let key = if raw.client_ca.is_some() {
                    "mtls.client_ca"
                } else {
                    "server.tls.client_ca"
                };
                self.err(key, e.message)
            })?;
        }
        let mut rules = Vec::new();
        for (i, r) in raw.rules.into_iter().enumerate() {
            let key = |k: &str| format!("mtls.rules[{i}].{k}");
            let matcher = match (r.san_uri_prefix, r.san_dns, r.cn) {
                (Some(p), None, None) if !p.ends_with('/') || !p.contains("://") => {
                    return Err(self.err(
                        key("san_uri_prefix"),
                        format!("`{p}`: must be a URI prefix ending in `/` (such as \"spiffe://example.org/\"), so that it matches on a path boundary"),
                    ));
                }
                (Some(p), None, None) => keycard_core::cert::CertMatch::SanUriPrefix(p),
                (None, Some(d), None) if !d.is_empty() => {
                    keycard_core::cert::CertMatch::SanDns(d.to_ascii_lowercase())
                }
                (None, None, Some(c)) if !c.is_empty() => keycard_core::cert::CertMatch::Cn(c),
                _ => {
                    return Err(self.err(
                        format!("mtls.rules[{i}]"),
                        "needs exactly one of san_uri_prefix, san_dns, cn (not empty)",
                    ));
                }
            };
            if r.subject.trim().is_empty() {
                return Err(self.err(key("subject"), "must not be empty"));
            }
            let scopes = keycard_core::Scopes::parse(&r.scopes.join(" "))
                .map_err(|e| self.err(key("scopes"), e.to_string()))?;
            let ca = match r.ca.as_deref() {
                Some(p) => {
                    let path = self.path(p);
                    crate::tls::ClientCa::load(&path)
                        .map_err(|e| self.err(key("ca"), e.message))?;
                    Some(path)
                }
                None => None,
            };
            rules.push(MtlsRule {
                rule: keycard_core::cert::CertRule {
                    matcher,
                    subject: r.subject,
                    scopes,
                },
                ca,
            });
        }
        if !rules.is_empty() && client_ca.is_none() {
            return Err(self.err(
                "mtls.rules",
                "need a CA to verify certificates against: server.tls.client_ca (or mtls.client_ca behind a TLS-terminating proxy)",
            ));
        }
        let forwarded = self.forwarded_certs(
            raw.forwarded_cert_header.as_deref(),
            &raw.forwarded_cert_from,
            client_ca.as_deref(),
        )?;
        Ok(MtlsSettings {
            client_ca,
            rules,
            forwarded,
        })
    }

    fn tokens(&self, raw: RawTokens) -> Result<TokenSettings, ConfigError> {
        let name = raw.algorithm.as_deref().unwrap_or("ES256");
        let algorithm = keycard_core::jwt::Alg::parse(name).ok_or_else(|| {
            self.err(
                "tokens.algorithm",
                format!("`{name}` is not one of ES256, EdDSA, RS256"),
            )
        })?;
        let access_token_ttl = self.duration(
            "tokens.access_token_ttl",
            raw.access_token_ttl.as_deref(),
            Duration::from_secs(600),
        )?;
        let refresh_token_ttl = self.duration(
            "tokens.refresh_token_ttl",
            raw.refresh_token_ttl.as_deref(),
            Duration::from_secs(30 * 86_400),
        )?;
        if access_token_ttl.is_zero() || access_token_ttl > Duration::from_secs(86_400) {
            return Err(self.err("tokens.access_token_ttl", "must be between 1s and 1d"));
        }
        if refresh_token_ttl.is_zero() {
            return Err(self.err("tokens.refresh_token_ttl", "must be more than 0s"));
        }
        Ok(TokenSettings {
            algorithm,
            access_token_ttl,
            refresh_token_ttl,
        })
    }

    fn jwt_issuer(&self, i: usize, r: RawIssuer) -> Result<JwtIssuerSettings, ConfigError> {
        let key = |k: &str| format!("jwt.issuers[{i}].{k}");
        if r.issuer.is_empty() {
            return Err(self.err(key("issuer"), "must not be empty"));
        }
        let jwks = match (r.jwks_url, r.jwks_file) {
            (Some(u), None) => {
                let uri: Uri = u
                    .parse()
                    .map_err(|_| self.err(key("jwks_url"), "not a URL"))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none()
                {
                    return Err(self.err(key("jwks_url"), "must be an http:// or https:// URL"));
                }
                JwksSource::Url(uri)
            }
            (None, Some(f)) => JwksSource::File(self.path(&f)),
            _ => {
                return Err(self.err(key("jwks_url"), "set exactly one of jwks_url and jwks_file"));
            }
        };
        if r.audiences.is_empty() || r.audiences.iter().any(String::is_empty) {
            return Err(self.err(
                key("audiences"),
                "list the audiences (`aud`) tokens must be for (RFC 8725 §3.9)",
            ));
        }
        let leeway = self.duration(&key("leeway"), r.leeway.as_deref(), Duration::from_secs(30))?;
        if leeway > Duration::from_secs(300) {
            return Err(self.err(key("leeway"), "at most 5m"));
        }
        Ok(JwtIssuerSettings {
            issuer: r.issuer,
            jwks,
            audiences: r.audiences,
            leeway,
            subject_claim: r.subject_claim.unwrap_or_else(|| "sub".to_owned()),
            scopes_claim: r.scopes_claim,
        })
    }

    fn realm(&self, key: &str, value: Option<String>) -> Result<String, ConfigError> {
        let realm = value.unwrap_or_else(|| "keycard".to_owned());
        if realm.is_empty()
            || realm.len() > 200
            || realm
                .bytes()
                .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
        {
            return Err(self.err(
                key,
                "must be 1-200 printable ASCII characters without quotes or backslashes",
            ));
        }
        Ok(realm)
    }

    fn hmac(&self, raw: RawHmac) -> Result<HmacSettings, ConfigError> {
        let max_skew = self.duration(
            "hmac.max_skew",
            raw.max_skew.as_deref(),
            Duration::from_secs(60),
        )?;
        if max_skew.is_zero() || max_skew > Duration::from_secs(3600) {
            return Err(self.err("hmac.max_skew", "must be between 1s and 1h"));
        }
        let required_components = match raw.required_components {
            None => keycard_core::httpsig::Policy::with_skew(0).required,
            Some(list) => {
                for (i, c) in list.iter().enumerate() {
                    let derived = [
                        "@method",
                        "@authority",
                        "@path",
                        "@query",
                        "@scheme",
                        "@target-uri",
                        "@request-target",
                    ];
                    let field = !c.is_empty()
                        && c.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                    if !(derived.contains(&c.as_str()) || field) {
                        return Err(self.err(
                            format!("hmac.required_components[{i}]"),
                            format!("`{c}` is not a derived component (@method, @authority, @path, @query, …) or a lowercase header name"),
                        ));
                    }
                }
                list
            }
        };
        Ok(HmacSettings {
            max_skew,
            required_components,
        })
    }

    fn digest(&self, raw: RawDigest) -> Result<DigestSettings, ConfigError> {
        let realm = self.realm("digest.realm", raw.realm)?;
        let names = raw.algorithms.unwrap_or_else(|| vec!["SHA-256".to_owned()]);
        let mut algorithms: Vec<Algorithm> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let a = Algorithm::parse(name).ok_or_else(|| {
                self.err(
                    format!("digest.algorithms[{i}]"),
                    format!(
                        "`{name}` is not one of SHA-256, SHA-512-256, MD5 (or their -sess variants)"
                    ),
                )
            })?;
            if !algorithms.contains(&a) {
                algorithms.push(a);
            }
        }
        if algorithms.is_empty() {
            return Err(self.err(
                "digest.algorithms",
                "list at least one algorithm, such as [\"SHA-256\"]",
            ));
        }
        // SHA-256 is offered first when listed: clients that take the first challenge use it.
        if let Some(i) = algorithms.iter().position(|a| *a == Algorithm::SHA256) {
            let a = algorithms.remove(i);
            algorithms.insert(0, a);
        }
        let nonce_ttl = self.duration(
            "digest.nonce_ttl",
            raw.nonce_ttl.as_deref(),
            Duration::from_secs(300),
        )?;
        if nonce_ttl < Duration::from_secs(1) || nonce_ttl > Duration::from_secs(86_400) {
            return Err(self.err("digest.nonce_ttl", "must be between 1s and 1d"));
        }
        Ok(DigestSettings {
            realm,
            algorithms,
            nonce_ttl,
        })
    }

    fn store_url(&self, url: &str) -> Result<String, ConfigError> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(self.err("store.url", "sqlite:// needs a file path"));
            }
            return Ok(format!("sqlite://{}", self.path(path).display()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(url.to_owned());
        }
        Err(self.err(
            "store.url",
            "use sqlite://PATH or postgres://USER@HOST:PORT/DB",
        ))
    }

    fn route(
        &self,
        i: usize,
        r: RawRoute,
        default_timeout: Duration,
    ) -> Result<RouteSettings, ConfigError> {
        let key = |k: &str| format!("routes[{i}].{k}");
        if !r.prefix.starts_with('/') || !keycard_core::route::path_is_routable(&r.prefix) {
            return Err(self.err(
                key("prefix"),
                "must start with `/` and contain no `.` or `..` segments",
            ));
        }
        if r.prefix.starts_with("/_keycard/") {
            return Err(self.err(
                key("prefix"),
                "/_keycard/ is keycard's own; choose another prefix",
            ));
        }
        let rate_limit = match r.rate_limit.as_deref() {
            None => {
                if r.rate_limit_burst.is_some() {
                    return Err(self.err(key("rate_limit_burst"), "goes with rate_limit"));
                }
                None
            }
            Some(text) => {
                let rate =
                    parse_rate(text).map_err(|e| self.err(key("rate_limit"), e.to_string()))?;
                if r.rate_limit_burst == Some(0) {
                    return Err(self.err(key("rate_limit_burst"), "must be at least 1"));
                }
                Some(keycard_core::rate::Gcra::new(rate, r.rate_limit_burst))
            }
        };
        let methods = match r.methods {
            None => MethodSet::all(),
            Some(list) => {
                let mut set = MethodSet::empty();
                for (j, m) in list.iter().enumerate() {
                    let m: Method = m.parse().map_err(|e: keycard_core::UnknownMethod| {
                        self.err(format!("routes[{i}].methods[{j}]"), e.to_string())
                    })?;
                    set.insert(m);
                }
                if set.is_empty() && !r.public {
                    return Err(self.err(
                        key("methods"),
                        "an empty list lets nobody in; list methods or set public = true",
                    ));
                }
                set
            }
        };
        let scopes =
            Scopes::from_list(&r.scopes).map_err(|e| self.err(key("scopes"), e.to_string()))?;
        if r.public && !scopes.is_empty() {
            return Err(self.err(key("scopes"), "a public route cannot require scopes"));
        }
        let upstream = match r.upstream {
            None => None,
            Some(u) => Some(parse_upstream(&u).map_err(|m| self.err(key("upstream"), m))?),
        };
        // The prefix is replaced by the base path: both must end in `/`, or `/q` with a base
        // `/base/` sends `/qadmin/x` to `/base/admin/x`, a path another route guards.
        if let Some(u) = &upstream
            && !u.base_path.is_empty()
            && (!r.prefix.ends_with('/') || !u.base_path.ends_with('/'))
        {
            return Err(self.err(
                key("upstream"),
                format!(
                    "with a path in the upstream URL, the prefix and that path must both end in `/` (such as prefix = \"{}/\" and upstream = \"…{}/\"): the prefix is replaced by the path, and without the `/` a request could be sent under another route's path",
                    r.prefix.trim_end_matches('/'),
                    u.base_path.trim_end_matches('/')
                ),
            ));
        }
        let upstream_timeout = self.duration(
            &key("upstream_timeout"),
            r.upstream_timeout.as_deref(),
            default_timeout,
        )?;
        if upstream_timeout.is_zero() {
            return Err(self.err(key("upstream_timeout"), "must be more than 0s"));
        }
        Ok(RouteSettings {
            policy: RoutePolicy {
                prefix: r.prefix.into(),
                methods,
                scopes,
                public: r.public,
                rate_limit,
            },
            upstream,
            upstream_timeout,
            allow_encoded_slash: r.allow_encoded_slash,
        })
    }
}

/// Parses `http://host:port[/path]` or `https://…`.
pub fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let uri: Uri = text.parse().map_err(|_| format!("`{text}` is not a URL"))?;
    let scheme = uri.scheme().cloned().ok_or("needs http:// or https://")?;
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err("needs http:// or https://".into());
    }
    let authority = uri.authority().cloned().ok_or("needs a host")?;
    if authority.as_str().contains('@') {
        return Err("must not carry credentials".into());
    }
    if uri.query().is_some() {
        return Err("must not have a query string".into());
    }
    let path = uri.path();
    let base_path = if path == "/" || path.is_empty() {
        String::new()
    } else {
        path.to_owned()
    };
    let default_port = if scheme == http::uri::Scheme::HTTPS {
        443
    } else {
        80
    };
    let host = match authority.port_u16() {
        Some(p) if p != default_port => format!("{}:{p}", authority.host()),
        _ => authority.host().to_owned(),
    };
    let host = http::HeaderValue::from_str(&host).map_err(|_| "needs a valid host")?;
    Ok(Upstream {
        scheme,
        authority,
        base_path,
        host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, Path::new("/etc/kc"), "k.toml")
    }

    #[test]
    fn defaults_resolve_against_the_folder() {
        let s = load("").unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.public_url, "http://127.0.0.1:8080");
        assert_eq!(
            s.store_url.as_str(),
            "sqlite:///etc/kc/keycard-data/keycard.db"
        );
        assert_eq!(
            s.master_key_file,
            PathBuf::from("/etc/kc/keycard-data/master.key")
        );
        assert_eq!(
            s.audit,
            AuditTarget::File(PathBuf::from("/etc/kc/keycard-data/audit.jsonl"))
        );
    }

    #[test]
    fn a_full_route() {
        let s = load(
            r#"
            [server]
            trusted_proxies = ["10.0.0.0/8", "::1"]
            [store]
            url = "postgres://u@h:5432/db"
            [audit]
            file = "-"
            [[routes]]
            prefix = "/api/"
            upstream = "http://127.0.0.1:9000/v1/"
            methods = ["api_key"]
            scopes = ["orders:read"]
            upstream_timeout = "5s"
            "#,
        )
        .unwrap();
        let r = &s.routes[0];
        assert!(
            r.policy.methods.contains(Method::ApiKey) && !r.policy.methods.contains(Method::Basic)
        );
        assert_eq!(r.policy.scopes.as_str(), "orders:read");
        assert_eq!(r.upstream.as_ref().unwrap().base_path, "/v1/");
        assert_eq!(r.upstream_timeout, Duration::from_secs(5));
        assert_eq!(s.trusted_proxies.len(), 2);
        assert_eq!(s.audit, AuditTarget::Stdout);
    }

    #[test]
    fn digest_and_limits() {
        let s = load("").unwrap();
        assert_eq!(s.failed_auth.map(|r| r.count), Some(10));
        assert_eq!(s.digest.algorithms, vec![Algorithm::SHA256]);
        assert_eq!(s.digest.realm, "keycard");
        assert_eq!(s.digest.nonce_ttl, Duration::from_secs(300));
        let s = load(
            "[digest]\nrealm = \"api\"\nalgorithms = [\"MD5\", \"SHA-256-sess\", \"SHA-256\", \"MD5\"]\nnonce_ttl = \"30s\"\n[limits]\nfailed_auth = \"3/s\"",
        )
        .unwrap();
        let names: Vec<String> = s.digest.algorithms.iter().map(|a| a.name()).collect();
        assert_eq!(names, ["SHA-256", "MD5", "SHA-256-sess"]);
        assert_eq!(s.failed_auth.map(|r| r.per), Some(Duration::from_secs(1)));
        let off = load("[limits]\nfailed_auth = \"off\"").unwrap();
        assert_eq!(off.failed_auth, None);
        assert_eq!(
            s.account_failed_auth,
            Some(Rate {
                count: 10,
                per: Duration::from_secs(900)
            })
        );
        let off = load("[limits]\naccount_failed_auth = \"off\"").unwrap();
        assert_eq!(off.account_failed_auth, None);
    }

    #[test]
    fn the_authorization_servers_settings() {
        let s = load("").unwrap();
        assert_eq!(s.oauth, OAuthSettings::default());
        assert_eq!(s.oauth.refresh_idle_ttl, Duration::from_secs(14 * 86_400));
        let s = load(
            "[server]\npublic_url = \"https://Auth.Example:8443\"\n[oauth]\nissuer_host = \"Auth.Example:8443\"\ncors_origins = [\"https://app.example\", \"http://127.0.0.1:3000/\"]\nrefresh_idle_ttl = \"1d\"",
        )
        .unwrap();
        assert_eq!(s.oauth.issuer_host.as_deref(), Some("auth.example:8443"));
        assert_eq!(
            s.oauth.cors_origins,
            ["https://app.example", "http://127.0.0.1:3000"]
        );
        assert_eq!(s.oauth.refresh_idle_ttl, Duration::from_secs(86_400));
    }

    #[test]
    fn urls_with_passwords_are_redacted_in_debug() {
        let s = load("[store]\nurl = \"postgres://kc:hunter2@db:5432/kc\"\n[limits]\nredis_url = \"redis://:s3cret@cache:6379/0\"").unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(shown.contains("redacted"));
        assert_eq!(s.store_url.as_str(), "postgres://kc:hunter2@db:5432/kc");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[server]\nlisten = \"nowhere\"", "server.listen"),
            (
                "[server]\nmetrics_listen = \"9100\"",
                "server.metrics_listen",
            ),
            ("[server]\nbogus = 1", "bogus"),
            (
                "[[routes]]\nprefix = \"/a/\"\nmethods = [\"telepathy\"]",
                "routes[0].methods[0]",
            ),
            (
                "[[routes]]\nprefix = \"/a/\"\nscopes = [\"a b\"]",
                "routes[0].scopes",
            ),
            (
                "[[routes]]\nprefix = \"/a/\"\nupstream = \"ftp://x\"",
                "routes[0].upstream",
            ),
            ("[[routes]]\nprefix = \"a\"", "routes[0].prefix"),
            (
                "[[routes]]\nprefix = \"/a/\"\n[[routes]]\nprefix = \"/a/\"",
                "routes[1].prefix",
            ),
            (
                "[[routes]]\nprefix = \"/a/\"\nrate_limit = \"5/s\"\nrate_limit_burst = 0",
                "routes[0].rate_limit_burst",
            ),
            (
                "[[routes]]\nprefix = \"/a/\"\nupstream_timeout = \"soon\"",
                "routes[0].upstream_timeout",
            ),
            (
                "[[routes]]\nprefix = \"/q\"\nupstream = \"http://127.0.0.1:9/base/\"",
                "routes[0].upstream",
            ),
            (
                "[[routes]]\nprefix = \"/q/\"\nupstream = \"http://127.0.0.1:9/base\"",
                "routes[0].upstream",
            ),
            (
                "[forward_auth]\nuri_header = \"X-Uri\"",
                "forward_auth.uri_header",
            ),
            (
                "[server]\nmax_connections = 10\nmax_connections_per_client = 11",
                "server.max_connections_per_client",
            ),
            ("[server]\nidle_timeout = \"0s\"", "server.idle_timeout"),
            ("[store]\nurl = \"mysql://x\"", "store.url"),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]",
                "server.trusted_proxies[0]",
            ),
            ("[limits]\nfailed_auth = \"often\"", "limits.failed_auth"),
            (
                "[limits]\naccount_failed_auth = \"0/15m\"",
                "limits.account_failed_auth",
            ),
            (
                "[oauth]\nrefresh_idle_ttl = \"0s\"",
                "oauth.refresh_idle_ttl",
            ),
            ("[oauth]\nissuer_host = \"a b\"", "oauth.issuer_host"),
            ("[oauth]\nissuer_host = \"u@h\"", "oauth.issuer_host"),
            (
                "[server]\npublic_url = \"https://app.example\"\n[oauth]\nissuer_host = \"auth.example\"",
                "oauth.issuer_host",
            ),
            (
                "[oauth]\ncors_origins = [\"https://*.example\"]",
                "oauth.cors_origins[0]",
            ),
            (
                "[oauth]\ncors_origins = [\"https://a.example/path\"]",
                "oauth.cors_origins[0]",
            ),
            (
                "[oauth]\ncors_origins = [\"null\"]",
                "oauth.cors_origins[0]",
            ),
            (
                "[oauth]\ncors_origins = [\"ftp://a.example\"]",
                "oauth.cors_origins[0]",
            ),
            (
                "[[mtls.rules]]\nsan_uri_prefix = \"spiffe://example.org\"\nsubject = \"x\"",
                "mtls.rules[0].san_uri_prefix",
            ),
            (
                "[[mtls.rules]]\nsan_uri_prefix = \"spiffe://example.org/\"\nsubject = \"x\"\nca = \"missing.pem\"",
                "mtls.rules[0].ca",
            ),
            (
                "[mtls]\nforwarded_cert_header = \"x-client-cert\"\nforwarded_cert_from = [\"127.0.0.1\"]",
                "mtls.forwarded_cert_header",
            ),
            (
                "[mtls]\nforwarded_cert_header = \"x-ssl-client-cert\"",
                "mtls.forwarded_cert_from",
            ),
            (
                "[mtls]\nforwarded_cert_from = [\"127.0.0.1\"]",
                "mtls.forwarded_cert_from",
            ),
            (
                "[mtls]\nforwarded_cert_header = \"x-ssl-client-cert\"\nforwarded_cert_from = [\"nginx\"]",
                "mtls.forwarded_cert_from[0]",
            ),
            (
                "[mtls]\nforwarded_cert_header = \"x-ssl-client-cert\"\nforwarded_cert_from = [\"127.0.0.1\"]",
                "mtls.forwarded_cert_header",
            ),
            ("[tokens]\nalgorithm = \"HS256\"", "tokens.algorithm"),
            (
                "[tokens]\naccess_token_ttl = \"0s\"",
                "tokens.access_token_ttl",
            ),
            (
                "[[jwt.issuers]]\nissuer = \"i\"\naudiences = [\"a\"]",
                "jwt.issuers[0].jwks_url",
            ),
            (
                "[[jwt.issuers]]\nissuer = \"i\"\njwks_file = \"k.json\"",
                "jwt.issuers[0].audiences",
            ),
            (
                "[[jwt.issuers]]\nissuer = \"i\"\njwks_url = \"ftp://x/\"\naudiences = [\"a\"]",
                "jwt.issuers[0].jwks_url",
            ),
            (
                "[server]\npublic_url = \"https://kc.example\"\n[[jwt.issuers]]\nissuer = \"https://kc.example/\"\njwks_file = \"k.json\"\naudiences = [\"a\"]",
                "jwt.issuers[0].issuer",
            ),
            ("[hmac]\nmax_skew = \"0s\"", "hmac.max_skew"),
            ("[hmac]\nmax_skew = \"2h\"", "hmac.max_skew"),
            (
                "[hmac]\nrequired_components = [\"@status\"]",
                "hmac.required_components[0]",
            ),
            ("[limits]\nredis_url = \"rediss://x\"", "limits.redis_url"),
            ("[limits]\nredis_url = \"not a url\"", "limits.redis_url"),
            ("[limits]\nredis_prefix = \"\"", "limits.redis_prefix"),
            (
                "[[routes]]\nprefix = \"/a/\"\nrate_limit = \"0/s\"",
                "routes[0].rate_limit",
            ),
            ("[digest]\nalgorithms = [\"SHA-1\"]", "digest.algorithms[0]"),
            ("[digest]\nalgorithms = []", "digest.algorithms"),
            ("[digest]\nnonce_ttl = \"0s\"", "digest.nonce_ttl"),
            ("[digest]\nrealm = \"a\\\"b\"", "digest.realm"),
            ("[digest]\nqop = \"auth\"", "qop"),
            ("routes = 5", "routes"),
        ];
        for (text, key) in cases {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("k.toml"), "{text:?} gave {e}");
        }
    }
}
