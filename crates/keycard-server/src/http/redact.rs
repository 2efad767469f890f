//! What may be written to a log about a request: its headers, with every header that can
//! carry a credential replaced by `[redacted]`.

use http::HeaderMap;

/// Header names (lowercase) whose values are never logged. Beyond these, any name holding
/// one of [`SENSITIVE_PARTS`] is redacted too (`x-auth-token`, `x-session-id`, …).
const SENSITIVE: [&str; 4] = [
    "cookie",
    "set-cookie",
    "signature",
    "x-forwarded-client-cert",
];
const SENSITIVE_PARTS: [&str; 7] = [
    "auth",
    "key",
    "token",
    "secret",
    "password",
    "session",
    "credential",
];

/// Whether a header's value must not be logged.
pub(crate) fn is_sensitive(name: &str) -> bool {
    SENSITIVE.contains(&name) || SENSITIVE_PARTS.iter().any(|p| name.contains(p))
}

/// The headers as one JSON object (string values; a repeated header's values joined with
/// `, `), sensitive values replaced by `[redacted]`, non-UTF-8 values by `[binary]`.
pub(crate) fn headers(h: &HeaderMap) -> String {
    let mut map = serde_json::Map::new();
    for (name, value) in h {
        let shown = if is_sensitive(name.as_str()) {
            "[redacted]"
        } else {
            value.to_str().unwrap_or("[binary]")
        };
        match map.get_mut(name.as_str()) {
            Some(serde_json::Value::String(s)) => {
                s.push_str(", ");
                s.push_str(shown);
            }
            _ => {
                map.insert(name.as_str().to_owned(), shown.into());
            }
        }
    }
    serde_json::Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_and_the_rest_kept() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer kc_secret".parse().unwrap());
        h.insert("proxy-authorization", "Basic c2VjcmV0".parse().unwrap());
        h.insert("x-api-key", "kc_secret2".parse().unwrap());
        h.insert("cookie", "kc_session=abc".parse().unwrap());
        h.insert("signature", "sig1=:AAAA:".parse().unwrap());
        h.insert("x-auth-token", "t0k3n".parse().unwrap());
        h.insert("user-agent", "curl/8".parse().unwrap());
        h.append("accept", "a/b".parse().unwrap());
        h.append("accept", "c/d".parse().unwrap());
        let out = headers(&h);
        for secret in [
            "kc_secret",
            "c2VjcmV0",
            "kc_secret2",
            "abc",
            "AAAA",
            "t0k3n",
        ] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["authorization"], "[redacted]");
        assert_eq!(v["user-agent"], "curl/8");
        assert_eq!(v["accept"], "a/b, c/d");
    }
}
