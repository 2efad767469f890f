//! The accept loop and the workers.
//!
//! Thread per core: one task accepts connections and deals them round-robin to N worker
//! threads, each running a single-threaded runtime with its own upstream connection pool.
//! A proxied request then never crosses threads — the client connection, the upstream
//! connection and the request all live on one thread — which is where a multi-threaded
//! work-stealing runtime loses most of its time on a small machine (futex wake-ups).
//! Store I/O stays on the main runtime.
//!
//! HTTP/1.1 and HTTP/2 on the same port; graceful shutdown lets requests in flight finish.
//!
//! Nobody holds a connection for nothing: the accept loop caps open connections in all and
//! per client address, a connection must bring its first complete request within
//! `server.first_request_timeout` of being accepted (TLS handshake included) or is closed,
//! and one with no request in flight for `server.idle_timeout` is shut down gracefully.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::ConnectionLimits;
use crate::http::request::ConnInfo;
use crate::server::app::App;
use crate::tls::{PeerCert, TlsState};
use crate::upstream::pool::UpstreamPool;

/// Open connections, in all and per client address: a connection is admitted with a
/// [`Slot`], and counted until the slot is dropped (when its task ends).
#[derive(Debug)]
struct Connections {
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, u32>>,
    limits: ConnectionLimits,
    /// Trusted proxies: many clients behind one address, not counted per address.
    trusted: Vec<ipnet::IpNet>,
}

/// One admitted connection.
#[derive(Debug)]
struct Slot {
    /// The caps it counts against (`None`: a trusted proxy's, counted against none).
    conns: Option<Arc<Connections>>,
    /// The address it counts against, if any.
    client: Option<IpAddr>,
}

/// The address a connection counts against: IPv6 by /64 (one host usually holds a
/// whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

impl Connections {
    /// A slot for a connection from `peer`, or `None` beyond a cap. A trusted proxy's
    /// connections count against neither cap: it carries every client behind it, and
    /// clients filling the caps must not cut it off.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        if crate::http::forwarded::is_trusted(&self.trusted, peer) {
            return Some(Slot {
                conns: None,
                client: None,
            });
        }
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.limits.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        // From here on the slot's drop gives the count back.
        let mut slot = Slot {
            conns: Some(self.clone()),
            client: None,
        };
        let key = client_key(peer);
        let mut map = self.per_client.lock().ok()?;
        let n = map.entry(key).or_insert(0);
        if usize::try_from(*n).unwrap_or(usize::MAX) >= self.limits.per_client {
            return None;
        }
        *n += 1;
        slot.client = Some(key);
        Some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(conns) = &self.conns else {
            return;
        };
        conns.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(key) = self.client
            && let Ok(mut map) = conns.per_client.lock()
            && let Some(n) = map.get_mut(&key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&key);
            }
        }
    }
}

/// What a connection is doing, for its deadlines: whether a request has begun, how many
/// are in flight, and when the last one ended (milliseconds after accept).
#[derive(Debug)]
struct Activity {
    accepted: Instant,
    began: AtomicBool,
    in_flight: AtomicU32,
    last_end_ms: AtomicU64,
}

/// A request in flight; dropped when its answer's body is done (or dropped).
struct InFlight(Arc<Activity>);

