//! The gateway's upstream connections: one pool per worker thread, on hyper's connection
//! API.
//!
//! Why not hyper-util's pooled `Client`: per request it clones itself and its connector,
//! boxes the request future, hashes the pool key, inserts connection info into the response
//! extensions (a map and two boxes) and formats a `Host` header — a fifth of the allocations
//! and a visible share of the CPU of a proxied request. Here a request takes an idle
//! connection from a short list (one uncontended lock), sends, and puts it back.
//!
//! - A request without a body to an `http://` upstream is written and answered by the
//!   request's own task, on a connection of its own list ([`crate::upstream::h1`]): no connection
//!   task, no channels. Other requests go through hyper's connection API.
//! - HTTP/1.1 connections are used one request at a time, most recently used first; one
//!   whose response body is still streaming goes back when it is done.
//! - `https://` upstreams negotiate HTTP/2 or HTTP/1.1 by ALPN (through the same
//!   rustls connector as every upstream connection, system roots); an HTTP/2 connection is shared.
//! - A request that was never written (the upstream closed the idle connection as it was
//!   taken) is retried on another connection, the last time on a new one.
//! - Idle connections are closed after [`IDLE_TIMEOUT`] (checked when connections are taken
//!   and returned, and by [`UpstreamPool::sweep`] every half of it); at most [`MAX_IDLE`]
//!   are kept per upstream and worker.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version, header};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use keycard_core::Principal;
use tower_service::Service as _;

use crate::config::Upstream;
use crate::upstream::body::Body;
use crate::upstream::h1;

/// An idle connection unused this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream (and worker), at most.
pub(crate) const MAX_IDLE: usize = 1024;
/// Tries of one request: on idle connections, then on a new one.
const ATTEMPTS: usize = 3;

/// Why a request got no answer from the upstream.
pub(crate) type UpstreamError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

#[derive(Debug)]
struct Idle {
    tx: Sender,
    since: Instant,
}

/// The connections of one upstream.
#[derive(Debug)]
struct Host {
    scheme: Scheme,
    authority: Authority,
    /// hyper's connections.
    idle: VecDeque<Idle>,
    /// Connections spoken to by [`crate::upstream::h1`], with when each was last used.
    plain: VecDeque<(Box<h1::Conn>, Instant)>,
}

impl Host {
    fn new(scheme: &Scheme, authority: &Authority) -> Self {
        Host {
            scheme: scheme.clone(),
            authority: authority.clone(),
            idle: VecDeque::new(),
            plain: VecDeque::new(),
        }
    }

    /// Closes the connections idle longer than [`IDLE_TIMEOUT`] at `now` (the oldest are
    /// at the front of each list).
    fn expire(&mut self, now: Instant) {
        let expired = |since: Instant| now.saturating_duration_since(since) > IDLE_TIMEOUT;
        while self.idle.front().is_some_and(|i| expired(i.since)) {
            self.idle.pop_front();
        }
        while self.plain.front().is_some_and(|(_, since)| expired(*since)) {
            self.plain.pop_front();
        }
    }
}

impl h1::IdleConns for Mutex<Vec<Host>> {
    fn put(&self, scheme: &Scheme, authority: &Authority, conn: Box<h1::Conn>) {
        let Ok(mut hosts) = self.lock() else {
            return;
        };
        let now = Instant::now();
        let Some(host) = host_entry(&mut hosts, scheme, authority) else {
            return;
        };
        host.expire(now);
        if host.plain.len() < MAX_IDLE {
            host.plain.push_back((conn, now));
        }
    }
}

/// `hosts`' entry for the upstream, added if missing.
fn host_entry<'a>(
    hosts: &'a mut Vec<Host>,
    scheme: &Scheme,
    authority: &Authority,
) -> Option<&'a mut Host> {
    match hosts.iter().position(|h| same_host(h, scheme, authority)) {
        Some(i) => hosts.get_mut(i),
        None => {
            hosts.push(Host::new(scheme, authority));
            hosts.last_mut()
        }
    }
}

type Hosts = Arc<Mutex<Vec<Host>>>;

/// A worker's upstream connections.
#[derive(Debug)]
pub(crate) struct UpstreamPool {
    connector: HttpsConnector<HttpConnector>,
    hosts: Hosts,
}

