//! Every answer keycard gives of its own: one place maps a [`Refusal`] to HTTP (reference §6).
//! Fixed bodies; the reason stays in the audit log.

use http::header::HeaderName;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use keycard_core::digest::{self, Algorithm, NonceKey};
use keycard_core::route::RoutePolicy;
use keycard_core::{MasterKey, Method, Reason, Refusal};

use crate::clock::now_millis;
use crate::config::Settings;
use crate::upstream::body::Body;

/// A JSON answer with a fixed body.
pub(crate) fn json(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from_bytes(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 400.
pub(crate) fn bad_request() -> Response<Body> {
    json(StatusCode::BAD_REQUEST, r#"{"error":"bad_request"}"#)
}

/// 404.
pub(crate) fn not_found() -> Response<Body> {
    json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#)
}

/// 502.
pub(crate) fn bad_gateway() -> Response<Body> {
    json(StatusCode::BAD_GATEWAY, r#"{"error":"bad_gateway"}"#)
}

/// 504.
pub(crate) fn gateway_timeout() -> Response<Body> {
    json(
        StatusCode::GATEWAY_TIMEOUT,
        r#"{"error":"gateway_timeout"}"#,
    )
}

/// 503, fail closed.
pub(crate) fn unavailable() -> Response<Body> {
    let mut r = json(
        StatusCode::SERVICE_UNAVAILABLE,
        r#"{"error":"unavailable"}"#,
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Writes the challenges of 401 answers: one per challenge-using method the route allows
/// (bearer-style methods share one), with fresh Digest nonces.
#[derive(Debug)]
pub(crate) struct Challenger {
    realm: String,
    digest_realm: String,
    algorithms: Vec<Algorithm>,
    nonce_key: NonceKey,
    opaque: String,
}

impl Challenger {
    /// From the settings and the master key.
    pub(crate) fn new(settings: &Settings, master: &MasterKey) -> Self {
        let nonce_key = NonceKey::new(master.nonce_key());
        Self {
            realm: settings.realm.clone(),
            digest_realm: settings.digest.realm.clone(),
            algorithms: settings.digest.algorithms.clone(),
            opaque: nonce_key.opaque(),
            nonce_key,
        }
    }

    fn challenges(&self, policy: &RoutePolicy, token_presented: bool, stale: bool) -> Vec<String> {
        let mut out = Vec::with_capacity(2 + self.algorithms.len());
        let m = policy.methods;
        let realm = &self.realm;
        if m.contains(Method::ApiKey) || m.contains(Method::Oauth2) || m.contains(Method::Jwt) {
            if token_presented {
                out.push(format!(r#"Bearer realm="{realm}", error="invalid_token""#));
            } else {
                out.push(format!(r#"Bearer realm="{realm}""#));
            }
        }
        if m.contains(Method::Basic) {
            out.push(keycard_core::basic::challenge(realm));
        }
        if m.contains(Method::Digest) {
            let now = u64::try_from(now_millis()).unwrap_or(0);
            if let Some(nonce) = self.nonce_key.mint(now) {
                for alg in &self.algorithms {
                    out.push(digest::challenge(
                        &self.digest_realm,
                        *alg,
                        &nonce,
                        &self.opaque,
                        stale,
                    ));
                }
            }
        }
        out
    }

    /// The answer to a refusal on `policy`. `token_presented`: a bearer-style credential was
    /// sent, so the `Bearer` challenge carries `error="invalid_token"` (RFC 6750 §3.1).
    pub(crate) fn refusal(
        &self,
        refusal: &Refusal,
        policy: &RoutePolicy,
        token_presented: bool,
    ) -> Response<Body> {
        match refusal {
            Refusal::Unauthorized { reason, .. } => {
                let mut r = json(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#);
                let stale = *reason == Reason::StaleNonce;
                for challenge in self.challenges(policy, token_presented, stale) {
                    if let Ok(v) = HeaderValue::from_str(&challenge) {
                        r.headers_mut().append(WWW_AUTHENTICATE, v);
                    }
                }
                r
            }
            Refusal::Forbidden { principal, .. } => {
                let mut r = json(StatusCode::FORBIDDEN, r#"{"error":"insufficient_scope"}"#);
                if matches!(
                    principal.method(),
                    Method::ApiKey | Method::Oauth2 | Method::Jwt
                ) {
                    let v = format!(
                        r#"Bearer realm="{}", error="insufficient_scope", scope="{}""#,
                        self.realm,
                        policy.scopes.as_str()
                    );
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        r.headers_mut().insert(WWW_AUTHENTICATE, v);
                    }
                }
                r
            }
            Refusal::Unavailable { .. } => unavailable(),
            Refusal::Throttled {
                limit,
                retry_after_secs,
                ..
            } => too_many_requests(*limit, *retry_after_secs),
            Refusal::RateLimited {
                limit,
                retry_after_secs,
                reset_secs,
                ..
            } => {
                let mut r = too_many_requests(*limit, *retry_after_secs);
                r.headers_mut()
                    .insert(RATELIMIT_RESET, HeaderValue::from(*reset_secs));
                r
            }
            // A refusal kind added later without a mapping: refuse, never let through.
            #[allow(unreachable_patterns)]
            _ => json(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#),
        }
    }
}

/// 429 with `Retry-After` and the RateLimit fields (draft-ietf-httpapi-ratelimit-headers).
pub(crate) fn too_many_requests(limit: u32, retry_after_secs: u64) -> Response<Body> {
    let mut r = json(
        StatusCode::TOO_MANY_REQUESTS,
        r#"{"error":"too_many_requests"}"#,
    );
    let h = r.headers_mut();
    h.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    h.insert(RATELIMIT_LIMIT, HeaderValue::from(limit));
    h.insert(RATELIMIT_REMAINING, HeaderValue::from_static("0"));
    h.insert(RATELIMIT_RESET, HeaderValue::from(retry_after_secs));
    r
}

/// `RateLimit-Limit`.
pub(crate) const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`.
pub(crate) const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`.
pub(crate) const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
