//! What keycard knows of a request before judging it, the same for every entry point: the
//! connection it came on, its request id, its client's origin behind trusted proxies, whether
//! its head is well formed, and the facts a verifier reads.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Request, Uri};
use hyper::body::Incoming;

use crate::authn::RequestFacts;

/// What the listener knows about a connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether it arrived over TLS.
    pub tls: bool,
    /// The client certificate of the TLS handshake.
    pub cert: Option<Arc<crate::tls::PeerCert>>,
    /// The peer's address as a header value (`X-Forwarded-For`), built once per connection.
    pub peer_value: HeaderValue,
}

impl ConnInfo {
    /// A connection from `peer`.
    pub(crate) fn new(peer: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            tls,
            cert: None,
            peer_value: HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        }
    }
}

/// `X-Request-Id`.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Where every entry point — the gateway, forward-auth, the admin API, the tower layer —
/// takes its request ids: a trusted proxy's `X-Request-Id` when it is a plain token, else
/// `{prefix}-{n in hex}`, the prefix random per start and `n` counting up.
#[derive(Debug)]
pub(crate) struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        Self {
            prefix: keycard_core::random_base62(10).unwrap_or_else(|_| "kc".into()),
            next: AtomicU64::new(0),
        }
    }

    /// The id of a request with `headers` from a peer that is (or is not) a trusted proxy.
    pub(crate) fn assign(&self, headers: &HeaderMap, peer_trusted: bool) -> RequestId {
        if peer_trusted
            && let Some(v) = headers.get(X_REQUEST_ID)
            && let Some(id) = RequestId::from_proxy(v.as_bytes())
        {
            return id;
        }
        RequestId::generated(&self.prefix, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// A request id, held inline: assigning one costs no allocation.
#[derive(Clone, Copy)]
pub(crate) struct RequestId {
    buf: [u8; RequestId::MAX],
    len: usize,
}

impl RequestId {
    /// The longest id accepted from a trusted proxy.
    const MAX: usize = 128;
    /// The longest prefix of a generated id: room is left for `-` and 16 hex digits.
    const MAX_PREFIX: usize = Self::MAX - 17;

    /// A proxy's id when it is 1–128 of `[A-Za-z0-9._:-]`.
    pub(crate) fn from_proxy(v: &[u8]) -> Option<Self> {
        let plain = v
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !(1..=Self::MAX).contains(&v.len()) || !plain {
            return None;
        }
        let mut id = Self::empty();
        id.push(v);
        Some(id)
    }

    /// `{prefix}-{n in hex}` (the prefix cut to [`Self::MAX_PREFIX`] bytes).
    pub(crate) fn generated(prefix: &str, n: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = Self::empty();
        let prefix = prefix.as_bytes();
        id.push(prefix.get(..Self::MAX_PREFIX).unwrap_or(prefix));
        id.push(b"-");
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
        for i in (0..digits).rev() {
            let nibble = ((n >> (4 * i)) & 0xf) as usize;
            id.push(HEX.get(nibble..=nibble).unwrap_or_default());
        }
        id
    }

    fn empty() -> Self {
        Self {
            buf: [0; Self::MAX],
            len: 0,
        }
    }

    /// Appends `bytes`; the callers keep the total within [`Self::MAX`].
    #[expect(
        clippy::indexing_slicing,
        reason = "a proxy's id is at most MAX bytes, a generated one MAX_PREFIX + 17: an \
                  overrun is a bug here, better a panic than an id cut short unnoticed"
    )]
    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// The id.
    pub(crate) fn as_str(&self) -> &str {
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the authenticator needs to know of a request that arrived at keycard directly (the
/// gateway, the admin API); forward-auth builds its own from the forwarded headers.
pub(crate) fn request_facts<'a, B>(
    req: &'a Request<B>,
    peer_trusted: bool,
    tls: bool,
    ip: IpAddr,
    body: Option<&'a [u8]>,
    cert: Option<&'a crate::tls::PeerCert>,
) -> RequestFacts<'a> {
    let (scheme, authority) = client_origin(req.headers(), req.uri(), peer_trusted, tls);
    RequestFacts {
        method: req.method().as_str(),
        target: req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/"),
        scheme,
        authority,
        headers: req.headers(),
        ip,
        body,
        body_unread: false,
        cert,
    }
}

/// `scheme://host[:port]` of an absolute URL (what a browser sends as `Origin`).
pub(crate) fn origin_of(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(u) => match (u.scheme_str(), u.authority()) {
            (Some(s), Some(a)) => format!("{s}://{a}"),
            _ => url.to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

/// Whether a request is one HTTP allows (RFC 9112 §3.2): an HTTP/1.1 request has exactly
/// one `Host`, no request has two, and a `Host` is a valid `uri-host[:port]`. For HTTP/2
/// a `Host` beside `:authority` must name the same (RFC 9113 §8.3.1). The absolute-form's
/// authority (or `:authority`) is held to the same grammar: no user info.
pub(crate) fn well_formed<B>(req: &Request<B>) -> bool {
    if req
        .uri()
        .authority()
        .is_some_and(|a| !valid_host(a.as_str().as_bytes()))
    {
        return false;
    }
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return false;
    }
    match host {
        None => req.version() != http::Version::HTTP_11,
        Some(h) => {
            valid_host(h.as_bytes())
                && (req.version() != http::Version::HTTP_2
                    || req
                        .uri()
                        .authority()
                        .is_none_or(|a| a.as_str().as_bytes() == h.as_bytes()))
        }
    }
}

/// The host a request is for: the authority of an absolute-form target (RFC 9112 §3.2.2),
/// else `Host` (HTTP/2's `:authority` is the URI's authority).
pub(crate) fn request_host(req: &Request<Incoming>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok()),
    }
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2): a reg-name of unreserved, sub-delims and
/// percent-encoded characters, or an IP literal in brackets; no user info.
pub(crate) fn valid_host(v: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = v.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|b| *b == b']') else {
            return false;
        };
        let (lit, after) = rest.split_at(end);
        if lit.is_empty()
            || !lit
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        match after.get(1..).unwrap_or_default() {
            [] => return true,
            [b':', port @ ..] => (&b"x"[..], port),
            _ => return false,
        }
    } else {
        match v.iter().position(|b| *b == b':') {
            Some(i) => (
                v.get(..i).unwrap_or_default(),
                v.get(i + 1..).unwrap_or_default(),
            ),
            None => (v, &b""[..]),
        }
    };
    !host.is_empty()
        && host.len() <= 253
        && host.iter().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        })
        && port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(port)
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p <= 65535)
}

