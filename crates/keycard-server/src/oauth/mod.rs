//! The OAuth 2.0 / OpenID Connect authorization server (reference §4), to RFC 9700: the
//! authorization code grant with PKCE `S256` for every client, client credentials, and
//! rotating refresh tokens whose reuse revokes the whole grant. No implicit grant, no
//! password grant.
//!
//! - `clients.rs`: registered clients and client authentication at the token endpoint.
//! - `token.rs`: `/oauth2/token`, `introspect`, `revoke`, `userinfo`.
//! - `pages.rs`: `/oauth2/authorize` and the login and consent pages (sessions, CSRF, TOTP).
//! - `logout.rs`: `/oauth2/logout`, RP-initiated logout.
//! - `cors.rs`: CORS for browser applications (`oauth.cors_origins`).
//! - `html.rs`: the pages' markup, compiled in.
//!
//! Everything secret arrives here and leaves as a keyed hash (client secrets, codes,
//! refresh tokens); the request path of the gateway never reads the store for a token:
//! keys, clients and the revoked-token set are in memory, kept honest by the change feed.

mod clients;
mod cors;
mod html;
mod logout;
mod pages;
mod token;

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use keycard_core::{Method, Outcome, Reason};

pub use clients::ClientRecord;
pub use cors::Cors;
pub(crate) use pages::OWN_COOKIES;

use crate::audit::AuditSink;
use crate::authn::Authenticator;
use crate::body::Body;
use crate::clock::now_millis;
use crate::config::Settings;

/// The most parameters a form or query may carry.
const MAX_PARAMS: usize = 64;
/// The largest form body the endpoints read.
const MAX_FORM: usize = 64 * 1024;

/// The authorization server.
#[derive(Debug)]
pub struct OAuth {
    issuer: String,
    access_ttl: i64,
    refresh_ttl: i64,
    /// `oauth.refresh_idle_ttl` in seconds.
    refresh_idle: i64,
    realm: String,
    authn: Authenticator,
    audit: AuditSink,
    pages: pages::PageKeys,
    discovery: Bytes,
}

/// Where an OAuth request came from.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client's address (after trusted proxies).
    pub ip: IpAddr,
    /// Whether the connection is TLS (cookies get `Secure`).
    pub tls: bool,
    /// The client certificate (RFC 8705 client authentication and bound tokens).
    pub cert: Option<std::sync::Arc<crate::tls::PeerCert>>,
    /// The request id (audit events and logs).
    pub request_id: std::sync::Arc<str>,
}

impl OAuth {
    /// The server for `settings`.
    pub fn new(
        settings: &Settings,
        master: &keycard_core::MasterKey,
        authn: Authenticator,
        audit: AuditSink,
    ) -> Self {
        let issuer = settings.public_url.clone();
        let secure = issuer.starts_with("https://");
        Self {
            access_ttl: secs(settings.tokens.access_token_ttl),
            refresh_ttl: secs(settings.tokens.refresh_token_ttl),
            refresh_idle: secs(settings.oauth.refresh_idle_ttl),
            realm: settings.realm.clone(),
            discovery: Bytes::from(discovery(
                &issuer,
                settings.tokens.algorithm.as_str(),
                settings.mtls.client_ca.is_some(),
            )),
            pages: pages::PageKeys::new(master, secure),
            issuer,
            authn,
            audit,
        }
    }

    /// Whether `path` is one of the authorization server's.
    pub fn owns(path: &str) -> bool {
        path.starts_with("/oauth2/")
            || matches!(
                path,
                "/.well-known/oauth-authorization-server"
                    | "/.well-known/openid-configuration"
                    | "/_keycard/login"
                    | "/_keycard/consent"
            )
    }

    /// Answers a request to one of its paths.
    pub async fn handle(&self, req: http::Request<Incoming>, caller: Caller) -> Response<Body> {
        let path = req.uri().path().to_owned();
        match path.as_str() {
            "/.well-known/oauth-authorization-server" | "/.well-known/openid-configuration" => {
                let mut r = Response::new(Body::from_bytes(self.discovery.clone()));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r.headers_mut().insert(
                    CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=300"),
                );
                r
            }
            "/oauth2/token" => self.token(req, caller).await,
            "/oauth2/introspect" => self.introspect(req, caller).await,
            "/oauth2/revoke" => self.revoke(req, caller).await,
            "/oauth2/userinfo" => self.userinfo(req, caller).await,
            "/oauth2/authorize" => self.authorize(req, caller).await,
            "/oauth2/logout" => self.logout(req, caller).await,
            "/_keycard/login" => self.login(req, caller).await,
            "/_keycard/consent" => self.consent(req, caller).await,
            _ => crate::answer::not_found(),
        }
    }

