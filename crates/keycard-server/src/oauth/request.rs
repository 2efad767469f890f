//! The authorization request as validated (RFC 6749 §4.1.1, PKCE, OIDC), and where the pages
//! send the browser next.

use std::sync::Arc;

use http::header::{CACHE_CONTROL, LOCATION};
use http::{HeaderValue, Response, StatusCode};
use keycard_core::Scopes;

use super::form::{ErrorCode, Params};
use crate::state::client::ClientRecord;
use crate::upstream::body::Body;

pub(super) const LOGIN_ROUTE: &str = "/_keycard/login";

pub(super) const AUTHORIZE_ROUTE: &str = "/oauth2/authorize";

/// A validated authorization request.
pub(super) struct AuthRequest {
    pub(super) client: Arc<ClientRecord>,
    pub(super) redirect_uri: String,
    /// Whether the request named the redirect URI (then the token request must repeat it,
    /// RFC 6749 §4.1.3).
    pub(super) redirect_uri_sent: bool,
    pub(super) state: Option<String>,
    pub(super) scopes: Scopes,
    pub(super) challenge: String,
    pub(super) nonce: Option<String>,
    pub(super) audience: String,
    pub(super) prompt: Vec<String>,
    /// `max_age` (OIDC Core §3.1.2.1): the most seconds since the user authenticated.
    pub(super) max_age: Option<i64>,
}

/// Why an authorization request failed.
pub(super) enum AuthError {
    /// Shown on a page: the redirect URI cannot be trusted (or nothing can be read).
    Page(StatusCode, &'static str),
    /// Sent back to the client's redirect URI.
    Redirect {
        redirect_uri: String,
        error: ErrorCode,
        state: Option<String>,
    },
}

pub(super) fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The request parameters with `value` taken out of `prompt`, and without `max_age=0`, so
/// that a login does not loop: the fresh session it starts satisfies both. Another
/// `max_age` stays, to be checked again after the login (by the consent page too).
pub(super) fn without_prompt(p: &Params, value: &str) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &p.0 {
        if k == "max_age" && v == "0" {
            continue;
        }
        if k == "prompt" {
            let rest: Vec<&str> = v
                .split(' ')
                .filter(|x| !x.is_empty() && *x != value)
                .collect();
            if !rest.is_empty() {
                s.append_pair(k, &rest.join(" "));
            }
        } else {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_drops_prompt_login_and_max_age_zero() {
        let p = Params::parse(b"client_id=a&prompt=login%20consent&max_age=0&state=s").unwrap();
        assert_eq!(
            without_prompt(&p, "login"),
            "client_id=a&prompt=consent&state=s"
        );
        let p = Params::parse(b"client_id=a&max_age=60").unwrap();
        assert_eq!(without_prompt(&p, "login"), "client_id=a&max_age=60");
    }
}
