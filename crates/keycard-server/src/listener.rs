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
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::app::{App, ConnInfo};
use crate::proxy::{self, UpstreamClient};

/// How long connections get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// Worker threads: one per core.
pub fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 64)
}

/// Starts the workers, then accepts on `listener` until `shutdown` turns true; returns when
/// every worker has drained its connections.
pub async fn serve(listener: TcpListener, app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut senders = Vec::new();
    let mut threads = Vec::new();
    for i in 0..worker_count() {
        let (tx, rx) = mpsc::unbounded_channel::<(std::net::TcpStream, ConnInfo)>();
        let app = app.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("keycard-worker-{i}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(worker(rx, app)),
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
        let info = ConnInfo { peer, tls: false };
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

async fn worker(mut rx: mpsc::UnboundedReceiver<(std::net::TcpStream, ConnInfo)>, app: Arc<App>) {
    let client = match proxy::client() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the upstream client; worker stops");
            return;
        }
    };
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
        let (app, client) = (app.clone(), client.clone());
        let svc = service_fn(move |req| {
            let (app, client) = (app.clone(), client.clone());
            async move { Ok::<_, Infallible>(app.handle(req, info, &client).await) }
        });
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
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN:?}; closing them");
    }
}

/// Keeps the type in one place for callers that need it.
pub type SharedClient = Arc<UpstreamClient>;
