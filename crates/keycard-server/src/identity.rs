//! Identity headers (SPEC §5): set from a verified [`Principal`], never from the client.

use http::{HeaderMap, HeaderName, HeaderValue};
use keycard_core::Principal;
use keycard_core::{header_value, header_value_with_spaces};

/// `X-Keycard-Subject`.
pub const SUBJECT: HeaderName = HeaderName::from_static("x-keycard-subject");
/// `X-Keycard-Method`.
pub const METHOD: HeaderName = HeaderName::from_static("x-keycard-method");
/// `X-Keycard-Scopes`.
pub const SCOPES: HeaderName = HeaderName::from_static("x-keycard-scopes");
/// `X-Keycard-Credential`.
pub const CREDENTIAL: HeaderName = HeaderName::from_static("x-keycard-credential");

/// Removes every `X-Keycard-*` header (whatever a client sent).
pub fn strip_identity(headers: &mut HeaderMap) {
    // The common case, nothing to strip, allocates nothing.
    if !headers.keys().any(|k| k.as_str().starts_with("x-keycard-")) {
        return;
    }
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-keycard-"))
        .cloned()
        .collect();
    for k in spoofed {
        headers.remove(k);
    }
}

/// Sets the identity headers of `p`: the values its credential had encoded already when it
/// has them (a cached API key), else encoded now.
pub fn set_identity(headers: &mut HeaderMap, p: &Principal) {
    headers.insert(METHOD, HeaderValue::from_static(p.method().as_str()));
    if let Some(v) = p.identity_values() {
        headers.insert(SUBJECT, v.subject.clone());
        headers.insert(SCOPES, v.scopes.clone());
        headers.insert(CREDENTIAL, v.credential.clone());
        return;
    }
    headers.insert(SUBJECT, encode(p.subject()));
    headers.insert(SCOPES, header_value_with_spaces(p.scopes().as_str()));
    headers.insert(CREDENTIAL, encode(p.credential_id()));
}

/// A header value: as is when all visible ASCII, else percent-encoded UTF-8 (RFC 3986
/// unreserved characters kept).
pub fn encode(value: &str) -> HeaderValue {
    header_value(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_is_percent_encoded() {
        assert_eq!(encode("svc-1"), "svc-1");
        assert_eq!(encode("José"), "Jos%C3%A9");
        assert_eq!(encode("a b"), "a%20b");
        assert_eq!(encode("x\r\ny"), "x%0D%0Ay");
    }

    #[test]
    fn strips_every_keycard_header() {
        let mut h = HeaderMap::new();
        h.insert("x-keycard-subject", HeaderValue::from_static("admin"));
        h.insert("x-keycard-anything", HeaderValue::from_static("x"));
        h.insert("x-other", HeaderValue::from_static("y"));
        strip_identity(&mut h);
        assert_eq!(h.len(), 1);
    }
}