/// The scheme and authority the client used: a trusted proxy's `X-Forwarded-Proto` and
/// `X-Forwarded-Host` when `believe_forwarded`, else the connection and `Host` (or the
/// HTTP/2 `:authority`).
pub(crate) fn client_origin<'a>(
    headers: &'a HeaderMap,
    uri: &'a Uri,
    believe_forwarded: bool,
    tls: bool,
) -> (&'a str, &'a str) {
    let forwarded = |name: HeaderName| {
        believe_forwarded
            .then(|| headers.get(name).and_then(|v| v.to_str().ok()))
            .flatten()
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    let scheme = match forwarded(crate::http::forwarded::X_FORWARDED_PROTO) {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ if tls => "https",
        _ => "http",
    };
    // The absolute-form's authority wins over `Host` (RFC 9112 §3.2.2).
    let authority = forwarded(crate::http::forwarded::X_FORWARDED_HOST)
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or("");
    (scheme, authority)
}

/// Whether the credential may sign the body: a Digest `qop=auth-int`, or an RFC 9421
/// signature on a request that may carry a body. Decided from the credential exactly as the
/// verifier will read it ([`keycard_core::credential::presented`], then the parsed `qop`),
/// so that the body is never left unread for a credential that is then checked against one.
/// `may_have_body`: the body is not known to be empty — an HTTP/2 request need send neither
/// `Content-Length` nor `Transfer-Encoding`, so the headers alone cannot tell. A false
/// positive only reads an empty body.
pub(crate) fn wants_body(headers: &HeaderMap, may_have_body: bool) -> bool {
    use keycard_core::credential::Presented;
    match keycard_core::credential::presented(headers) {
        Presented::Signature { .. } => may_have_body,
        Presented::Digest(params) => keycard_core::digest::parse(params)
            .is_some_and(|r| r.qop == keycard_core::digest::Qop::AuthInt),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::RequestId;

    #[test]
    fn digest_auth_int_is_told_from_the_parsed_qop() {
        let with = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
            super::wants_body(&h, true)
        };
        let params = |qop: &str, user: &str| {
            format!(
                r#"Digest username="{user}", realm="r", nonce="n", uri="/a", qop={qop}, nc=00000001, cnonce="c", response="x""#
            )
        };
        assert!(with(&params("auth-int", "u")));
        assert!(with(&params(r#""auth\-int""#, "u")));
        assert!(!with(&params("auth", "auth-int")));
        assert!(!with(&params("auth", "u")));
        assert!(!with("Basic YTpi"));
        assert!(!with("Digest auth-int"));
        // Padded so that the untrimmed text is too long to parse: the verifier trims it, and
        // so does this.
        let padded = format!(
            "Digest {}{}",
            " ".repeat(400),
            &params("auth-int", "u")[7..]
        );
        assert!(with(&padded));
        // An RFC 9421 signature on a request that may have a body.
        let mut h = http::HeaderMap::new();
        h.insert("signature-input", "sig1=()".parse().unwrap());
        h.insert("signature", "sig1=:AAAA:".parse().unwrap());
        assert!(super::wants_body(&h, true));
        assert!(!super::wants_body(&h, false));
    }

    #[test]
    fn hosts_are_uri_host_and_port_only() {
        for ok in [
            "a.example",
            "a.example:8080",
            "a.example:",
            "[::1]",
            "[::1]:443",
            "127.0.0.1:80",
            "xn--caf-dma.example",
            "a_b",
        ] {
            assert!(super::valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "user@a.example",
            "a example",
            "a.example:80x",
            "a.example:99999",
            "a.example:123456",
            "[::1",
            "[::1]x",
            "[zz]",
            "a/b",
            "a\\b",
            ":80",
        ] {
            assert!(!super::valid_host(bad.as_bytes()), "{bad}");
        }
    }

    /// Every entry point takes its id here: a trusted proxy's plain one is kept, anyone
    /// else's is not, and generated ones count up under one prefix.
    #[test]
    fn ids_come_from_a_trusted_proxy_or_the_counter() {
        use super::{RequestIds, X_REQUEST_ID};
        let ids = RequestIds::new();
        let mut h = http::HeaderMap::new();
        h.insert(X_REQUEST_ID, http::HeaderValue::from_static("edge-42"));
        assert_eq!(ids.assign(&h, true).as_str(), "edge-42");
        let first = ids.assign(&h, false);
        assert_ne!(
            first.as_str(),
            "edge-42",
            "an untrusted peer's id is not taken"
        );
        let (prefix, n) = first.as_str().rsplit_once('-').unwrap();
        assert_eq!(n, "0");
        assert_eq!(
            ids.assign(&http::HeaderMap::new(), true).as_str(),
            format!("{prefix}-1")
        );
        h.insert(X_REQUEST_ID, http::HeaderValue::from_static("two words"));
        assert_eq!(ids.assign(&h, true).as_str(), format!("{prefix}-2"));
    }

    #[test]
    fn generated_ids_are_prefix_dash_hex() {
        for n in [0u64, 1, 15, 16, 255, 0xdead_beef, u64::MAX] {
            assert_eq!(
                RequestId::generated("AbC123xyz0", n).as_str(),
                format!("AbC123xyz0-{n:x}")
            );
        }
    }

    #[test]
    fn a_proxy_id_is_kept_only_when_it_is_a_plain_token() {
        let ok = "req-1_2.3:4".repeat(12);
        assert_eq!(
            RequestId::from_proxy(&ok.as_bytes()[..128])
                .unwrap()
                .as_str(),
            &ok[..128]
        );
        for bad in [
            &b""[..],
            &[b'a'; 129][..],
            b"a b",
            b"a\"b",
            b"a\r\nX-Keycard-Subject: admin",
            "Jos\u{e9}".as_bytes(),
        ] {
            assert!(RequestId::from_proxy(bad).is_none());
        }
    }
}