impl Activity {
    fn new(accepted: Instant) -> Arc<Self> {
        Arc::new(Self {
            accepted,
            began: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            last_end_ms: AtomicU64::new(0),
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.began.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// When to look again, and whether the connection is past its deadline now.
    fn deadline(&self, limits: &ConnectionLimits, now: Instant) -> (Instant, bool) {
        if !self.began.load(Ordering::Relaxed) {
            let at = self.accepted + limits.first_request;
            return (at, now >= at);
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return (now + limits.idle, false);
        }
        let at = self.accepted
            + Duration::from_millis(self.last_end_ms.load(Ordering::Relaxed))
            + limits.idle;
        (at, now >= at)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_end_ms.store(ms, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs a connection until it ends, enforcing its deadlines: no request begun by the first
/// request deadline → closed at once; idle past the idle timeout, or keycard shutting down
/// → `stop` (a graceful shutdown: requests in flight finish), then at most [`DRAIN`].
async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    stop: impl FnOnce(Pin<&mut C>),
    activity: &Activity,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let ended = |r: Result<(), E>| {
        if let Err(e) = r {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    };
    if !*shutdown.borrow_and_update() {
        loop {
            let (at, past) = activity.deadline(&limits, Instant::now());
            if past {
                if !activity.began.load(Ordering::Relaxed) {
                    tracing::debug!("no request within server.first_request_timeout; closed");
                    return;
                }
                break;
            }
            tokio::select! {
                r = conn.as_mut() => return ended(r),
                _ = tokio::time::sleep_until(at) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
    }
    stop(conn.as_mut());
    if let Ok(r) = tokio::time::timeout(DRAIN, conn).await {
        ended(r);
    }
}

/// The per-connection service: every request of the connection carries its `info`, and
/// counts in its `activity` while it is handled.
fn service(
    app: Arc<App>,
    client: Arc<UpstreamPool>,
    info: ConnInfo,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<Tracked>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<Tracked>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |req| {
        let (app, client, info) = (app.clone(), client.clone(), info.clone());
        let in_flight = activity.begin();
        async move {
            let resp = app.handle(req, info, &client).await;
            // In flight until its body is sent (or dropped): a long stream is not idle.
            Ok::<_, Infallible>(resp.map(|body| Tracked {
                body,
                _in_flight: in_flight,
            }))
        }
    })
}

/// A response body that keeps its request counted as in flight until it is done.
struct Tracked {
    body: crate::upstream::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = crate::upstream::body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// How long connections get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// How often an idle HTTP/2 connection is pinged, and how long the answer may take.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Worker threads: one per core.
pub(crate) fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 64)
}

/// Starts the workers, then accepts on `listener` until `shutdown` turns true; returns when
/// every worker has drained its connections.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<Arc<TlsState>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let conns = Arc::new(Connections {
        open: AtomicUsize::new(0),
        per_client: Mutex::new(HashMap::new()),
        limits: app.connection_limits(),
        trusted: app.trusted_proxies().to_vec(),
    });
    let mut senders = Vec::new();
    let mut threads = Vec::new();
    for i in 0..worker_count() {
        let (tx, rx) = mpsc::unbounded_channel::<Accepted>();
        let (app, tls, stop) = (app.clone(), tls.clone(), shutdown.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("keycard-worker-{i}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(worker(rx, app, tls, stop)),
                    Err(e) => tracing::error!(error = %e, "cannot start a worker runtime"),
                }
            });
        match spawned {
            Ok(t) => {
                senders.push(tx);
                threads.push(t);
            }
            Err(e) => tracing::error!(error = %e, "cannot start a worker thread"),
        }
    }
    if senders.is_empty() {
        tracing::error!("no worker thread could start; not serving");
        return;
    }
    let mut next = 0usize;
    while let Some((stream, peer)) = next_connection(&listener, &mut shutdown, "main").await {
        let accepted = Instant::now();
        let Some(slot) = conns.admit(peer.ip()) else {
            // Beyond `server.max_connections` or `_per_client`: closed unanswered.
            tracing::debug!(peer = %peer, "connection limit reached; closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok(std_stream) = stream.into_std() else {
            continue;
        };
        let info = ConnInfo::new(peer, tls.is_some());
        if let Some(tx) = senders.get(next % senders.len()) {
            let _ = tx.send(Accepted {
                stream: std_stream,
                info,
                slot,
                accepted,
            });
        }
        next = next.wrapping_add(1);
    }
    drop(listener);
    drop(senders);
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
}

/// A connection handed to a worker.
struct Accepted {
    stream: std::net::TcpStream,
    info: ConnInfo,
    /// Its place under the connection caps, held until its task ends.
    slot: Slot,
    accepted: Instant,
}

async fn worker(
    mut rx: mpsc::UnboundedReceiver<Accepted>,
    app: Arc<App>,
    tls: Option<Arc<TlsState>>,
    shutdown: watch::Receiver<bool>,
) {
    let limits = app.connection_limits();
    let client = match crate::upstream::client::connector() {
        Ok(c) => Arc::new(UpstreamPool::new(c)),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the upstream client; worker stops");
            return;
        }
    };
    tokio::spawn(UpstreamPool::sweep(Arc::downgrade(&client)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // A request head (after the first, which `drive` bounds) must arrive within the
        // idle timeout of the previous answer: idle keep-alive and slow heads alike.
        .header_read_timeout(limits.idle);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(H2_KEEP_ALIVE))
        .keep_alive_timeout(H2_KEEP_ALIVE);
    // Every connection task holds a clone; the worker's drain ends when all are dropped.
    let (live, mut all_closed) = mpsc::channel::<()>(1);
    while let Some(Accepted {
        stream: std_stream,
        info,
        slot,
        accepted,
    }) = rx.recv().await
    {
        if std_stream.set_nonblocking(true).is_err() {
            continue;
        }
        let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else {
            continue;
        };
        let activity = Activity::new(accepted);
        let (live, stop) = (live.clone(), shutdown.clone());
        match &tls {
            None => {
                let svc = service(app.clone(), client.clone(), info, activity.clone());
                let conn = builder
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned();
                tokio::spawn(async move {
                    let _held = (slot, live);
                    tokio::pin!(conn);
                    drive(conn, |c| c.graceful_shutdown(), &activity, limits, stop).await;
                });
            }
            Some(tls) => {
                // The handshake runs in the connection's own task, within the first request
                // deadline.
                let (config, ca) = tls.current();
                let (app, client, builder) = (app.clone(), client.clone(), builder.clone());
                tokio::spawn(async move {
                    let _held = (slot, live);
                    let accepted = tokio::time::timeout_at(
                        accepted + limits.first_request,
                        tokio_rustls::TlsAcceptor::from(config).accept(stream),
                    )
                    .await;
                    let stream = match accepted {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %info.peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %info.peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| PeerCert::from_handshake(chain, ca.as_deref()))
                        .map(Arc::new);
                    let info = ConnInfo { cert, ..info };
                    let svc = service(app.clone(), client.clone(), info, activity.clone());
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), svc)
                        .into_owned();
                    tokio::pin!(conn);
                    drive(conn, |c| c.graceful_shutdown(), &activity, limits, stop).await;
                });
            }
        }
    }
    drop(live);
    // `recv` answers `None` once every connection task has dropped its sender.
    if tokio::time::timeout(DRAIN, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN:?}; closing them");
    }
}

