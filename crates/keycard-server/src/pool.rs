//! The gateway's upstream connections: one pool per worker thread, on hyper's connection
//! API.
//!
//! Why not hyper-util's pooled `Client`: per request it clones itself and its connector,
//! boxes the request future, hashes the pool key, inserts connection info into the response
//! extensions (a map and two boxes) and formats a `Host` header — a fifth of the allocations
//! and a visible share of the CPU of a proxied request. Here a request takes an idle
//! connection from a short list (one uncontended lock), sends, and puts it back.
//!
//! - HTTP/1.1 connections are used one request at a time, most recently used first; one
//!   whose response body is still streaming goes back when it is done.
//! - `https://` upstreams negotiate HTTP/2 or HTTP/1.1 by ALPN (through the same
//!   rustls connector as before, system roots); an HTTP/2 connection is shared.
//! - A request that was never written (the upstream closed the idle connection as it was
//!   taken) is retried on another connection, the last time on a new one.
//! - Idle connections are closed after [`IDLE_TIMEOUT`] (checked when connections are taken
//!   and returned, and by [`UpstreamPool::sweep`] every half of it); at most [`MAX_IDLE`]
//!   are kept per upstream and worker.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service as _;

use crate::body::Body;
use crate::config::Upstream;

/// An idle connection unused this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream (and worker), at most.
pub const MAX_IDLE: usize = 1024;
/// Tries of one request: on idle connections, then on a new one.
const ATTEMPTS: usize = 3;

/// Why a request got no answer from the upstream.
pub type UpstreamError = Box<dyn std::error::Error + Send + Sync>;

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
    idle: VecDeque<Idle>,
}

type Hosts = Arc<Mutex<Vec<Host>>>;

/// A worker's upstream connections.
#[derive(Debug)]
pub struct UpstreamPool {
    connector: HttpsConnector<HttpConnector>,
    hosts: Hosts,
}

impl UpstreamPool {
    /// A pool that opens connections with `connector` (see [`crate::proxy::connector`]).
    pub fn new(connector: HttpsConnector<HttpConnector>) -> Self {
        Self {
            connector,
            hosts: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Idle connections held for `upstream` (tests and diagnostics).
    pub fn idle_count(&self, upstream: &Upstream) -> usize {
        self.hosts
            .lock()
            .map(|hosts| {
                hosts
                    .iter()
                    .find(|h| is_host(h, upstream))
                    .map_or(0, |h| h.idle.len())
            })
            .unwrap_or(0)
    }

    /// Closes the connections idle longer than [`IDLE_TIMEOUT`] at `now` (an upstream that
    /// gets no more traffic does not keep them open forever).
    pub fn prune(&self, now: Instant) {
        let Ok(mut hosts) = self.hosts.lock() else {
            return;
        };
        for host in hosts.iter_mut() {
            host.idle
                .retain(|i| now.saturating_duration_since(i.since) <= IDLE_TIMEOUT);
        }
        hosts.retain(|h| !h.idle.is_empty());
    }

    /// Prunes every `IDLE_TIMEOUT / 2` until the pool is dropped; spawn it on the runtime
    /// that uses the pool.
    pub async fn sweep(pool: std::sync::Weak<UpstreamPool>) {
        loop {
            tokio::time::sleep(IDLE_TIMEOUT / 2).await;
            match pool.upgrade() {
                Some(p) => p.prune(Instant::now()),
                None => return,
            }
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `upstream`; the response head.
    pub async fn send(
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
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(upstream.scheme.clone());
        parts.authority = Some(upstream.authority.clone());
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
        let uri = Uri::from_parts(parts)?;
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
    let host = match hosts.iter().position(|h| same_host(h, scheme, authority)) {
        Some(i) => hosts.get_mut(i),
        None => {
            hosts.push(Host {
                scheme: scheme.clone(),
                authority: authority.clone(),
                idle: VecDeque::new(),
            });
            hosts.last_mut()
        }
    };
    let Some(host) = host else {
        return;
    };
    // The oldest are at the front: close those past their idle time.
    while host
        .idle
        .front()
        .is_some_and(|i| now.saturating_duration_since(i.since) > IDLE_TIMEOUT)
    {
        host.idle.pop_front();
    }
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
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        buf.drain(..end);
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
        UpstreamPool::new(crate::proxy::connector().unwrap())
    }

    fn get(path: &'static str) -> Request<Body> {
        let mut r = Request::new(Body::empty());
        *r.uri_mut() = Uri::from_static(path);
        r
    }

    async fn read_all(resp: Response<Incoming>) -> Vec<u8> {
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (up, accepted) = upstream(b"ok".to_vec(), false).await;
        let pool = pool();
        for _ in 0..20 {
            let resp = pool.send(get("/x"), &up).await.unwrap();
            assert_eq!(read_all(resp).await, b"ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(&up), 1);
    }

    #[tokio::test]
    async fn a_connection_whose_body_streams_comes_back_when_the_body_is_read() {
        let big = vec![b'a'; 4 * 1024 * 1024];
        let (up, accepted) = upstream(big.clone(), false).await;
        let pool = pool();
        for _ in 0..3 {
            let resp = pool.send(get("/big"), &up).await.unwrap();
            assert_eq!(read_all(resp).await.len(), big.len());
            // The connection returns from a background wait once its body is done.
            for _ in 0..100 {
                if pool.idle_count(&up) == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_then_reuse_them() {
        let (up, accepted) = upstream(b"ok".to_vec(), false).await;
        let pool = Arc::new(pool());
        for _ in 0..3 {
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let (pool, up) = (pool.clone(), up.clone());
                tasks.push(tokio::spawn(async move {
                    read_all(pool.send(get("/x"), &up).await.unwrap()).await
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

    #[tokio::test]
    async fn connections_the_upstream_closed_are_not_used_again() {
        let (up, accepted) = upstream(b"ok".to_vec(), true).await;
        let pool = pool();
        for i in 0..30 {
            let resp = pool
                .send(get("/x"), &up)
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(read_all(resp).await, b"ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 30);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (up, accepted) = upstream(b"ok".to_vec(), false).await;
        let pool = pool();
        read_all(pool.send(get("/x"), &up).await.unwrap()).await;
        pool.prune(Instant::now());
        assert_eq!(pool.idle_count(&up), 1, "a fresh connection was closed");
        pool.prune(Instant::now() + IDLE_TIMEOUT + Duration::from_secs(1));
        assert_eq!(pool.idle_count(&up), 0);
        read_all(pool.send(get("/x"), &up).await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_upstream_that_is_down_is_an_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let up = crate::config::parse_upstream(&format!("http://127.0.0.1:{port}")).unwrap();
        assert!(pool().send(get("/x"), &up).await.is_err());
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