impl UpstreamPool {
    /// A pool that opens connections with `connector` (see [`crate::upstream::client::connector`]).
    pub(crate) fn new(connector: HttpsConnector<HttpConnector>) -> Self {
        Self {
            connector,
            hosts: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Idle connections held for `upstream` (tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn idle_count(&self, upstream: &Upstream) -> usize {
        self.hosts
            .lock()
            .map(|hosts| {
                hosts
                    .iter()
                    .find(|h| is_host(h, upstream))
                    .map_or(0, |h| h.idle.len() + h.plain.len())
            })
            .unwrap_or(0)
    }

    /// Closes the connections idle longer than [`IDLE_TIMEOUT`] at `now` (an upstream that
    /// gets no more traffic does not keep them open forever).
    pub(crate) fn prune(&self, now: Instant) {
        let Ok(mut hosts) = self.hosts.lock() else {
            return;
        };
        for host in hosts.iter_mut() {
            host.idle
                .retain(|i| now.saturating_duration_since(i.since) <= IDLE_TIMEOUT);
            host.plain
                .retain(|(_, since)| now.saturating_duration_since(*since) <= IDLE_TIMEOUT);
        }
        hosts.retain(|h| !h.idle.is_empty() || !h.plain.is_empty());
    }

    /// Prunes every `IDLE_TIMEOUT / 2` until the pool is dropped; spawn it on the runtime
    /// that uses the pool.
    pub(crate) async fn sweep(pool: std::sync::Weak<UpstreamPool>) {
        loop {
            tokio::time::sleep(IDLE_TIMEOUT / 2).await;
            match pool.upgrade() {
                Some(p) => p.prune(Instant::now()),
                None => return,
            }
        }
    }

    /// Sends `req` (origin-form URI, `Host` set, made by [`crate::server::proxy::upstream_request`])
    /// to `upstream` with the identity headers of `identity` (reference §5); the response head,
    /// its body to be read.
    pub(crate) async fn send(
        &self,
        mut req: Request<Body>,
        upstream: &Upstream,
        identity: Option<&Principal>,
    ) -> Result<Response<Body>, UpstreamError> {
        if upstream.scheme == Scheme::HTTP && req.body().is_end_stream() {
            self.send_plain(req, upstream, identity).await
        } else {
            if let Some(p) = identity {
                crate::upstream::identity::set_identity(req.headers_mut(), p);
            }
            // Boxed: the hot path's future (moved as it is polled) stays small.
            Ok(Box::pin(self.send_hyper(req, upstream))
                .await?
                .map(Body::streamed))
        }
    }

    /// A request without a body, over HTTP/1.1 spoken by this task ([`crate::upstream::h1`]).
    async fn send_plain(
        &self,
        mut req: Request<Body>,
        upstream: &Upstream,
        identity: Option<&Principal>,
    ) -> Result<Response<Body>, UpstreamError> {
        req.headers_mut()
            .entry(header::HOST)
            .or_insert_with(|| upstream.host.clone());
        *req.version_mut() = Version::HTTP_11;
        let idempotent = is_idempotent(req.method());
        let mut last: Option<UpstreamError> = None;
        for attempt in 0..ATTEMPTS {
            let idle = if attempt + 1 < ATTEMPTS {
                self.checkout_plain(upstream)
            } else {
                None
            };
            let reused = idle.is_some();
            let mut conn = match idle {
                Some(conn) => conn,
                None => Box::pin(self.connect_plain(upstream)).await?,
            };
            match conn.exchange(&req, identity).await {
                Ok((head, framing)) => {
                    let home = h1::Home {
                        idle: self.hosts.clone(),
                        scheme: upstream.scheme.clone(),
                        authority: upstream.authority.clone(),
                    };
                    let body = h1::RecvBody::new(conn, framing, home);
                    return Ok(head.map(|()| Body::plain(body)));
                }
                // A reused connection the upstream had closed: send again when the request
                // cannot have been acted on, or acting twice is harmless (RFC 9110 §9.2.2).
                Err(h1::Failure::NoAnswer { written, error })
                    if reused && (!written || idempotent) =>
                {
                    last = Some(Box::new(error));
                }
                Err(f) => return Err(Box::new(std::io::Error::from(f))),
            }
        }
        Err(last.unwrap_or_else(|| "no connection to the upstream".into()))
    }

    /// The most recently used idle [`crate::upstream::h1`] connection to `upstream` that can take a
    /// request; expired or closed ones met on the way are dropped (which closes them).
    fn checkout_plain(&self, upstream: &Upstream) -> Option<Box<h1::Conn>> {
        let mut hosts = self.hosts.lock().ok()?;
        let host = hosts.iter_mut().find(|h| is_host(h, upstream))?;
        let now = Instant::now();
        while let Some((mut conn, since)) = host.plain.pop_back() {
            if now.saturating_duration_since(since) <= IDLE_TIMEOUT && conn.is_usable() {
                return Some(conn);
            }
        }
        None
    }

    /// Opens a TCP connection for [`crate::upstream::h1`] (the connector's resolver, timeout and
    /// socket options).
    async fn connect_plain(&self, upstream: &Upstream) -> Result<Box<h1::Conn>, UpstreamError> {
        let uri = origin_uri(upstream)?;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
        match connector.call(uri).await? {
            MaybeHttpsStream::Http(io) => {
                tracing::debug!(upstream = %upstream.authority, "opened an upstream connection");
                Ok(Box::new(h1::Conn::new(io.into_inner())))
            }
            MaybeHttpsStream::Https(_) => Err("an http:// upstream answered with TLS".into()),
        }
    }

    /// Sends `req` through hyper's connection API; the response head.
    async fn send_hyper(
        &self,
        mut req: Request<Body>,
        upstream: &Upstream,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let origin = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut last: Option<UpstreamError> = None;
        // One clock read a request: idle times are kept to well under a second.
        let now = Instant::now();
        for attempt in 0..ATTEMPTS {
            let idle = if attempt + 1 < ATTEMPTS {
                checkout(&self.hosts, upstream, now)
            } else {
                None
            };
            let reused = idle.is_some();
            let mut tx = match idle {
                Some(tx) => tx,
                // Boxed: the handshakes' state would otherwise make every request's future
                // (moved on each poll) as large as a TLS connect.
                None => Box::pin(self.connect(upstream)).await?,
            };
            let sent = match &mut tx {
                Sender::H1(s) => {
                    *req.uri_mut() = Uri::from(origin.clone());
                    *req.version_mut() = Version::HTTP_11;
                    req.headers_mut()
                        .entry(header::HOST)
                        .or_insert_with(|| upstream.host.clone());
                    s.try_send_request(req).await
                }
                Sender::H2(s) => {
                    // HTTP/2 carries the target as `:scheme` and `:authority`.
                    let mut parts = http::uri::Parts::default();
                    parts.scheme = Some(upstream.scheme.clone());
                    parts.authority = Some(upstream.authority.clone());
                    parts.path_and_query = Some(origin.clone());
                    *req.uri_mut() = Uri::from_parts(parts)?;
                    *req.version_mut() = Version::HTTP_2;
                    req.headers_mut().remove(header::HOST);
                    s.try_send_request(req).await
                }
            };
            match sent {
                Ok(resp) => {
                    checkin(&self.hosts, upstream, tx, now);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // Never written: safe to send again, on another connection.
                    Some(back) if reused => {
                        req = back;
                        last = Some(Box::new(e.into_error()));
                    }
                    _ => return Err(Box::new(e.into_error())),
                },
            }
        }
        Err(last.unwrap_or_else(|| "no connection to the upstream".into()))
    }

    /// Opens a connection (TCP, and TLS with ALPN for `https://`).
    async fn connect(&self, upstream: &Upstream) -> Result<Sender, UpstreamError> {
        let uri = origin_uri(upstream)?;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
        let io = connector.call(uri).await?;
        let h2 = io.connected().is_negotiated_h2();
        tracing::debug!(
            upstream = %upstream.authority,
            protocol = if h2 { "h2" } else { "http/1.1" },
            "opened an upstream connection"
        );
        if h2 {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
                }
            });
            Ok(Sender::H2(tx))
        } else {
            let (tx, conn) = http1::Builder::new().handshake(io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
            });
            Ok(Sender::H1(tx))
        }
    }
}

