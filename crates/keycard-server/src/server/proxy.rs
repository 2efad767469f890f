//! Forwarding to upstreams: a pooled HTTP/1.1 + HTTP/2 (ALPN) client, bodies streamed both
//! ways, hop-by-hop headers removed, credentials never forwarded.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Uri, Version};
use keycard_core::Principal;

use crate::config::Upstream;
use crate::http::forwarded::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::upstream::body::Body;
use crate::upstream::identity;

/// What the gateway knows of the request beyond its headers.
#[derive(Debug)]
pub(crate) struct ForwardContext<'a> {
    /// The TCP peer.
    pub peer: IpAddr,
    /// Whether the peer is a trusted proxy.
    pub peer_trusted: bool,
    /// `http` or `https`, as the client reached keycard.
    pub scheme: &'static str,
    /// This request's id.
    pub request_id: &'a str,
    /// The matched route's prefix.
    pub prefix: &'a str,
    /// The TCP peer's address as a header value (built once per connection).
    pub peer_value: &'a HeaderValue,
    /// `server.trusted_proxies` (how far a trusted peer's `X-Forwarded-For` is believed).
    pub trusted_proxies: &'a [ipnet::IpNet],
    /// `server.allow_underscore_headers`.
    pub underscore_headers: bool,
}

/// A request whose upstream target would not be the path its route was chosen by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unforwardable;

/// Turns the client's request into the upstream's: new URI, cleaned headers (spoofed
/// identity headers gone; the credential too once `principal` proved it). The identity
/// headers of `principal` are added by [`crate::upstream::pool::UpstreamPool::send`], which is given
/// it. `Err` when the upstream target would not be the routed path (answered 400).
pub(crate) fn upstream_request(
    mut req: Request<Body>,
    upstream: &Upstream,
    principal: Option<&Principal>,
    ctx: &ForwardContext<'_>,
) -> Result<Request<Body>, Unforwardable> {
    let Some(pq) = req.uri().path_and_query() else {
        return Err(Unforwardable);
    };
    // The path and the query are taken apart and put together again, never spliced as one
    // text: a target with no path (`?q`) cannot lend its query to the path.
    let (path, query) = (pq.path(), pq.query());
    if !pq.as_str().starts_with('/') || !path.starts_with(ctx.prefix) {
        return Err(Unforwardable);
    }
    let path_and_query = if upstream.base_path.is_empty() {
        // The path as sent, which chose the route: reuse it (a reference-count bump).
        pq.clone()
    } else {
        // nginx `proxy_pass http://host/base/`: the matched prefix is replaced by the base.
        let rest = path.get(ctx.prefix.len()..).unwrap_or("");
        let mut joined = String::with_capacity(
            upstream.base_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1),
        );
        joined.push_str(&upstream.base_path);
        joined.push_str(rest);
        if let Some(q) = query {
            joined.push('?');
            joined.push_str(q);
        }
        http::uri::PathAndQuery::try_from(joined).map_err(|_| Unforwardable)?
    };
    // Checked again as built: the upstream gets a canonical path under its base (a prefix
    // without a trailing `/` under a base with one makes `//`, refused here).
    if path_and_query.path().len()
        != path_and_query.as_str().len() - query.map_or(0, |q| q.len() + 1)
        || !path_and_query
            .path()
            .starts_with(upstream.base_path.as_str())
        || keycard_core::route::check_path(path_and_query.path())
            == keycard_core::route::PathCheck::Refused
    {
        return Err(Unforwardable);
    }
    // Origin-form: the pool makes it absolute for HTTP/2 (`:scheme`, `:authority`).
    let uri = Uri::from(path_and_query);
    // Taken out rather than copied: the client's Host becomes X-Forwarded-Host. The
    // absolute-form's (or HTTP/2 `:authority`) wins over `Host` (RFC 9112 §3.2.2).
    let host = req.headers_mut().remove(header::HOST);
    let original_host = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => host,
    };
    if req.version() == Version::HTTP_2 {
        join_cookies(req.headers_mut());
    }
    remove_own_cookies(req.headers_mut());
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;

    let h = req.headers_mut();
    // Room for what is added below (Host, X-Forwarded-* and X-Request-Id): the map grows
    // once at most. The identity headers are not added here: the pool adds them as it sends
    // (written straight into the head on the HTTP/1.1 path, see [`crate::upstream::pool`]).
    h.reserve(5);
    // The credential proved who the caller is; the upstream needs only the result. A
    // forwarded client certificate is keycard's input, never the upstream's: an upstream
    // that believed one sent through keycard could be fooled.
    let keep = if principal.is_some() {
        0
    } else {
        CREDENTIAL_HEADERS
    };
    let drops = REQUEST_DROPS
        .get(..REQUEST_DROPS.len() - keep)
        .unwrap_or(&REQUEST_DROPS);
    let untrusted: &[HeaderName] = if ctx.peer_trusted { &[] } else { &PROXY_ONLY };
    remove_present(
        h,
        Drops {
            extra: drops,
            untrusted,
            identity: true,
            underscore: !ctx.underscore_headers,
        },
    );
    // HTTP/2 sends `:authority` instead: the pool removes it there.
    h.insert(header::HOST, upstream.host.clone());
    // Whatever happens, the client's own X-Forwarded-For is replaced: a trusted proxy's
    // chain is kept from the address keycard takes for the client's (the one it audits and
    // limits) onwards, and the peer appended; an untrusted peer's is the peer alone.
    let xff = if ctx.peer_trusted && h.contains_key(X_FORWARDED_FOR) {
        crate::http::forwarded::forwarded_for(ctx.trusted_proxies, ctx.peer, h)
            .unwrap_or_else(|| ctx.peer_value.clone())
    } else {
        ctx.peer_value.clone()
    };
    h.insert(X_FORWARDED_FOR, xff);
    if !(ctx.peer_trusted && h.contains_key(X_FORWARDED_PROTO)) {
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(ctx.scheme));
    }
    if !(ctx.peer_trusted && h.contains_key(X_FORWARDED_HOST)) {
        match original_host {
            Some(host) => h.insert(X_FORWARDED_HOST, host),
            None => h.remove(X_FORWARDED_HOST),
        };
    }
    if let Ok(v) = HeaderValue::from_str(ctx.request_id) {
        h.insert(crate::http::request::X_REQUEST_ID, v);
    }
    Ok(req)
}

