//! The OAuth 2.0 endpoints' forms and answers: parameters read once each (a repeated one
//! is an error, RFC 6749 §3.1), bounded, zeroized when dropped; JSON answers and RFC 6749
//! §5.2 errors.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::upstream::body::Body;

/// The most parameters a form or query may carry.
pub(super) const MAX_PARAMS: usize = 64;

/// The largest form body the endpoints read.
pub(super) const MAX_FORM: usize = 64 * 1024;

/// Form or query parameters. Repeated names are refused (RFC 6749 §3.1) and empty values
/// count as absent.
#[derive(Default)]
pub(crate) struct Params(pub(super) Vec<(String, String)>);

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

/// The OAuth 2.0 error codes keycard answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    /// `invalid_request` (RFC 6749 §5.2).
    InvalidRequest,
    /// `invalid_client` (RFC 6749 §5.2).
    InvalidClient,
    /// `invalid_grant` (RFC 6749 §5.2).
    InvalidGrant,
    /// `unauthorized_client` (RFC 6749 §5.2).
    UnauthorizedClient,
    /// `unsupported_grant_type` (RFC 6749 §5.2).
    UnsupportedGrantType,
    /// `unsupported_response_type` (RFC 6749 §4.1.2.1).
    UnsupportedResponseType,
    /// `invalid_scope` (RFC 6749 §5.2).
    InvalidScope,
    /// `invalid_target` (RFC 8707 §2).
    InvalidTarget,
    /// `access_denied` (RFC 6749 §4.1.2.1).
    AccessDenied,
    /// `login_required` (OpenID Connect Core §3.1.2.6).
    LoginRequired,
    /// `consent_required` (OpenID Connect Core §3.1.2.6).
    ConsentRequired,
    /// `request_not_supported` (OpenID Connect Core §3.1.2.6).
    RequestNotSupported,
    /// `temporarily_unavailable` (RFC 6749 §4.1.2.1).
    TemporarilyUnavailable,
    /// `invalid_token` (RFC 6750 §3.1).
    InvalidToken,
    /// `insufficient_scope` (RFC 6750 §3.1).
    InsufficientScope,
}

impl ErrorCode {
    /// The code as the RFCs spell it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::ConsentRequired => "consent_required",
            ErrorCode::RequestNotSupported => "request_not_supported",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
        }
    }
}

/// An RFC 6749 §5.2 error.
pub(crate) fn oauth_error(
    status: StatusCode,
    error: ErrorCode,
    description: Option<&str>,
) -> Response<Body> {
    let mut body = serde_json::json!({ "error": error.as_str() });
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
        ErrorCode::InvalidRequest,
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

pub(super) fn invalid_request(description: &str) -> Response<Body> {
    oauth_error(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidRequest,
        Some(description),
    )
}

pub(super) fn unavailable() -> Response<Body> {
    let mut r = oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::TemporarilyUnavailable,
        None,
    );
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
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
