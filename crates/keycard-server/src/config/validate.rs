//! From [`RawConfig`] to [`Settings`]: every value checked, every error naming its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use keycard_core::{parse_duration, parse_rate};

use super::error::ConfigError;
use super::raw::RawConfig;
use super::settings::{AuditTarget, JwtIssuerSettings, ServiceUrl, Settings};

pub(super) struct Validator<'a> {
    pub(super) origin: &'a str,
    pub(super) base_dir: &'a Path,
}

impl Validator<'_> {
    pub(super) fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }

    pub(super) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub(super) fn duration(
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

    pub(super) fn validate(&self, raw: RawConfig) -> Result<Settings, ConfigError> {
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
}