/// The hop-by-hop headers of RFC 9110 §7.6.1 (and the old `Keep-Alive`/`Proxy-Connection`).
/// `Connection` first: [`remove_present`] reads the names it lists when bit 0 is set.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// How many names at the end of [`REQUEST_DROPS`] carry the client's credential (removed
/// only when keycard verified one: a public route forwards them untouched).
const CREDENTIAL_HEADERS: usize = 4;

/// The headers that carry a client's credential: an application behind keycard is sent the
/// result of checking it, never the credential.
pub(super) fn credential_headers() -> &'static [HeaderName] {
    REQUEST_DROPS
        .get(REQUEST_DROPS.len() - CREDENTIAL_HEADERS..)
        .unwrap_or_default()
}

/// Beyond the hop-by-hop headers, what never reaches an upstream: `Expect` (keycard answers
/// it), a forwarded client certificate, then the credential headers.
static REQUEST_DROPS: [HeaderName; 7] = [
    header::EXPECT,
    crate::authn::mtls::X_FORWARDED_CLIENT_CERT,
    crate::authn::mtls::X_SSL_CLIENT_CERT,
    header::AUTHORIZATION,
    HeaderName::from_static(keycard_core::credential::X_API_KEY),
    HeaderName::from_static("signature"),
    HeaderName::from_static("signature-input"),
];

