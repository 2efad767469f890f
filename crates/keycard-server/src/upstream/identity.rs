//! Identity headers (reference §5): set from a verified [`Principal`], never from the client.

use http::{HeaderMap, HeaderName, HeaderValue};
use keycard_core::{IdentityValues, Principal};

/// `X-Keycard-Subject`.
pub(crate) const SUBJECT: HeaderName = HeaderName::from_static("x-keycard-subject");
/// `X-Keycard-Method`.
pub(crate) const METHOD: HeaderName = HeaderName::from_static("x-keycard-method");
/// `X-Keycard-Scopes`.
pub(crate) const SCOPES: HeaderName = HeaderName::from_static("x-keycard-scopes");
/// `X-Keycard-Credential`.
pub(crate) const CREDENTIAL: HeaderName = HeaderName::from_static("x-keycard-credential");
/// `X-Keycard-Subject-Kind`: `user` or `client`.
pub(crate) const SUBJECT_KIND: HeaderName = HeaderName::from_static("x-keycard-subject-kind");

/// Whether a client-sent header of this (lowercase) name must never reach an upstream as
/// keycard's word: `X-Keycard-*`, and any spelling with `_` for `-` of it, of a
/// forwarded-certificate header, of `X-Forwarded-*`, `X-Real-IP` or `X-Request-Id` (whose
/// dashed spellings keycard sets itself) — CGI-style upstreams (PEP 3333, PHP) read
/// `X_Forwarded_For` as `X-Forwarded-For`.
pub(crate) fn is_reserved(name: &str) -> bool {
    if name.starts_with("x-keycard-") {
        return true;
    }
    if !name.contains('_') {
        return false;
    }
    let dashed = |target: &str, prefix: bool| {
        let (n, t) = (name.as_bytes(), target.as_bytes());
        (if prefix {
            n.len() >= t.len()
        } else {
            n.len() == t.len()
        }) && n
            .iter()
            .zip(t)
            .all(|(a, b)| a == b || (*a == b'_' && *b == b'-'))
    };
    dashed("x-keycard-", true)
        || dashed("x-ssl-client-cert", false)
        || dashed("x-forwarded-client-cert", false)
        || dashed("x-forwarded-", true)
        || dashed("x-real-ip", false)
        || dashed("x-request-id", false)
}

/// Removes every header [`is_reserved`] names (whatever a client sent).
pub(crate) fn strip_identity(headers: &mut HeaderMap) {
    // The common case, nothing to strip, allocates nothing.
    if !headers.keys().any(|k| is_reserved(k.as_str())) {
        return;
    }
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_reserved(k.as_str()))
        .cloned()
        .collect();
    for k in spoofed {
        headers.remove(k);
    }
}

/// Sets the identity headers of `p`: the values its credential had encoded already when it
/// has them (a cached API key), else encoded now.
pub(crate) fn set_identity(headers: &mut HeaderMap, p: &Principal) {
    headers.insert(METHOD, HeaderValue::from_static(p.method().as_str()));
    headers.insert(SUBJECT_KIND, HeaderValue::from_static(p.kind().as_str()));
    let IdentityValues {
        subject,
        scopes,
        credential,
    } = match p.identity_values() {
        Some(v) => v.clone(),
        None => IdentityValues::encode(p.subject(), p.scopes().as_str(), p.credential_id()),
    };
    headers.insert(SUBJECT, subject);
    headers.insert(SCOPES, scopes);
    headers.insert(CREDENTIAL, credential);
}

/// Writes the identity headers of `p` as HTTP/1.1 header lines (`name: value` CRLF), for a
/// request head written by hand ([`crate::upstream::h1`]): the same names and values as
/// [`set_identity`], without a header map to grow and hash them into.
pub(crate) fn write_identity(out: &mut Vec<u8>, p: &Principal) {
    let encoded;
    let values = match p.identity_values() {
        Some(v) => v,
        None => {
            encoded = IdentityValues::encode(p.subject(), p.scopes().as_str(), p.credential_id());
            &encoded
        }
    };
    for (name, value) in [
        (METHOD.as_str().as_bytes(), p.method().as_str().as_bytes()),
        (
            SUBJECT_KIND.as_str().as_bytes(),
            p.kind().as_str().as_bytes(),
        ),
        (SUBJECT.as_str().as_bytes(), values.subject.as_bytes()),
        (SCOPES.as_str().as_bytes(), values.scopes.as_bytes()),
        (CREDENTIAL.as_str().as_bytes(), values.credential.as_bytes()),
    ] {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_is_percent_encoded() {
        let encode = keycard_core::header_value;
        assert_eq!(encode("svc-1"), "svc-1");
        assert_eq!(encode("José"), "Jos%C3%A9");
        assert_eq!(encode("a b"), "a%20b");
        assert_eq!(encode("x\r\ny"), "x%0D%0Ay");
        // `%` is always encoded: a name cannot be spelled as another's encoding.
        assert_eq!(encode("Jos%C3%A9"), "Jos%25C3%25A9");
        assert_ne!(encode("Jos%C3%A9"), encode("José"));
        assert_eq!(encode("100%"), "100%25");
        let scopes = keycard_core::IdentityValues::encode("s", "a%20b c", "k").scopes;
        assert_eq!(scopes, "a%2520b c");
        let scopes = keycard_core::IdentityValues::encode("s", "a b", "k").scopes;
        assert_eq!(scopes, "a b");
    }

    #[test]
    fn strips_every_keycard_header() {
        let mut h = HeaderMap::new();
        h.insert("x-keycard-subject", HeaderValue::from_static("admin"));
        h.insert("x-keycard-anything", HeaderValue::from_static("x"));
        h.insert("x-other", HeaderValue::from_static("y"));
        for spelled in [
            "x_keycard_subject",
            "x-keycard_scopes",
            "x_ssl_client_cert",
            "x_forwarded_client_cert",
            "x_forwarded-client_cert",
            "x_forwarded_for",
            "x_forwarded_host",
            "x_real_ip",
            "x_request_id",
        ] {
            h.insert(
                HeaderName::from_bytes(spelled.as_bytes()).unwrap(),
                HeaderValue::from_static("root"),
            );
        }
        h.insert("x_other_thing", HeaderValue::from_static("kept"));
        h.insert("x_ssl_client_certs", HeaderValue::from_static("kept"));
        strip_identity(&mut h);
        assert_eq!(h.len(), 3, "{h:?}");
        assert!(h.contains_key("x-other") && h.contains_key("x_other_thing"));
    }
}
