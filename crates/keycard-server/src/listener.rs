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

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::app::{App, ConnInfo};
use crate::pool::UpstreamPool;
use crate::proxy;
use crate::tls::{PeerCert, TlsState};

/// The per-connection service: every request of the connection carries its `info`.
fn service(
    app: Arc<App>,
    client: Arc<UpstreamPool>,
    info: ConnInfo,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<crate::body::Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<crate::body::Body>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |req| {
        let (app, client, info) = (app.clone(), client.clone(), info.clone());
        async move { Ok::<_, Infallible>(app.handle(req, info, &client).await) }
    })
}

/// How long connections get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// How long a client gets to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Worker threads: one per core.
pub fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 64)
}

/// Starts the workers, then accepts on `listener` until `shutdown` turns true; returns when
/// every worker has drained its connections.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<Arc<TlsState>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut senders = Vec::new();
    let mut threads = Vec::new();
    for i in 0..worker_count() {
        let (tx, rx) = mpsc::unbounded_channel::<(std::net::TcpStream, ConnInfo)>();
        let (app, tls) = (app.clone(), tls.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("keycard-worker-{i}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(worker(rx, app, tls)),
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
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(std_stream) = stream.into_std() else {
            continue;
        };
        let info = ConnInfo::new(peer, tls.is_some());
        if let Some(tx) = senders.get(next % senders.len()) {
            let _ = tx.send((std_stream, info));
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

async fn worker(
    mut rx: mpsc::UnboundedReceiver<(std::net::TcpStream, ConnInfo)>,
    app: Arc<App>,
    tls: Option<Arc<TlsState>>,
) {
    let client = match proxy::connector() {
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
        // Slow-loris guard: a client must send its headers within this time.
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    while let Some((std_stream, info)) = rx.recv().await {
        if std_stream.set_nonblocking(true).is_err() {
            continue;
        }
        let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else {
            continue;
        };
        match &tls {
            None => {
                let svc = service(app.clone(), client.clone(), info);
                let conn = graceful.watch(
                    builder
                        .serve_connection(TokioIo::new(stream), svc)
                        .into_owned(),
                );
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            Some(tls) => {
                // The handshake runs in the connection's own task; its end joins the graceful
                // watch like a plain connection.
                let (config, ca) = tls.current();
                let (app, client, builder) = (app.clone(), client.clone(), builder.clone());
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let accepted = tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
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
                    let svc = service(app.clone(), client.clone(), info);
                    let conn = watcher.watch(
                        builder
                            .serve_connection(TokioIo::new(stream), svc)
                            .into_owned(),
                    );
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN:?}; closing them");
    }
}

/// `server.metrics_listen`: a plain-HTTP listener of the operator's, on the main runtime,
/// answering `GET /_keycard/metrics` with every reason code and `/_keycard/health`; 404 for
/// anything else (no route, no credential, no admin API here). Until `shutdown`.
pub async fn serve_metrics(
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
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let app = app.clone();
        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let app = app.clone();
            async move {
                let r = match (req.method(), req.uri().path()) {
                    (&http::Method::GET, "/_keycard/metrics") => {
                        app.metrics(crate::metrics::Detail::Full)
                    }
                    (&http::Method::GET, "/_keycard/health") => {
                        crate::answer::json(http::StatusCode::OK, r#"{"status":"ok"}"#)
                    }
                    _ => crate::answer::not_found(),
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