    /// Writes one audit event of the authorization server.
    fn record(
        &self,
        route: &'static str,
        outcome: Outcome,
        reason: Option<Reason>,
        subject: Option<&str>,
        credential_id: Option<&str>,
        caller: &Caller,
    ) {
        self.audit.record(&crate::audit::Record {
            ts_ms: now_millis(),
            request_id: &caller.request_id,
            route: Some(route),
            method: Some(Method::Oauth2),
            outcome,
            reason: reason.map(Reason::as_str),
            subject,
            credential_id,
            ip: Some(caller.ip),
            cert_source: caller.cert.as_ref().map(|c| c.source),
            operation: None,
        });
    }
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// RFC 8414 / OIDC discovery metadata. `mtls`: whether client certificates can be verified
/// (a client CA is configured), so that RFC 8705 client authentication is offered.
fn discovery(issuer: &str, alg: &str, mtls: bool) -> String {
    let mut auth_methods = vec!["client_secret_basic", "client_secret_post", "none"];
    if mtls {
        auth_methods.extend(["tls_client_auth", "self_signed_tls_client_auth"]);
    }
    serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth2/authorize"),
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        "userinfo_endpoint": format!("{issuer}/oauth2/userinfo"),
        "end_session_endpoint": format!("{issuer}/oauth2/logout"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "tls_client_certificate_bound_access_tokens": mtls,
        "request_uri_parameter_supported": false,
        "introspection_endpoint_auth_methods_supported": auth_methods.iter().filter(|m| **m != "none").collect::<Vec<_>>(),
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "authorization_response_iss_parameter_supported": true,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [alg],
        // What keycard does something with: `openid` (an ID token), `profile` (the
        // userinfo `preferred_username`). Other scopes are the deployment's own.
        "scopes_supported": ["openid", "profile"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "azp", "at_hash", "jti", "preferred_username"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "prompt_values_supported": ["none", "login", "consent"],
    })
    .to_string()
}

/// Form or query parameters. Repeated names are refused (RFC 6749 §3.1) and empty values
/// count as absent.
#[derive(Default)]
pub(crate) struct Params(Vec<(String, String)>);

/// Names only: the values include client secrets, codes, refresh tokens and passwords.
impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

impl Drop for Params {
    /// Form values carry secrets (client secrets, codes, refresh tokens, passwords).
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (_, v) in &mut self.0 {
            v.zeroize();
        }
    }
}

impl Params {
    /// Parses `application/x-www-form-urlencoded` text; `None` when a name repeats or there
    /// are more than [`MAX_PARAMS`] (no OAuth request needs that many).
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (k, v) in form_urlencoded::parse(bytes) {
            if out.len() == MAX_PARAMS || !seen.insert(k.clone()) {
                return None;
            }
            out.push((k.into_owned(), v.into_owned()));
        }
        Some(Self(out))
    }

    /// The value of `name`, when present and not empty.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Re-encodes the parameters.
    pub(crate) fn encode(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            s.append_pair(k, v);
        }
        s.finish()
    }
}

/// Reads a form body of at most [`MAX_FORM`] bytes, sent as
/// `application/x-www-form-urlencoded` (RFC 6749 §3.2).
pub(crate) async fn read_form(
    req: http::Request<Incoming>,
) -> Result<(http::request::Parts, Params), FormError> {
    let (parts, body) = req.into_parts();
    if parts.method != http::Method::POST {
        return Err(FormError::Method);
    }
    let is_form = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(FormError::Invalid);
    }
    let bytes = Limited::new(body, MAX_FORM)
        .collect()
        .await
        .map_err(|_| FormError::Invalid)?
        .to_bytes();
    let params = Params::parse(&bytes).ok_or(FormError::Invalid)?;
    Ok((parts, params))
}

/// Why a form could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FormError {
    /// Not a POST.
    Method,
    /// Not a form, too large, or a repeated parameter.
    Invalid,
}

/// A JSON answer with `Cache-Control: no-store` (RFC 6749 §5.1).
pub(crate) fn json_answer(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::from_bytes(body.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// An RFC 6749 §5.2 error.
pub(crate) fn oauth_error(
    status: StatusCode,
    error: &str,
    description: Option<&str>,
) -> Response<Body> {
    let mut body = serde_json::json!({ "error": error });
    if let Some(d) = description {
        put(
            &mut body,
            "error_description",
            serde_json::Value::String(d.to_owned()),
        );
    }
    json_answer(status, &body)
}

/// A 405 for endpoints that take only some methods.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = oauth_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        Some("method not allowed"),
    );
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// Scopes as a space-separated string from a request parameter, checked.
pub(crate) fn scope_param(s: Option<&str>) -> Result<Option<keycard_core::Scopes>, ()> {
    match s {
        None => Ok(None),
        Some(s) => keycard_core::Scopes::parse(s).map(Some).map_err(|_| ()),
    }
}

/// Whether every scope of `a` is in `b`.
pub(crate) fn subset(a: &keycard_core::Scopes, b: &keycard_core::Scopes) -> bool {
    a.iter().all(|s| b.contains(s))
}

/// Sets `key` in a JSON object.
pub(crate) fn put(body: &mut serde_json::Value, key: &str, value: serde_json::Value) {
    if let Some(o) = body.as_object_mut() {
        o.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_refuse_repeats_and_floods_and_treat_empty_as_absent() {
        let p = Params::parse(b"a=1&b=&c=x%20y").unwrap();
        assert_eq!(
            (p.get("a"), p.get("b"), p.get("c")),
            (Some("1"), None, Some("x y"))
        );
        assert!(Params::parse(b"a=1&a=2").is_none());
        let flood: String = (0..65).map(|i| format!("p{i}=x&")).collect();
        assert!(Params::parse(flood.as_bytes()).is_none());
        let ok: String = (0..64).map(|i| format!("p{i}=x&")).collect();
        assert!(Params::parse(ok.as_bytes()).is_some());
        assert_eq!(Params::parse(b"a=1&b=2").unwrap().encode(), "a=1&b=2");
        let secret = Params::parse(b"client_secret=kcs_hunter2&password=pw").unwrap();
        let shown = format!("{secret:?}");
        assert!(
            shown.contains("client_secret")
                && !shown.contains("hunter2")
                && !shown.contains("pw\"")
        );
    }
}
