//! Finding the credential a request presents, without allocating: the header names of
//! reference §5.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::{Method, api_key};

/// The `X-API-Key` header.
pub const X_API_KEY: &str = "x-api-key";

/// The credential a request presents, borrowed from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// Nothing recognisable.
    Nothing,
    /// An API key (from `X-API-Key`, or `Authorization: Bearer kc_…`).
    ApiKey(&'a str),
    /// A bearer token that is not an API key (an OAuth 2.0 access token or a JWT).
    BearerToken(&'a str),
    /// `Authorization: Basic <token68>` (RFC 7617); the token68, still encoded.
    Basic(&'a str),
    /// `Authorization: Digest <auth-params>` (RFC 7616); the parameters, still unparsed.
    Digest(&'a str),
    /// `Signature-Input` and `Signature` (RFC 9421), still unparsed.
    Signature {
        /// `Signature-Input`.
        input: &'a str,
        /// `Signature`.
        signature: &'a str,
    },
    /// A credential header that cannot be parsed (duplicated, not text, unknown scheme);
    /// `Some(method)` when the method is still recognisable.
    Malformed(Option<Method>),
}

impl Presented<'_> {
    /// The method of the presented credential, if any.
    pub fn method(&self) -> Option<Method> {
        match self {
            Presented::Nothing => None,
            Presented::ApiKey(_) => Some(Method::ApiKey),
            // Which of oauth2/jwt is decided by the token verifiers.
            Presented::BearerToken(_) => None,
            Presented::Basic(_) => Some(Method::Basic),
            Presented::Digest(_) => Some(Method::Digest),
            Presented::Signature { .. } => Some(Method::Hmac),
            Presented::Malformed(m) => *m,
        }
    }

    /// Whether a bearer-style token was presented (the 401 then says `error="invalid_token"`).
    pub fn is_token(&self) -> bool {
        matches!(
            self,
            Presented::ApiKey(_)
                | Presented::BearerToken(_)
                | Presented::Malformed(Some(Method::ApiKey))
        )
    }
}

/// Reads the credential of a request. `X-API-Key` is looked at first, then `Authorization`.
/// Query strings are never read: a key in a URL ends up in logs and browser history.
pub fn presented(headers: &HeaderMap) -> Presented<'_> {
    // Looked up by `HeaderName`: a `&str` name is parsed and checked on every lookup.
    static API_KEY: http::HeaderName = http::HeaderName::from_static(X_API_KEY);
    static SIGNATURE_INPUT: http::HeaderName = http::HeaderName::from_static("signature-input");
    static SIGNATURE: http::HeaderName = http::HeaderName::from_static("signature");
    if let Some(p) = single(headers, &API_KEY) {
        return match p {
            Ok(v) => Presented::ApiKey(v.trim()),
            Err(()) => Presented::Malformed(Some(Method::ApiKey)),
        };
    }
    match single(headers, &AUTHORIZATION) {
        None => signature(headers, &SIGNATURE_INPUT, &SIGNATURE),
        Some(Err(())) => Presented::Malformed(None),
        Some(Ok(value)) => parse_authorization(value),
    }
}

/// An RFC 9421 signature: both fields, each once.
fn signature<'a>(
    headers: &'a HeaderMap,
    input: &http::HeaderName,
    signature: &http::HeaderName,
) -> Presented<'a> {
    match (single(headers, input), single(headers, signature)) {
        (None, None) => Presented::Nothing,
        (Some(Ok(input)), Some(Ok(signature))) => Presented::Signature { input, signature },
        _ => Presented::Malformed(Some(Method::Hmac)),
    }
}

fn parse_authorization(value: &str) -> Presented<'_> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        let token = rest.trim();
        if token.is_empty() || token.contains(' ') {
            return Presented::Malformed(None);
        }
        if api_key::looks_like_key(token) {
            Presented::ApiKey(token)
        } else {
            Presented::BearerToken(token)
        }
    } else if scheme.eq_ignore_ascii_case("basic") {
        let token = rest.trim();
        if token.is_empty() || token.contains(' ') {
            return Presented::Malformed(Some(Method::Basic));
        }
        Presented::Basic(token)
    } else if scheme.eq_ignore_ascii_case("digest") {
        Presented::Digest(rest.trim())
    } else {
        Presented::Malformed(None)
    }
}

/// The single value of a header: `None` when absent, `Err` when repeated or not visible ASCII.
fn single<'a>(headers: &'a HeaderMap, name: &http::HeaderName) -> Option<Result<&'a str, ()>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(Err(()));
    }
    Some(first.to_str().map_err(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn rfc9421_signatures_are_found_when_no_other_credential_is() {
        let mut h = HeaderMap::new();
        h.insert(
            "signature-input",
            HeaderValue::from_static("sig1=();created=1"),
        );
        assert_eq!(
            presented(&h),
            Presented::Malformed(Some(Method::Hmac)),
            "one field alone"
        );
        h.insert("signature", HeaderValue::from_static("sig1=:AAAA:"));
        assert_eq!(
            presented(&h),
            Presented::Signature {
                input: "sig1=();created=1",
                signature: "sig1=:AAAA:"
            }
        );
        assert_eq!(presented(&h).method(), Some(Method::Hmac));
        h.append("signature", HeaderValue::from_static("sig2=:AAAA:"));
        assert_eq!(
            presented(&h),
            Presented::Malformed(Some(Method::Hmac)),
            "repeated"
        );
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        assert_eq!(
            presented(&h),
            Presented::Basic("YTpi"),
            "Authorization wins"
        );
    }

    #[test]
    fn finds_api_keys_in_both_places() {
        assert_eq!(
            presented(&headers(&[("x-api-key", "kc_abc")])),
            Presented::ApiKey("kc_abc")
        );
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer kc_abc")])),
            Presented::ApiKey("kc_abc")
        );
        assert_eq!(
            presented(&headers(&[("authorization", "bearer   kc_abc ")])),
            Presented::ApiKey("kc_abc")
        );
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer eyJ.x.y")])),
            Presented::BearerToken("eyJ.x.y")
        );
    }

    #[test]
    fn finds_basic_and_digest() {
        assert_eq!(
            presented(&headers(&[(
                "authorization",
                "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
            )])),
            Presented::Basic("QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        assert_eq!(
            presented(&headers(&[(
                "authorization",
                "digest  username=\"a\", nc=00000001"
            )])),
            Presented::Digest("username=\"a\", nc=00000001")
        );
        assert!(!Presented::Basic("x").is_token());
        assert_eq!(Presented::Digest("").method(), Some(Method::Digest));
    }

    #[test]
    fn refuses_ambiguous_or_broken_headers() {
        assert_eq!(presented(&HeaderMap::new()), Presented::Nothing);
        assert_eq!(
            presented(&headers(&[("x-api-key", "kc_a"), ("x-api-key", "kc_b")])),
            Presented::Malformed(Some(Method::ApiKey))
        );
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer")])),
            Presented::Malformed(None)
        );
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer a b")])),
            Presented::Malformed(None)
        );
        assert_eq!(
            presented(&headers(&[("authorization", "Foo x")])),
            Presented::Malformed(None)
        );
        assert_eq!(
            presented(&headers(&[("authorization", "Basic a b")])),
            Presented::Malformed(Some(Method::Basic))
        );
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_bytes(b"kc_\xff").unwrap());
        assert_eq!(presented(&h), Presented::Malformed(Some(Method::ApiKey)));
    }
}