/// `scheme://authority/` of the upstream, what the connector connects to.
fn origin_uri(upstream: &Upstream) -> Result<Uri, http::Error> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(upstream.scheme.clone());
    parts.authority = Some(upstream.authority.clone());
    parts.path_and_query = Some(PathAndQuery::from_static("/"));
    Ok(Uri::from_parts(parts)?)
}

/// RFC 9110 §9.2.2: methods whose repetition has the effect of one request.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn is_host(h: &Host, upstream: &Upstream) -> bool {
    same_host(h, &upstream.scheme, &upstream.authority)
}

/// Byte-exact: `Authority`'s own `==` ignores case byte by byte, a cost on every request for
/// nothing — both sides come from the same configured URL, and at worst two spellings of one
/// host keep two lists.
fn same_host(h: &Host, scheme: &Scheme, authority: &Authority) -> bool {
    h.authority.as_str() == authority.as_str() && h.scheme.as_str() == scheme.as_str()
}

/// An idle connection to `upstream` that can take a request now, if any. Most recently used
/// first; closed or expired ones met on the way are dropped (which closes them).
fn checkout(hosts: &Hosts, upstream: &Upstream, now: Instant) -> Option<Sender> {
    let mut hosts = hosts.lock().ok()?;
    let host = hosts.iter_mut().find(|h| is_host(h, upstream))?;
    while let Some(idle) = host.idle.pop_back() {
        if now.saturating_duration_since(idle.since) > IDLE_TIMEOUT {
            continue;
        }
        match idle.tx {
            Sender::H1(tx) if tx.is_ready() => return Some(Sender::H1(tx)),
            Sender::H2(tx) if !tx.is_closed() => {
                let shared = tx.clone();
                host.idle.push_back(Idle {
                    tx: Sender::H2(tx),
                    since: now,
                });
                return Some(Sender::H2(shared));
            }
            _ => {}
        }
    }
    None
}