/// The next connection on `listener`, or `None` once `shutdown` is signalled. A failed
/// accept (out of file descriptors and the like) is logged, naming the listener (`which`),
/// and retried after a pause: the listener keeps serving.
pub(crate) async fn next_connection(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
    which: &str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    tracing::warn!(error = %e, listener = which, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return None,
        }
    }
}

/// `server.metrics_listen`: a plain-HTTP listener of the operator's, on the main runtime,
/// answering `GET /_keycard/metrics` with every reason code and `/_keycard/health`; 404 for
/// anything else (no route, no credential, no admin API here). Until `shutdown`.
pub(crate) async fn serve_metrics(
    listener: TcpListener,
    app: Arc<App>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let graceful = GracefulShutdown::new();
    while let Some((stream, _)) = next_connection(&listener, &mut shutdown, "metrics").await {
        let app = app.clone();
        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let app = app.clone();
            async move {
                let r = match (req.method(), req.uri().path()) {
                    (&http::Method::GET, "/_keycard/metrics") => {
                        app.metrics(crate::metrics::Detail::Full)
                    }
                    (&http::Method::GET, "/_keycard/health") => {
                        crate::http::answer::json(http::StatusCode::OK, r#"{"status":"ok"}"#)
                    }
                    _ => crate::http::answer::not_found(),
                };
                Ok::<_, Infallible>(r)
            }
        });
        let conn = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), svc)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}