/// What only a proxy says, removed when the peer is not a trusted one: an upstream
/// reading any of them would take the client's word for its address, its scheme, its host
/// or the path it asked for. (`X-Forwarded-For`, `-Host` and `-Proto` are replaced
/// instead.) The dialects of nginx, Envoy, IIS, Cloudflare, Fastly, Akamai, Rack and the
/// like.
static PROXY_ONLY: [HeaderName; 25] = [
    header::FORWARDED,
    // The client's address.
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("fastly-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("x-forwarded"),
    HeaderName::from_static("forwarded-for"),
    // The scheme.
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-url-scheme"),
    HeaderName::from_static("front-end-https"),
    // The host and port.
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-original-host"),
    HeaderName::from_static("x-host"),
    // The path and method.
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-envoy-original-path"),
    HeaderName::from_static("x-forwarded-uri"),
    HeaderName::from_static("x-original-uri"),
    HeaderName::from_static("x-forwarded-method"),
    HeaderName::from_static("x-original-method"),
];

// The names present are kept as bits of a `u64` in [`remove_present`].
const _: () = assert!(HOP_BY_HOP.len() + REQUEST_DROPS.len() + PROXY_ONLY.len() <= 64);

/// Whether a `Cookie` or `Set-Cookie` pair (`name=value`, after trimming) is one of
/// keycard's own cookies.
fn is_own_cookie(pair: &[u8]) -> bool {
    let name = pair
        .split(|b| *b == b'=')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    crate::oauth::OWN_COOKIES
        .iter()
        .any(|c| c.as_bytes() == name)
}

/// Whether a `Set-Cookie` value would set one of keycard's own cookies: by its name, or as
/// a nameless cookie (`=kc_session=…`), which browsers keep and send back as its value
/// alone — that is, as `kc_session=…`.
fn sets_own_cookie(set_cookie: &[u8]) -> bool {
    let pair = set_cookie
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    is_own_cookie(pair) || pair.strip_prefix(b"=").is_some_and(is_own_cookie)
}

/// Removes keycard's own cookies (the login session, its CSRF token) from the `Cookie`
/// headers an upstream is sent: they are keycard's credentials, not the application's, and
/// every application behind the same host would otherwise receive them.
/// Whether any was removed.
pub(super) fn remove_own_cookies(h: &mut HeaderMap) -> bool {
    // The common case (no cookie of keycard's) costs a scan, no allocation.
    if !h
        .get_all(header::COOKIE)
        .iter()
        .any(|v| v.as_bytes().split(|b| *b == b';').any(is_own_cookie))
    {
        return false;
    }
    let kept: Vec<HeaderValue> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| {
            let pairs: Vec<&[u8]> = v
                .as_bytes()
                .split(|b| *b == b';')
                .filter(|p| !p.trim_ascii().is_empty() && !is_own_cookie(p))
                .map(<[u8]>::trim_ascii)
                .collect();
            (!pairs.is_empty())
                .then(|| HeaderValue::from_bytes(&pairs.join(&b"; "[..])).ok())
                .flatten()
        })
        .collect();
    h.remove(header::COOKIE);
    for v in kept {
        h.append(header::COOKIE, v);
    }
    true
}

/// Removes an upstream's `Set-Cookie` for any of keycard's own cookie names: an application
/// must not replace the login session (a session swap signs the victim in as someone
/// else) or its CSRF token.
pub(crate) fn remove_own_set_cookies(h: &mut HeaderMap) {
    if !h
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| sets_own_cookie(v.as_bytes()))
    {
        return;
    }
    let kept: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !sets_own_cookie(v.as_bytes()))
        .cloned()
        .collect();
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
}

/// Joins HTTP/2 `cookie` crumbs into the one header HTTP/1.1 allows (RFC 9113 §8.2.3).
pub(super) fn join_cookies(h: &mut HeaderMap) {
    let mut crumbs = h.get_all(header::COOKIE).iter();
    if crumbs.next().is_none() || crumbs.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for (i, c) in h.get_all(header::COOKIE).iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(c.as_bytes());
    }
    match HeaderValue::from_bytes(&joined) {
        Ok(v) => {
            h.insert(header::COOKIE, v);
        }
        Err(_) => {
            h.remove(header::COOKIE);
        }
    }
}

/// What [`remove_present`] removes beyond the hop-by-hop headers.
#[derive(Debug, Clone, Copy, Default)]
struct Drops<'a> {
    /// Names removed.
    extra: &'a [HeaderName],
    /// More names removed (the peer is not a trusted proxy).
    untrusted: &'a [HeaderName],
    /// Any `X-Keycard-*` and reserved spelling ([`identity::is_reserved`]).
    identity: bool,
    /// Any name with `_`.
    underscore: bool,
}

/// Holds an upstream's answer (from either client) to the framing rules the hand-written
/// one keeps (RFC 9112 §6.3, RFC 9110 §8.6): no unasked `101`; beside `Transfer-Encoding`,
/// no `Content-Length`; a list of equal lengths passed on as one value. `false`: the
/// answer is faulty (502).
pub(crate) fn one_framing<B>(resp: &mut http::Response<B>) -> bool {
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        return false;
    }
    let h = resp.headers_mut();
    if h.contains_key(header::TRANSFER_ENCODING) {
        h.remove(header::CONTENT_LENGTH);
        return true;
    }
    let mut values = h.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return true;
    };
    if values.next().is_none() && !first.as_bytes().contains(&b',') {
        return true;
    }
    let mut length: Option<u64> = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        for member in v.as_bytes().split(|b| *b == b',') {
            let member = member.trim_ascii();
            let Some(n) = std::str::from_utf8(member)
                .ok()
                .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|m| m.parse::<u64>().ok())
            else {
                return false;
            };
            if length.is_some_and(|l| l != n) {
                return false;
            }
            length = Some(n);
        }
    }
    if let Some(n) = length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    true
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1, and those `Connection` names.
pub(crate) fn remove_hop_by_hop(h: &mut HeaderMap) {
    remove_present(h, Drops::default());
}

