//! Every answer keycard gives of its own: one place maps a [`Refusal`] to HTTP (SPEC §6).
//! Fixed bodies; the reason stays in the audit log.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use keycard_core::route::RoutePolicy;
use keycard_core::{Method, Refusal};

use crate::body::Body;

/// A JSON answer with a fixed body.
pub fn json(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from_bytes(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 400.
pub fn bad_request() -> Response<Body> {
    json(StatusCode::BAD_REQUEST, r#"{"error":"bad_request"}"#)
}

/// 404.
pub fn not_found() -> Response<Body> {
    json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#)
}

/// 502.
pub fn bad_gateway() -> Response<Body> {
    json(StatusCode::BAD_GATEWAY, r#"{"error":"bad_gateway"}"#)
}

/// 504.
pub fn gateway_timeout() -> Response<Body> {
    json(
        StatusCode::GATEWAY_TIMEOUT,
        r#"{"error":"gateway_timeout"}"#,
    )
}

/// 503, fail closed.
pub fn unavailable() -> Response<Body> {
    let mut r = json(
        StatusCode::SERVICE_UNAVAILABLE,
        r#"{"error":"unavailable"}"#,
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// The answer to a refusal on `policy`. `token_presented`: a bearer-style credential was
/// sent, so the `Bearer` challenge carries `error="invalid_token"` (RFC 6750 §3.1).
pub fn refusal(
    refusal: &Refusal,
    policy: &RoutePolicy,
    realm: &str,
    token_presented: bool,
) -> Response<Body> {
    match refusal {
        Refusal::Unauthorized { .. } => {
            let mut r = json(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#);
            for challenge in challenges(policy, realm, token_presented) {
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
                    r#"Bearer realm="{realm}", error="insufficient_scope", scope="{}""#,
                    policy.scopes.as_str()
                );
                if let Ok(v) = HeaderValue::from_str(&v) {
                    r.headers_mut().insert(WWW_AUTHENTICATE, v);
                }
            }
            r
        }
        Refusal::Unavailable { .. } => unavailable(),
        // A refusal kind added later without a mapping: refuse, never let through.
        #[allow(unreachable_patterns)]
        _ => json(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#),
    }
}

/// One challenge per challenge-using method the route allows (bearer-style methods share one).
fn challenges(policy: &RoutePolicy, realm: &str, token_presented: bool) -> Vec<String> {
    let mut out = Vec::with_capacity(2);
    let m = policy.methods;
    if m.contains(Method::ApiKey) || m.contains(Method::Oauth2) || m.contains(Method::Jwt) {
        if token_presented {
            out.push(format!(r#"Bearer realm="{realm}", error="invalid_token""#));
        } else {
            out.push(format!(r#"Bearer realm="{realm}""#));
        }
    }
    out
}
