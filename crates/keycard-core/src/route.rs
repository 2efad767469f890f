//! Route policy: which requests need which proof. Longest prefix wins; no match is 404.

use std::sync::Arc;

use crate::{MethodSet, Scopes};

/// What one route asks of a request.
#[derive(Debug, Clone)]
pub struct RoutePolicy {
    /// The path prefix that selects this route (also the audit `route`).
    pub prefix: Arc<str>,
    /// The methods accepted here.
    pub methods: MethodSet,
    /// Scopes a request must hold, all of them.
    pub scopes: Scopes,
    /// No credential needed (identity headers still stripped).
    pub public: bool,
    /// Requests per subject (per client address on a public route), if limited.
    pub rate_limit: Option<crate::rate::Gcra>,
}

/// Routes ordered for longest-prefix matching. `T` is whatever the caller attaches to a
/// route (the server keeps the upstream there).
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    routes: Vec<(RoutePolicy, T)>,
}

impl<T> RouteTable<T> {
    /// Builds the table; ties on prefix length keep the configured order.
    pub fn new(mut routes: Vec<(RoutePolicy, T)>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.prefix.len()));
        Self { routes }
    }

    /// The route with the longest prefix of `path`.
    pub fn find(&self, path: &str) -> Option<&(RoutePolicy, T)> {
        self.routes
            .iter()
            .find(|(p, _)| path.starts_with(&*p.prefix))
    }

    /// Every route, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = &(RoutePolicy, T)> {
        self.routes.iter()
    }
}

/// Whether a request path is safe to route. Refused: `.`/`..` segments and empty segments
/// (`//`), literal or percent-encoded (also behind an encoded `/` or `\`); percent-encoded
/// unreserved characters (`%61` for `a`: RFC 3986 §2.3 says they are equivalent and should
/// not be encoded); control characters and backslashes.
///
/// Routes match the path as sent. An upstream that decodes `/%61pi/`, merges `//api/` or
/// normalises `/public/../api/` would otherwise serve `/api/` through a route keycard never
/// checked for it (a public catch-all, say).
pub fn path_is_routable(path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    if !path.contains('%') {
        return segments_are_safe(path.as_bytes());
    }
    let bytes = path.as_bytes();
    let mut decoded: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(v) if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                    return false;
                }
                Some(v) => {
                    decoded.push(v);
                    i += 3;
                    continue;
                }
                None => return false,
            }
        }
        decoded.push(b);
        i += 1;
    }
    segments_are_safe(&decoded)
}

fn segments_are_safe(path: &[u8]) -> bool {
    if path.iter().any(|b| *b < 0x20 || *b == 0x7f || *b == b'\\') {
        return false;
    }
    let inner = path.strip_prefix(b"/").unwrap_or(path);
    let inner = inner.strip_suffix(b"/").unwrap_or(inner);
    // `/` alone is the one path whose only segment may be empty.
    inner.is_empty()
        || !inner
            .split(|b| *b == b'/')
            .any(|seg| seg.is_empty() || seg == b"." || seg == b"..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(prefix: &str) -> RoutePolicy {
        RoutePolicy {
            prefix: prefix.into(),
            methods: MethodSet::all(),
            scopes: Scopes::empty(),
            public: false,
            rate_limit: None,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let t = RouteTable::new(vec![
            (policy("/"), 0),
            (policy("/api/"), 1),
            (policy("/api/admin/"), 2),
        ]);
        assert_eq!(t.find("/api/admin/x").map(|r| r.1), Some(2));
        assert_eq!(t.find("/api/x").map(|r| r.1), Some(1));
        assert_eq!(t.find("/other").map(|r| r.1), Some(0));
        let t = RouteTable::new(vec![(policy("/api/"), 1)]);
        assert!(t.find("/ap").is_none());
    }

    #[test]
    fn dot_segments_are_not_routable() {
        for ok in [
            "/",
            "/api/",
            "/api/x",
            "/api/x.y",
            "/a/..b/c",
            "/a%20b",
            "/a%2Fb",
            "/caf%C3%A9",
        ] {
            assert!(path_is_routable(ok), "{ok}");
        }
        for bad in [
            "/public/../api",
            "/public/..",
            "/./api",
            "/public/%2e%2e/api",
            "/public/%2E./api",
            "/public%2f..%2fapi",
            "/p/..%5capi",
            "/a\\b",
            "/a%00b",
            // Encoded unreserved characters and empty segments dodge prefix matching.
            "/%61pi/x",
            "/ap%69/x",
            "/api%2dv2/x",
            "//api/x",
            "/public//api",
            "/a/%2Fapi",
            "/x%7e",
            "/bad%zz",
            "api",
            "/a%2",
        ] {
            assert!(!path_is_routable(bad), "{bad}");
        }
    }
}