/// Removes every hop-by-hop header and header of `drops` that is present, the names a
/// `Connection` header lists, with `identity` any `X-Keycard-*` (a request's: only keycard
/// sets them) and with `underscore` any name with `_`. One pass over the (few) headers
/// present instead of a lookup per name, and no allocation unless a `Connection` header
/// lists more than 256 bytes of names or a name with `_` is present.
fn remove_present(h: &mut HeaderMap, drops: Drops<'_>) {
    let names = || HOP_BY_HOP.iter().chain(drops.extra).chain(drops.untrusted);
    let mut present = 0u64;
    let mut spoofed = false;
    let mut underscored = false;
    for k in h.keys() {
        if let Some(i) = names().position(|n| n == k) {
            present |= 1 << i;
        } else if drops.identity && identity::is_reserved(k.as_str()) {
            spoofed = true;
        }
        underscored |= drops.underscore && k.as_str().contains('_');
    }
    if underscored {
        let named: Vec<HeaderName> = h
            .keys()
            .filter(|k| k.as_str().contains('_'))
            .cloned()
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    if present == 0 && !spoofed {
        return;
    }
    if present & 1 != 0 {
        // `Connection: a, b` makes `a` and `b` hop-by-hop too (RFC 9110 §7.6.1). Copied out
        // first: the names are removed from the map they are read from.
        let mut stack = [0u8; 256];
        let mut heap = Vec::new();
        let mut len = 0usize;
        for v in h.get_all(header::CONNECTION) {
            let v = v.as_bytes();
            if heap.is_empty() && len + v.len() < stack.len() {
                len = append_listed(&mut stack, len, v);
            } else {
                if heap.is_empty() {
                    heap.extend_from_slice(stack.get(..len).unwrap_or_default());
                }
                heap.extend_from_slice(v);
                heap.push(b',');
            }
        }
        let listed = if heap.is_empty() {
            stack.get(..len).unwrap_or_default()
        } else {
            heap.as_slice()
        };
        for name in listed.split(|b| *b == b',') {
            let name = name.trim_ascii();
            if name.is_empty()
                || name.eq_ignore_ascii_case(b"close")
                || name.eq_ignore_ascii_case(b"keep-alive")
            {
                continue;
            }
            // Not a valid header name: nothing by that name can be present.
            if let Ok(name) = std::str::from_utf8(name) {
                h.remove(name);
            }
        }
    }
    for (i, n) in names().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
    if spoofed {
        identity::strip_identity(h);
    }
}

/// Writes `value` and a `,` into `buf` at `at`; the new length.
#[expect(
    clippy::indexing_slicing,
    reason = "the caller checked at + value.len() < buf.len(): a wrong offset is a bug, better \
              a panic in a test than a `Connection` list cut short unnoticed"
)]
fn append_listed(buf: &mut [u8], at: usize, value: &[u8]) -> usize {
    let end = at + value.len();
    buf[at..end].copy_from_slice(value);
    buf[end] = b',';
    end + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keycards_own_cookies_stay_keycards() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("app=1; kc_session=abc.def;kc_csrf=x"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("kc_session=z"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("other=2; kc_sessionx=3"),
        );
        remove_own_cookies(&mut h);
        let left: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(left, ["app=1", "other=2; kc_sessionx=3"]);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        remove_own_cookies(&mut h);
        assert_eq!(h[header::COOKIE], "a=1; b=2");

        let mut h = HeaderMap::new();
        for c in [
            "kc_session=evil; Path=/; HttpOnly",
            "app=1; Path=/",
            " kc_csrf =x",
            "kc_sessions=fine",
            // Nameless: a browser sends it back as `kc_session=A6`.
            "=kc_session=A6; Path=/",
            " = __Host-kc_session=A7",
            "=theme=dark",
        ] {
            h.append(header::SET_COOKIE, HeaderValue::from_static(c));
        }
        remove_own_set_cookies(&mut h);
        let left: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, ["app=1; Path=/", "kc_sessions=fine", "=theme=dark"]);
    }

    #[test]
    fn answers_are_passed_on_with_one_framing() {
        let answer = |status: u16, headers: &[(&str, &str)]| {
            let mut r = http::Response::new(());
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            for (k, v) in headers {
                r.headers_mut().append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            r
        };
        let lengths = |r: &http::Response<()>| -> Vec<String> {
            r.headers()
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        let mut r = answer(200, &[("content-length", "2, 2"), ("content-length", "2")]);
        assert!(one_framing(&mut r));
        assert_eq!(lengths(&r), ["2"]);
        let mut r = answer(
            200,
            &[("content-length", "100"), ("transfer-encoding", "chunked")],
        );
        assert!(one_framing(&mut r));
        assert!(lengths(&r).is_empty());
        let mut r = answer(200, &[("content-length", "7")]);
        assert!(one_framing(&mut r));
        assert_eq!(lengths(&r), ["7"]);
        for bad in [
            answer(101, &[("upgrade", "websocket")]),
            answer(200, &[("content-length", "2, 3")]),
            answer(200, &[("content-length", "2"), ("content-length", "+2")]),
            answer(200, &[("content-length", "2,")]),
        ] {
            let mut bad = bad;
            assert!(!one_framing(&mut bad), "{bad:?}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-end-to-end"));
    }

    #[test]
    fn connection_names_in_any_case_and_beyond_the_stack_copy_go() {
        let mut h = HeaderMap::new();
        let many: Vec<String> = (0..60).map(|i| format!("x-hop-{i}")).collect();
        for n in &many {
            h.insert(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        // > 256 bytes of listed names, split over two Connection headers, mixed case,
        // empty items and a name that is not a valid header name.
        let (a, b) = many.split_at(30);
        h.append(
            header::CONNECTION,
            HeaderValue::from_str(&format!("Close, ,{}", a.join(" , ").to_uppercase())).unwrap(),
        );
        h.append(
            header::CONNECTION,
            HeaderValue::from_str(&format!("{}, bad name", b.join(","))).unwrap(),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    fn forwarded(mut h: HeaderMap, principal: Option<&Principal>) -> HeaderMap {
        h.insert(header::HOST, HeaderValue::from_static("client.example"));
        let mut req = Request::new(Body::empty());
        *req.uri_mut() = Uri::from_static("/api/x?q=1");
        *req.headers_mut() = h;
        let upstream = crate::config::parse_upstream("http://127.0.0.1:9000").unwrap();
        let peer_value = HeaderValue::from_static("192.0.2.7");
        let ctx = ForwardContext {
            peer: "192.0.2.7".parse().unwrap(),
            peer_trusted: false,
            scheme: "http",
            request_id: "rid-1",
            prefix: "/api/",
            peer_value: &peer_value,
            trusted_proxies: &[],
            underscore_headers: false,
        };
        let mut up = upstream_request(req, &upstream, principal, &ctx).unwrap();
        assert_eq!(up.uri(), "/api/x?q=1");
        // What the upstream receives on each of the pool's paths: the head written by hand
        // (HTTP/1.1, no body), and the header map hyper sends (a body, HTTPS, HTTP/2).
        let mut head = Vec::new();
        crate::upstream::h1::write_head(&mut head, &up, principal);
        let mut parsed = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Request::new(&mut parsed);
        assert!(r.parse(&head).unwrap().is_complete());
        assert_eq!(r.path, Some("/api/x?q=1"));
        let mut written = HeaderMap::new();
        for h in r.headers.iter() {
            let name = http::HeaderName::from_bytes(h.name.as_bytes()).unwrap();
            written.append(name, HeaderValue::from_bytes(h.value).unwrap());
        }
        if let Some(p) = principal {
            identity::set_identity(up.headers_mut(), p);
        }
        let mut sent: Vec<_> = up.headers().iter().collect();
        let mut got: Vec<_> = written.iter().collect();
        sent.sort_by_key(|(k, v)| (k.as_str(), v.as_bytes()));
        got.sort_by_key(|(k, v)| (k.as_str(), v.as_bytes()));
        assert_eq!(sent, got, "the two paths send the same headers");
        written
    }

    /// The fast path (nothing else to drop) must still strip a spoofed identity, and a
    /// `Connection` header cannot carry one through either.
    #[test]
    fn a_spoofed_identity_alone_is_still_stripped() {
        let mut h = HeaderMap::new();
        h.insert("x-keycard-subject", HeaderValue::from_static("admin"));
        h.insert(
            "x-keycard-scopes",
            HeaderValue::from_static("keycard:admin"),
        );
        let out = forwarded(h, None);
        assert!(
            out.keys().all(|k| !k.as_str().starts_with("x-keycard-")),
            "{out:?}"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-keycard-subject"),
        );
        h.insert("X-Keycard-Subject", HeaderValue::from_static("admin"));
        let out = forwarded(h, None);
        assert!(
            out.keys().all(|k| !k.as_str().starts_with("x-keycard-")),
            "{out:?}"
        );
        assert!(!out.contains_key(header::CONNECTION));
    }

    /// A trusted proxy's chain is extended; one that cannot be (not visible ASCII) is
    /// replaced by the peer alone, never passed on as sent. (An untrusted peer's chain is
    /// replaced: `credentials_go_only_when_verified_and_identity_cannot_be_spoofed`.)
    #[test]
    fn a_trusted_proxys_chain_is_extended_or_else_replaced() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let via_trusted_proxy = |xff: HeaderValue| {
            let mut req = Request::new(Body::empty());
            *req.uri_mut() = Uri::from_static("/x");
            req.headers_mut().insert("x-forwarded-for", xff);
            let upstream = crate::config::parse_upstream("http://127.0.0.1:9000").unwrap();
            let peer_value = HeaderValue::from_static("10.0.0.2");
            let ctx = ForwardContext {
                peer: "10.0.0.2".parse().unwrap(),
                peer_trusted: true,
                scheme: "https",
                request_id: "rid",
                prefix: "/",
                peer_value: &peer_value,
                trusted_proxies: &trusted,
                underscore_headers: false,
            };
            let up = upstream_request(req, &upstream, None, &ctx).unwrap();
            up.headers()["x-forwarded-for"].clone()
        };
        assert_eq!(
            via_trusted_proxy(HeaderValue::from_static("203.0.113.9")),
            "203.0.113.9, 10.0.0.2"
        );
        let opaque = HeaderValue::from_bytes(b"6.6.6.6\xff").unwrap();
        assert_eq!(via_trusted_proxy(opaque), "10.0.0.2");
    }

    #[test]
    fn credentials_go_only_when_verified_and_identity_cannot_be_spoofed() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        h.insert("x-api-key", HeaderValue::from_static("kc_x"));
        h.insert("signature", HeaderValue::from_static("sig1=:AA==:"));
        h.insert("signature-input", HeaderValue::from_static("sig1=()"));
        h.insert("x-keycard-subject", HeaderValue::from_static("admin"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.9.9.9"));
        h.insert(
            "x-forwarded-client-cert",
            HeaderValue::from_static("Hash=1"),
        );
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let public = forwarded(h.clone(), None);
        for kept in [
            "authorization",
            "x-api-key",
            "signature",
            "signature-input",
            "x-kept",
        ] {
            assert!(public.contains_key(kept), "{kept}");
        }
        let verified = keycard_core::api_key::verify(
            &keycard_core::api_key::CredentialRecord {
                id: "key_1".into(),
                subject: "svc".into(),
                scopes: keycard_core::Scopes::default(),
                expires_at: None,
                revoked_at: None,
                subject_disabled: false,
                identity: None,
                principal: Default::default(),
            },
            0,
        )
        .unwrap();
        let out = forwarded(h, Some(&verified));
        for gone in [
            "authorization",
            "x-api-key",
            "signature",
            "signature-input",
            "x-forwarded-client-cert",
            "expect",
            "te",
        ] {
            assert!(!out.contains_key(gone), "{gone}");
        }
        for gone in ["x-forwarded-client-cert", "expect", "te"] {
            assert!(!public.contains_key(gone), "{gone}");
        }
        for out in [&public, &out] {
            assert_eq!(out["host"], "127.0.0.1:9000");
            assert_eq!(out["x-forwarded-host"], "client.example");
            // An untrusted peer's X-Forwarded-For is replaced, not extended.
            assert_eq!(out["x-forwarded-for"], "192.0.2.7");
            assert_eq!(out["x-forwarded-proto"], "http");
            assert_eq!(out["x-request-id"], "rid-1");
            assert_eq!(out["x-kept"], "1");
        }
        assert!(!public.contains_key("x-keycard-subject"));
        assert_eq!(out["x-keycard-subject"], "svc");
        assert_eq!(out["x-keycard-method"], "api_key");
    }
}
