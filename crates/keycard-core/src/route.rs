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

/// How a request path may be routed ([`check_path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathCheck {
    /// Safe: routed and forwarded as sent.
    Plain,
    /// Safe but for a percent-encoded `/` (`%2F`): only a route with `allow_encoded_slash`
    /// takes it, and only when the decoded path would choose the same route.
    EncodedSlash,
    /// Refused with 400 (`path_not_canonical`).
    Refused,
}

/// Whether a request path is safe to route and to forward byte for byte.
///
/// Refused: a path not starting with `/`; `.`/`..` segments and empty segments (`//`),
/// literal or percent-encoded (also behind an encoded `/` or `\`); path parameters (`;` or
/// `%3B` anywhere: Tomcat and Spring read `/public/..;/admin` as `/admin`); percent-encoded
/// unreserved characters (`%61` for `a`: RFC 3986 §2.3 says they are equivalent and should
/// not be encoded); a percent-encoded `\`; control characters and backslashes. A
/// percent-encoded `/` is told apart ([`PathCheck::EncodedSlash`]).
///
/// Routes match the path as sent. An upstream that decodes `/%61pi/` or `%2F`, merges
/// `//api/`, strips `;…` or normalises `/public/../api/` would otherwise serve `/api/`
/// through a route keycard never checked for it (a public catch-all, say).
pub fn check_path(path: &str) -> PathCheck {
    if !path.starts_with('/') || path.contains(';') {
        return PathCheck::Refused;
    }
    if !path.contains('%') {
        return if segments_are_safe(path.as_bytes()) {
            PathCheck::Plain
        } else {
            PathCheck::Refused
        };
    }
    let bytes = path.as_bytes();
    let mut decoded: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut encoded_slash = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(v)
                    if v.is_ascii_alphanumeric()
                        || matches!(v, b'-' | b'.' | b'_' | b'~' | b';' | b'\\') =>
                {
                    return PathCheck::Refused;
                }
                Some(v) => {
                    encoded_slash |= v == b'/';
                    decoded.push(v);
                    i += 3;
                    continue;
                }
                None => return PathCheck::Refused,
            }
        }
        decoded.push(b);
        i += 1;
    }
    match (segments_are_safe(&decoded), encoded_slash) {
        (false, _) => PathCheck::Refused,
        (true, true) => PathCheck::EncodedSlash,
        (true, false) => PathCheck::Plain,
    }
}

/// Whether a request path is [`PathCheck::Plain`]: safe to route with no opt-in.
pub fn path_is_routable(path: &str) -> bool {
    check_path(path) == PathCheck::Plain
}

/// `path` with every `%2F` (either case) decoded: the path an upstream that decodes
/// separators sees. Only meaningful for a path [`check_path`] found
/// [`PathCheck::EncodedSlash`].
pub fn decode_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find('%') {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        if tail.get(1..3).is_some_and(|h| h.eq_ignore_ascii_case("2f")) {
            out.push('/');
            rest = tail.get(3..).unwrap_or("");
        } else {
            out.push('%');
            rest = tail.get(1..).unwrap_or("");
        }
    }
    out.push_str(rest);
    out
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
            "/caf%C3%A9",
        ] {
            assert!(path_is_routable(ok), "{ok}");
        }
        for slash in ["/a%2Fb", "/w%2fadmin/x", "/a%2F%20b"] {
            assert_eq!(check_path(slash), PathCheck::EncodedSlash, "{slash}");
            assert!(!path_is_routable(slash), "{slash}");
        }
        assert_eq!(decode_slashes("/w%2fadmin%2Fx%20y"), "/w/admin/x%20y");
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
            // Path parameters, encoded backslashes, empty paths.
            "/public/..;/admin",
            "/w;x=1/admin",
            "/w/admin;",
            "/w%3B/admin",
            "/w%3b",
            "/w%5Cadmin",
            "/w%5c",
            "",
            "?x",
        ] {
            assert!(!path_is_routable(bad), "{bad}");
        }
    }
}
