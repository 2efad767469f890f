//! The OAuth 2.0 / OpenID Connect authorization server (reference §4), to RFC 9700: the
//! authorization code grant with PKCE `S256` for every client, client credentials, and
//! rotating refresh tokens whose reuse revokes the whole grant. No implicit grant, no
//! password grant.
//!
//! - `clients.rs`: client authentication at the token endpoint.
//! - `token.rs`: `/oauth2/token`; `introspect.rs`: `introspect`, `revoke`, `userinfo`;
//!   `request.rs`: the authorization request as validated.
//! - `authorize.rs`: `/oauth2/authorize` and the consent page.
//! - `login.rs`: the login page (password, TOTP, the failed-attempt throttle).
//! - `session.rs`, `cookies.rs`: the login session and the pages' cookies (CSRF included).
//! - `logout.rs`: `/oauth2/logout`, RP-initiated logout.
//! - `form.rs`: the endpoints' forms and JSON answers.
//! - `cors.rs`: CORS for browser applications (`oauth.cors_origins`).
//! - `html.rs`: the pages' markup, compiled in.
//!
//! Everything secret arrives here and leaves as a keyed hash (client secrets, codes,
//! refresh tokens); the request path of the gateway never reads the store for a token:
//! keys, clients and the revoked-token set are in memory, kept honest by the change feed.

mod authorize;
mod clients;
mod cookies;
mod cors;
mod form;
mod html;
mod introspect;
mod login;
mod logout;
mod request;
mod session;
mod token;

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};
use hyper::body::Incoming;
use keycard_core::{Method, Outcome, Reason};

pub(crate) use cookies::OWN_COOKIES;
pub(crate) use cors::Cors;

use crate::audit::AuditSink;
use crate::authn::Authenticator;
use crate::clock::now_millis;
use crate::config::Settings;
use crate::upstream::body::Body;

/// The authorization server.
#[derive(Debug)]
pub(crate) struct OAuth {
    issuer: String,
    access_ttl: i64,
    refresh_ttl: i64,
    /// `oauth.refresh_idle_ttl` in seconds.
    refresh_idle: i64,
    realm: String,
    authn: Authenticator,
    audit: AuditSink,
    pages: cookies::PageKeys,
    discovery: Bytes,
}

/// Where an OAuth request came from.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
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
    pub(crate) fn new(
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
            pages: cookies::PageKeys::new(master, secure),
            issuer,
            authn,
            audit,
        }
    }

    /// Whether `path` is one of the authorization server's.
    pub(crate) fn owns(path: &str) -> bool {
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
    pub(crate) async fn handle(
        &self,
        req: http::Request<Incoming>,
        caller: Caller,
    ) -> Response<Body> {
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
            _ => crate::http::answer::not_found(),
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
