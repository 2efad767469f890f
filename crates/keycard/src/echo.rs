//! The built-in echo upstream: answers every request with what it received, as JSON
//! (`method`, `path`, `query`, `headers`, `body`). Used by `quickstart`, tests and benchmarks.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::commands::common::CliError;

/// Bodies larger than this are answered 413.
const MAX_BODY: usize = 1 << 20;

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn spawn(addr: SocketAddr) -> Result<SocketAddr, CliError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Other(format!("echo upstream cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::Other(e.to_string()))?;
    tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    Ok(local)
}

/// `keycard echo-upstream`: serves until Ctrl-C or SIGTERM.
pub async fn run_until_signal(addr: SocketAddr) -> Result<(), CliError> {
    let local = spawn(addr).await?;
    tracing::info!(listen = %local, "echo upstream is serving");
    crate::commands::common::wait_for_signal().await;
    Ok(())
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let mut r = Response::new(Full::new(Bytes::from_static(
                b"{\"error\":\"body too large or broken\"}",
            )));
            *r.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
            return Ok(r);
        }
    };
    let doc = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut r = Response::new(Full::new(Bytes::from(doc.to_string())));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}
