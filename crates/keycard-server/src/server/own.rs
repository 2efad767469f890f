//! keycard's own endpoints on the main listener: the admin API, `/_keycard/metrics`, the
//! JWKS document, readiness.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::app::App;
use crate::http::answer::{self};
use crate::http::forwarded::{client_ip, is_trusted};
use crate::http::request::{ConnInfo, request_facts};
use crate::server::gate::Passed;
use crate::upstream::body::Body;

impl App {
    /// `/_keycard/admin/…`: authenticated like a route (audited as `/_keycard/admin/`),
    /// then handed to the admin API. Every path answers 401 without a credential.
    pub(super) async fn admin(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        request_id: &str,
    ) -> Response<Body> {
        let policy = &self.admin_policy;
        let peer_trusted = is_trusted(&self.trusted_proxies, conn.peer.ip());
        let ip = client_ip(&self.trusted_proxies, conn.peer.ip(), req.headers());
        // Before the credential: a browser sends its client certificate (and would send a
        // session) to any page's form post.
        if let Err(refused) = crate::admin::api::browser_check(
            req.headers(),
            &self.own_origin,
            req.method(),
            !req.body().is_end_stream(),
        ) {
            let reason = match refused {
                crate::admin::api::BrowserRefusal::CrossSite => keycard_core::Reason::CrossSite,
                crate::admin::api::BrowserRefusal::NotJson => keycard_core::Reason::NotJson,
            };
            self.audit.record(&crate::audit::Record {
                ts_ms: crate::clock::now_millis(),
                request_id,
                route: Some(&policy.prefix),
                method: None,
                outcome: keycard_core::Outcome::Forbidden,
                reason: Some(reason.as_str()),
                subject: None,
                credential_id: None,
                ip: Some(ip),
                cert_source: conn.cert.as_ref().map(|c| c.source),
                operation: None,
            });
            // Read what the client is sending (bounded) before answering: an answer while
            // its body is still on the way can reach it as a reset stream instead.
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                Limited::new(req.into_body(), crate::admin::api::MAX_BODY).collect(),
            )
            .await;
            return refused.answer();
        }
        let cert = match self.client_cert(&conn, req.headers(), request_id, &policy.prefix, ip) {
            Ok(c) => c,
            Err(_) => return answer::bad_request(),
        };
        let passed = {
            let facts = request_facts(&req, peer_trusted, conn.tls, ip, None, cert.as_deref());
            self.gate.check(policy, &facts, request_id).await
        };
        let caller = match passed {
            Ok(Passed {
                principal: Some(p), ..
            }) => p,
            Ok(_) => return crate::admin::api::problem(StatusCode::UNAUTHORIZED, None),
            Err(refused) => return crate::admin::api::as_problem(refused),
        };
        let (parts, body) = req.into_parts();
        match parts.uri.path().strip_prefix(crate::admin::api::PREFIX) {
            Some(rest) => {
                let request = crate::admin::api::Request { id: request_id, ip };
                self.admin
                    .handle(
                        &caller,
                        request,
                        &parts.method,
                        rest,
                        parts.uri.query(),
                        body,
                    )
                    .await
            }
            None => crate::admin::api::problem(StatusCode::NOT_FOUND, None),
        }
    }

    /// `/_keycard/metrics` on the main listener, which the public reaches: authenticated
    /// like a route (scope `keycard:metrics`), and the reasons that tell credentials apart
    /// counted as one.
    pub(super) async fn scraped(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        request_id: &str,
    ) -> Response<Body> {
        let policy = &self.metrics_policy;
        let peer_trusted = is_trusted(&self.trusted_proxies, conn.peer.ip());
        let ip = client_ip(&self.trusted_proxies, conn.peer.ip(), req.headers());
        let cert = match self.client_cert(&conn, req.headers(), request_id, &policy.prefix, ip) {
            Ok(c) => c,
            Err(_) => return answer::bad_request(),
        };
        let facts = request_facts(&req, peer_trusted, conn.tls, ip, None, cert.as_deref());
        match self.gate.check(policy, &facts, request_id).await {
            Ok(crate::server::gate::Passed {
                principal: Some(_), ..
            }) => self.metrics(crate::metrics::Detail::Public),
            Ok(_) => answer::not_found(),
            Err(refused) => refused,
        }
    }

    /// `/_keycard/metrics`: the Prometheus text format.
    pub(crate) fn metrics(&self, detail: crate::metrics::Detail) -> Response<Body> {
        let gauges = crate::metrics::Gauges {
            audit_queue: self.audit.depth(),
            store_up: self.authn.feed_is_fresh(),
            feed_errors: self.authn.feed_errors(),
            redis_errors: self.authn.redis_errors(),
        };
        let text = self
            .authn
            .metrics()
            .render(&gauges, &self.authn.cache().hit_counts(), detail);
        let mut r = Response::new(Body::from_bytes(Bytes::from(text)));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }

    /// `/.well-known/jwks.json`: keycard's public signing keys (RFC 7517).
    pub(super) async fn jwks(&self) -> Response<Body> {
        let doc = if self.authn.keyring().is_fresh() {
            self.authn.keyring().current().doc.clone()
        } else {
            match self.authn.refresh_keys().await {
                Ok(state) => state.doc.clone(),
                Err(_) => return answer::unavailable(),
            }
        };
        let mut r = Response::new(Body::from_bytes(doc));
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/jwk-set+json"),
        );
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        );
        r
    }

    pub(super) async fn ready(&self) -> Response<Body> {
        let store_ok = self.authn.store_answers(Duration::from_secs(2)).await;
        let redis_ok = self.authn.redis_answers().await.unwrap_or(true);
        if store_ok && redis_ok && self.authn.feed_is_fresh() {
            answer::json(StatusCode::OK, r#"{"status":"ready"}"#)
        } else {
            answer::unavailable()
        }
    }
}
