//! The configuration as the program uses it: validated, paths resolved, defaults applied.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;
use keycard_core::Rate;
use keycard_core::digest::Algorithm;
use keycard_core::route::RoutePolicy;

use crate::tls::TlsSettings;

/// A database or Redis URL. It may carry a password (`postgres://user:pw@host/db`), so its
/// `Debug` shows it with the password replaced.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl(pub(super) String);

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
    /// `forward_auth.grpc_listen`: the address of Envoy's external authorization service
    /// over gRPC (`envoy.service.auth.v3.Authorization/Check`); `None`: not served.
    pub grpc_listen: Option<SocketAddr>,
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
            grpc_listen: None,
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