/// Puts a connection back after a response head arrived: now when it can take another
/// request (the whole response was read), else once its response body is done.
fn checkin(hosts: &Hosts, upstream: &Upstream, tx: Sender, now: Instant) {
    match tx {
        // The shared HTTP/2 connection stays in the list; this handle is a clone.
        Sender::H2(_) => {
            let held = hosts
                .lock()
                .map(|hosts| {
                    hosts.iter().filter(|h| is_host(h, upstream)).any(|h| {
                        h.idle
                            .iter()
                            .any(|i| matches!(&i.tx, Sender::H2(s) if !s.is_closed()))
                    })
                })
                .unwrap_or(true);
            if !held {
                put(hosts, upstream, tx, now);
            }
        }
        Sender::H1(tx) if tx.is_ready() => put(hosts, upstream, Sender::H1(tx), now),
        Sender::H1(mut tx) if !tx.is_closed() => {
            let (hosts, scheme, authority) = (
                hosts.clone(),
                upstream.scheme.clone(),
                upstream.authority.clone(),
            );
            tokio::spawn(async move {
                if tx.ready().await.is_ok() {
                    put_key(&hosts, &scheme, &authority, Sender::H1(tx), Instant::now());
                }
            });
        }
        Sender::H1(_) => {}
    }
}

fn put(hosts: &Hosts, upstream: &Upstream, tx: Sender, now: Instant) {
    put_key(hosts, &upstream.scheme, &upstream.authority, tx, now);
}

