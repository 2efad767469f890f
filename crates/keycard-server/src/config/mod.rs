//! Configuration (reference §3): the TOML file parses into `deny_unknown_fields` structs, then
//! validates into [`Settings`], the form the program uses. Every error names the key.

mod error;
mod raw;
mod routes;
mod sections;
mod settings;
mod validate;

use std::path::{Path, PathBuf};

use raw::RawConfig;

pub use crate::tls::{ClientAuth, TlsSettings};
pub use error::ConfigError;
#[cfg(test)]
pub(crate) use routes::parse_upstream;
pub use settings::{
    AuditTarget, ConnectionLimits, DigestSettings, ForwardAuthSettings, ForwardedCertHeader,
    ForwardedCerts, HmacSettings, JwksSource, JwtIssuerSettings, METHOD_HEADERS, MtlsRule,
    MtlsSettings, OAuthSettings, RouteSettings, ServiceUrl, Settings, TokenSettings, URI_HEADERS,
    Upstream,
};
use validate::Validator;

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keycard_core::digest::Algorithm;
    use keycard_core::{Method, Rate};

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
                "[forward_auth]\ngrpc_listen = \"9191\"",
                "forward_auth.grpc_listen",
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
