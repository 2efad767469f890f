//! One validator per table of the file: each names the key it refuses.

use std::path::Path;
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;
use keycard_core::digest::Algorithm;

use super::error::ConfigError;
use super::raw::{
    RawDigest, RawForwardAuth, RawHmac, RawIssuer, RawMtls, RawOAuth, RawServer, RawTls, RawTokens,
};
use super::settings::{
    ConnectionLimits, DigestSettings, ForwardAuthSettings, ForwardedCertHeader, ForwardedCerts,
    HmacSettings, JwksSource, JwtIssuerSettings, METHOD_HEADERS, MtlsRule, MtlsSettings,
    OAuthSettings, TokenSettings, URI_HEADERS,
};
use super::validate::Validator;
use crate::tls::{ClientAuth, TlsSettings};

impl Validator<'_> {
    pub(super) fn oauth(&self, raw: RawOAuth) -> Result<OAuthSettings, ConfigError> {
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

    pub(super) fn connections(&self, raw: &RawServer) -> Result<ConnectionLimits, ConfigError> {
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

    pub(super) fn forward_auth(
        &self,
        raw: &RawForwardAuth,
    ) -> Result<ForwardAuthSettings, ConfigError> {
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
            grpc_listen: raw
                .grpc_listen
                .as_deref()
                .map(|a| {
                    a.parse().map_err(|_| {
                        self.err(
                            "forward_auth.grpc_listen",
                            format!("`{a}` is not an address with a port (127.0.0.1:9191)"),
                        )
                    })
                })
                .transpose()?,
        })
    }

    pub(super) fn tls(&self, raw: RawTls) -> Result<TlsSettings, ConfigError> {
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
        if raw.client_crl.is_some() && raw.client_ca.is_none() {
            return Err(self.err(
                "server.tls.client_crl",
                "needs server.tls.client_ca: a revocation list applies to the client certificates of a CA",
            ));
        }
        let settings = TlsSettings {
            cert: self.path(&raw.cert),
            key: self.path(&raw.key),
            client_ca: raw.client_ca.as_deref().map(|p| self.path(p)),
            client_crl: raw.client_crl.as_deref().map(|p| self.path(p)),
            client_auth,
        };
        // Read now, so a broken file stops start-up with the key that names it.
        crate::tls::server_config(&settings, &Default::default())
            .map_err(|e| self.err(format!("server.tls.{}", e.key), e.message))?;
        Ok(settings)
    }

    /// Addresses and CIDRs (`10.0.0.0/8`, `127.0.0.1`, `::1`) under `key`.
    pub(super) fn networks(&self, key: &str, raw: &[String]) -> Result<Vec<IpNet>, ConfigError> {
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

    pub(super) fn forwarded_certs(
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

    pub(super) fn mtls(
        &self,
        raw: RawMtls,
        tls: Option<&TlsSettings>,
    ) -> Result<MtlsSettings, ConfigError> {
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

    pub(super) fn tokens(&self, raw: RawTokens) -> Result<TokenSettings, ConfigError> {
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

    pub(super) fn jwt_issuer(
        &self,
        i: usize,
        r: RawIssuer,
    ) -> Result<JwtIssuerSettings, ConfigError> {
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

    pub(super) fn realm(&self, key: &str, value: Option<String>) -> Result<String, ConfigError> {
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

    pub(super) fn hmac(&self, raw: RawHmac) -> Result<HmacSettings, ConfigError> {
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

    pub(super) fn digest(&self, raw: RawDigest) -> Result<DigestSettings, ConfigError> {
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

    pub(super) fn store_url(&self, url: &str) -> Result<String, ConfigError> {
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
}
