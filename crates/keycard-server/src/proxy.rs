//! Forwarding to upstreams: a pooled HTTP/1.1 + HTTP/2 (ALPN) client, bodies streamed both
//! ways, hop-by-hop headers removed, credentials never forwarded.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use keycard_core::Principal;

use crate::body::Body;
use crate::config::Upstream;
use crate::forwarded::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::identity;

/// The upstream client.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the pooled client (system roots for `https://` upstreams).
pub fn client() -> std::io::Result<UpstreamClient> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_provider_and_native_roots(provider.clone()) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no system CA certificates found: https:// upstreams will not verify");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(std::io::Error::other)?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let connector = builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector))
}

/// What the gateway knows of the request beyond its headers.
#[derive(Debug)]
pub struct ForwardContext<'a> {
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
}

/// Turns the client's request into the upstream's: new URI, cleaned headers, identity set.
/// `Err` when the URI cannot be built (answered 400).
pub fn upstream_request(
    mut req: Request<Body>,
    upstream: &Upstream,
    principal: Option<&Principal>,
    ctx: &ForwardContext<'_>,
) -> Result<Request<Body>, http::Error> {
    let path_and_query = if upstream.base_path.is_empty() {
        // Already validated by the server's parser: reuse it (a reference-count bump).
        match req.uri().path_and_query() {
            Some(pq) => pq.clone(),
            None => http::uri::PathAndQuery::from_static("/"),
        }
    } else {
        // nginx `proxy_pass http://host/base/`: the matched prefix is replaced by the base.
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let joined = format!(
            "{}{}",
            upstream.base_path,
            pq.get(ctx.prefix.len()..).unwrap_or("")
        );
        http::uri::PathAndQuery::try_from(joined)?
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(upstream.scheme.clone());
    parts.authority = Some(upstream.authority.clone());
    parts.path_and_query = Some(path_and_query);
    let uri = Uri::from_parts(parts).map_err(http::Error::from)?;
    let original_host = req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;

    let h = req.headers_mut();
    remove_hop_by_hop(h);
    h.remove(header::HOST);
    h.remove(header::EXPECT);
    identity::strip_identity(h);
    // A forwarded client certificate is keycard's input, never the upstream's: an upstream
    // that believed one sent through keycard could be fooled.
    h.remove(crate::mtls::X_FORWARDED_CLIENT_CERT);
    h.remove(crate::mtls::X_SSL_CLIENT_CERT);
    if let Some(p) = principal {
        // The credential proved who the caller is; the upstream needs only the result.
        h.remove(header::AUTHORIZATION);
        h.remove(keycard_core::credential::X_API_KEY);
        h.remove("signature");
        h.remove("signature-input");
        identity::set_identity(h, p);
    }
    let xff = match (
        ctx.peer_trusted,
        h.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()),
    ) {
        (true, Some(prev)) => format!("{prev}, {}", ctx.peer),
        _ => ctx.peer.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert(X_FORWARDED_FOR, v);
    }
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
        h.insert(X_REQUEST_ID, v);
    }
    Ok(req)
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1, and those `Connection` names.
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        h.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        h.remove(name);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
