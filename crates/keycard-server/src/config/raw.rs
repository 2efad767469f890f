//! The configuration file as TOML reads it: every table `deny_unknown_fields`, every value
//! as written. [`super::validate`] turns it into [`super::Settings`].

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) secrets: RawSecrets,
    #[serde(default)]
    pub(super) audit: RawAudit,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) digest: RawDigest,
    #[serde(default)]
    pub(super) tokens: RawTokens,
    #[serde(default)]
    pub(super) hmac: RawHmac,
    #[serde(default)]
    pub(super) jwt: RawJwt,
    #[serde(default)]
    pub(super) mtls: RawMtls,
    #[serde(default)]
    pub(super) forward_auth: RawForwardAuth,
    #[serde(default)]
    pub(super) oauth: RawOAuth,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuth {
    pub(super) issuer_host: Option<String>,
    pub(super) cors_origins: Option<Vec<String>>,
    pub(super) refresh_idle_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForwardAuth {
    pub(super) uri_header: Option<String>,
    pub(super) method_header: Option<String>,
    pub(super) grpc_listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: String,
    pub(super) key: String,
    pub(super) client_ca: Option<String>,
    pub(super) client_crl: Option<String>,
    pub(super) client_auth: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMtls {
    pub(super) client_ca: Option<String>,
    pub(super) forwarded_cert_header: Option<String>,
    #[serde(default)]
    pub(super) forwarded_cert_from: Vec<String>,
    #[serde(default)]
    pub(super) rules: Vec<RawMtlsRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMtlsRule {
    pub(super) ca: Option<String>,
    pub(super) san_uri_prefix: Option<String>,
    pub(super) san_dns: Option<String>,
    pub(super) cn: Option<String>,
    pub(super) subject: String,
    #[serde(default)]
    pub(super) scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) metrics_listen: Option<String>,
    pub(super) public_url: Option<String>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
    pub(super) realm: Option<String>,
    pub(super) upstream_timeout: Option<String>,
    pub(super) tls: Option<RawTls>,
    pub(super) allow_underscore_headers: Option<bool>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_client: Option<usize>,
    pub(super) first_request_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) redis_url: Option<String>,
    pub(super) failed_auth: Option<String>,
    pub(super) account_failed_auth: Option<String>,
    pub(super) rate_limit_fail_open: Option<bool>,
    pub(super) redis_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDigest {
    pub(super) realm: Option<String>,
    pub(super) algorithms: Option<Vec<String>>,
    pub(super) nonce_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHmac {
    pub(super) max_skew: Option<String>,
    pub(super) required_components: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTokens {
    pub(super) algorithm: Option<String>,
    pub(super) access_token_ttl: Option<String>,
    pub(super) refresh_token_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwt {
    #[serde(default)]
    pub(super) issuers: Vec<RawIssuer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuer {
    pub(super) issuer: String,
    pub(super) jwks_url: Option<String>,
    pub(super) jwks_file: Option<String>,
    #[serde(default)]
    pub(super) audiences: Vec<String>,
    pub(super) leeway: Option<String>,
    pub(super) subject_claim: Option<String>,
    pub(super) scopes_claim: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecrets {
    pub(super) master_key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub(super) file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) prefix: String,
    pub(super) upstream: Option<String>,
    pub(super) methods: Option<Vec<String>>,
    #[serde(default)]
    pub(super) scopes: Vec<String>,
    pub(super) rate_limit: Option<String>,
    pub(super) rate_limit_burst: Option<u32>,
    #[serde(default)]
    pub(super) public: bool,
    pub(super) upstream_timeout: Option<String>,
    #[serde(default)]
    pub(super) allow_encoded_slash: bool,
}