fn put_key(hosts: &Hosts, scheme: &Scheme, authority: &Authority, tx: Sender, now: Instant) {
    let Ok(mut hosts) = hosts.lock() else {
        return;
    };
    let Some(host) = host_entry(&mut hosts, scheme, authority) else {
        return;
    };
    host.expire(now);
    if host.idle.len() < MAX_IDLE {
        host.idle.push_back(Idle { tx, since: now });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A raw HTTP/1.1 upstream: answers every request with `body`, keeps the connection
    /// unless `close_after_each` (then it closes right after the answer, though the answer
    /// did not say so: what an upstream timing out its idle connections looks like).
    async fn upstream(body: Vec<u8>, close_after_each: bool) -> (Upstream, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let body = Arc::new(body);
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Some(head) = h1::read_request_head(&mut s, &mut buf).await {
                        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buf.len() < length {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..length);
                        let head =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                        if s.write_all(head.as_bytes()).await.is_err()
                            || s.write_all(&body).await.is_err()
                        {
                            return;
                        }
                        if close_after_each {
                            return;
                        }
                    }
                });
            }
        });
        let up = crate::config::parse_upstream(&format!("http://{addr}")).unwrap();
        (up, accepted)
    }

    fn pool() -> UpstreamPool {
        UpstreamPool::new(crate::upstream::client::connector().unwrap())
    }

    fn get(path: &'static str) -> Request<Body> {
        let mut r = Request::new(Body::empty());
        *r.uri_mut() = Uri::from_static(path);
        r
    }

    /// A request with a body: sent through hyper, not [`crate::upstream::h1`].
    fn post(path: &'static str) -> Request<Body> {
        let mut r = Request::new(Body::from_bytes("data"));
        *r.method_mut() = Method::POST;
        *r.uri_mut() = Uri::from_static(path);
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from_static("4"));
        r
    }

    /// Both ways a request is sent: without a body ([`crate::upstream::h1`]) and with one (hyper).
    const KINDS: [fn(&'static str) -> Request<Body>; 2] = [get, post];

    async fn read_all(resp: Response<Body>) -> Vec<u8> {
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        for kind in KINDS {
            let (up, accepted) = upstream(b"ok".to_vec(), false).await;
            let pool = pool();
            for _ in 0..20 {
                let resp = pool.send(kind("/x"), &up, None).await.unwrap();
                assert_eq!(read_all(resp).await, b"ok");
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 1);
            assert_eq!(pool.idle_count(&up), 1);
        }
    }

    #[tokio::test]
    async fn a_connection_whose_body_streams_comes_back_when_the_body_is_read() {
        let big = vec![b'a'; 4 * 1024 * 1024];
        for kind in KINDS {
            let (up, accepted) = upstream(big.clone(), false).await;
            let pool = pool();
            for _ in 0..3 {
                let resp = pool.send(kind("/big"), &up, None).await.unwrap();
                assert_eq!(pool.idle_count(&up), 0, "lent out while its body is unread");
                assert_eq!(read_all(resp).await.len(), big.len());
                // hyper's connection returns from a background wait once its body is done.
                for _ in 0..100 {
                    if pool.idle_count(&up) == 1 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_then_reuse_them() {
        for kind in KINDS {
            let (up, accepted) = upstream(b"ok".to_vec(), false).await;
            let pool = Arc::new(pool());
            for _ in 0..3 {
                let mut tasks = Vec::new();
                for _ in 0..8 {
                    let (pool, up) = (pool.clone(), up.clone());
                    tasks.push(tokio::spawn(async move {
                        read_all(pool.send(kind("/x"), &up, None).await.unwrap()).await
                    }));
                }
                for t in tasks {
                    assert_eq!(t.await.unwrap(), b"ok");
                }
            }
            assert!(
                accepted.load(Ordering::SeqCst) <= 8,
                "connections were not reused"
            );
        }
    }

    #[tokio::test]
    async fn connections_the_upstream_closed_are_not_used_again() {
        for kind in KINDS {
            let (up, accepted) = upstream(b"ok".to_vec(), true).await;
            let pool = pool();
            for i in 0..30 {
                let resp = pool
                    .send(kind("/x"), &up, None)
                    .await
                    .unwrap_or_else(|e| panic!("request {i}: {e}"));
                assert_eq!(read_all(resp).await, b"ok");
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 30);
        }
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        for kind in KINDS {
            let (up, accepted) = upstream(b"ok".to_vec(), false).await;
            let pool = pool();
            read_all(pool.send(kind("/x"), &up, None).await.unwrap()).await;
            pool.prune(Instant::now());
            assert_eq!(pool.idle_count(&up), 1, "a fresh connection was closed");
            pool.prune(Instant::now() + IDLE_TIMEOUT + Duration::from_secs(1));
            assert_eq!(pool.idle_count(&up), 0);
            read_all(pool.send(kind("/x"), &up, None).await.unwrap()).await;
            assert_eq!(accepted.load(Ordering::SeqCst), 2);
        }
    }

    #[tokio::test]
    async fn an_upstream_that_is_down_is_an_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let up = crate::config::parse_upstream(&format!("http://127.0.0.1:{port}")).unwrap();
        for kind in KINDS {
            assert!(pool().send(kind("/x"), &up, None).await.is_err());
        }
    }

    #[test]
    fn host_is_the_authority_without_the_default_port() {
        let host = |u: &str| crate::config::parse_upstream(u).unwrap().host;
        assert_eq!(host("http://a.example:80/base"), "a.example");
        assert_eq!(host("https://a.example:443"), "a.example");
        assert_eq!(host("http://a.example:8080"), "a.example:8080");
        assert_eq!(host("https://[::1]:8443"), "[::1]:8443");
    }
}
