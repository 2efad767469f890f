//! The gateway: a request under a route with an upstream, verified at the gate, then forwarded
//! with the caller's identity headers, its credential stripped.

use http::{Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;

use super::app::App;
use crate::http::answer::{self};
use crate::http::forwarded::{client_ip, is_trusted};
use crate::http::request::{ConnInfo, request_facts, wants_body};
use crate::http::signed_body::permit_to_read;
use crate::server::proxy::{ForwardContext, upstream_request};
use crate::upstream::body::Body;
use crate::upstream::pool::UpstreamPool;

impl App {
    pub(super) async fn gateway(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        client: &UpstreamPool,
        request_id: &str,
    ) -> Response<Body> {
        let peer = conn.peer.ip();
        let peer_trusted = is_trusted(&self.trusted_proxies, peer);
        // Public routes too: their rate limits count clients, not the proxy in front.
        let ip = client_ip(&self.trusted_proxies, peer, req.headers());
        // The route is chosen by the path exactly as sent, and the upstream is given that
        // same path (`upstream_request`); a target with no path (`?q`, `http://h?q`) has
        // none to choose by.
        let path = match req.uri().path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') => pq.path(),
            _ => {
                return self.not_canonical(request_id, None, ip);
            }
        };
        let (policy, target) = match self.route_of(path, request_id, ip) {
            Ok(r) => r,
            Err(no) => return no.answer(),
        };
        let Some(upstream) = &target.upstream else {
            // A forward-auth-only route: nothing to forward to.
            return answer::not_found();
        };
        // Digest auth-int signs the body: read it (bounded) before verifying, then forward it.
        let signs_body = !policy.public && wants_body(req.headers(), !req.body().is_end_stream());
        let reading = if signs_body {
            let unread = request_facts(&req, peer_trusted, conn.tls, ip, None, None);
            match permit_to_read(&self.body_reads, &self.authn, &unread).await {
                Ok(p) => p,
                Err(refused) => return refused,
            }
        } else {
            None
        };
        let (req, body) = if reading.is_some() {
            let (parts, incoming) = req.into_parts();
            let bytes = match Box::pin(crate::http::signed_body::read(incoming)).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let req = Request::from_parts(parts, Body::from_bytes(bytes.clone()));
            (req, Some(bytes))
        } else {
            (req.map(Body::streamed), None)
        };
        let cert = match self.client_cert(&conn, req.headers(), request_id, &policy.prefix, ip) {
            Ok(c) => c,
            Err(_) => return answer::bad_request(),
        };
        let passed = {
            let mut facts = request_facts(
                &req,
                peer_trusted,
                conn.tls,
                ip,
                body.as_deref(),
                cert.as_deref(),
            );
            facts.body_unread = signs_body && body.is_none();
            self.gate.check(policy, &facts, request_id).await
        };
        drop(reading);
        let passed = match passed {
            Ok(p) => p,
            Err(refused) => return refused,
        };
        let ctx = ForwardContext {
            peer,
            peer_trusted,
            scheme: if conn.tls { "https" } else { "http" },
            request_id,
            prefix: &policy.prefix,
            peer_value: &conn.peer_value,
            trusted_proxies: &self.trusted_proxies,
            underscore_headers: self.underscore_headers,
        };
        let up = match upstream_request(req, upstream, passed.principal.as_ref(), &ctx) {
            Ok(r) => r,
            Err(_) => {
                return self.not_canonical(request_id, Some(&policy.prefix), ip);
            }
        };
        let sent = std::time::Instant::now();
        let send = client.send(up, upstream, passed.principal.as_ref());
        // The deadline from the same clock reading as the latency metric (one read, not two);
        // one beyond the clock's range is no deadline.
        let answer = match sent.checked_add(target.timeout) {
            Some(deadline) => {
                tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), send).await
            }
            None => Ok(send.await),
        };
        self.authn.metrics().upstream(target.index, sent.elapsed());
        match answer {
            Ok(Ok(mut resp)) => {
                if !crate::server::proxy::one_framing(&mut resp) {
                    self.authn.metrics().upstream_error();
                    tracing::warn!(request_id, upstream = %upstream.authority, "upstream answer with faulty framing");
                    return answer::bad_gateway();
                }
                // The status line is keycard's (an HTTP/1.0 upstream's version would turn
                // the client's connection into a 1.0 one).
                *resp.version_mut() = http::Version::HTTP_11;
                crate::server::proxy::remove_hop_by_hop(resp.headers_mut());
                crate::server::proxy::remove_own_set_cookies(resp.headers_mut());
                passed.set_headers(resp.headers_mut());
                resp
            }
            Ok(Err(e)) => {
                self.authn.metrics().upstream_error();
                tracing::warn!(request_id, upstream = %upstream.authority, error = %e, "upstream request failed");
                answer::bad_gateway()
            }
            Err(_) => {
                self.authn.metrics().upstream_error();
                tracing::warn!(request_id, upstream = %upstream.authority, "upstream timed out");
                answer::gateway_timeout()
            }
        }
    }
}
