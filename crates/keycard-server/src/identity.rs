//! Identity headers (SPEC §5): set from a verified [`Principal`], never from the client.

use http::{HeaderMap, HeaderName, HeaderValue};
use keycard_core::Principal;

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

/// Sets the identity headers of `p`.
pub fn set_identity(headers: &mut HeaderMap, p: &Principal) {
    headers.insert(SUBJECT, encode(p.subject()));
    headers.insert(METHOD, HeaderValue::from_static(p.method().as_str()));
    // Scope tokens are visible ASCII by construction (RFC 6749 §3.3); spaces separate them.
    headers.insert(SCOPES, encode_allowing_spaces(p.scopes().as_str()));
    headers.insert(CREDENTIAL, encode(p.credential_id()));
}

/// A header value: as is when all visible ASCII, else percent-encoded UTF-8 (RFC 3986
/// unreserved characters kept).
pub fn encode(value: &str) -> HeaderValue {
    if !value.is_empty()
        && value.bytes().all(|b| (0x21..=0x7e).contains(&b))
        && let Ok(v) = HeaderValue::from_str(value)
    {
        return v;
    }
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn encode_allowing_spaces(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| encode(value))
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
