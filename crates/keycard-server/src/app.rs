//! The request path: route, authenticate, audit, then forward (gateway) or answer
//! (forward-auth). Both shapes call [`Authenticator::authenticate`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use keycard_core::route::{RoutePolicy, RouteTable, path_is_routable};
use keycard_core::{AuditEvent, Outcome, Principal, Refusal};

use crate::answer;
use crate::audit::AuditSink;
use crate::authn::Authenticator;
use crate::body::Body;
use crate::clock::now_millis;
use crate::config::{RouteSettings, Settings, Upstream};
use crate::forwarded::{client_ip, is_trusted};
use crate::identity;
use crate::proxy::{ForwardContext, UpstreamClient, upstream_request};

/// `X-Forwarded-Uri` (Traefik, Caddy) — the original request's path and query.
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
/// `X-Original-URI` (nginx `auth_request` examples).
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

/// What the listener knows about a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether it arrived over TLS.
    pub tls: bool,
}

#[derive(Debug)]
struct Target {
    upstream: Option<Upstream>,
    timeout: Duration,
}

/// The running application: everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct App {
    routes: RouteTable<Target>,
    realm: String,
    trusted_proxies: Vec<ipnet::IpNet>,
    authn: Authenticator,
    audit: AuditSink,
    request_prefix: String,
    request_counter: AtomicU64,
}

impl App {
    /// Assembles the application.
    pub fn new(settings: &Settings, authn: Authenticator, audit: AuditSink) -> Self {
        let routes = settings
            .routes
            .iter()
            .map(
                |RouteSettings {
                     policy,
                     upstream,
                     upstream_timeout,
                 }| {
                    (
                        policy.clone(),
                        Target {
                            upstream: upstream.clone(),
                            timeout: *upstream_timeout,
                        },
                    )
                },
            )
            .collect();
        Self {
            routes: RouteTable::new(routes),
            realm: settings.realm.clone(),
            trusted_proxies: settings.trusted_proxies.clone(),
            authn,
            audit,
            request_prefix: keycard_core::random_base62(10).unwrap_or_else(|_| "kc".into()),
            request_counter: AtomicU64::new(0),
        }
    }

    /// Answers one request; `client` is the calling worker's upstream pool.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        client: &UpstreamClient,
    ) -> Response<Body> {
        match req.uri().path().strip_prefix("/_keycard/") {
            Some("health") => answer::json(StatusCode::OK, r#"{"status":"ok"}"#),
            Some("ready") => self.ready().await,
            Some("verify") => self.forward_auth(req, conn).await,
            Some(_) => answer::not_found(),
            None => self.gateway(req, conn, client).await,
        }
    }

    fn next_request_id(&self) -> String {
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.request_prefix)
    }

    async fn ready(&self) -> Response<Body> {
        let store_ok = self.authn.store_answers(Duration::from_secs(2)).await;
        if store_ok && self.authn.feed_is_fresh() {
            answer::json(StatusCode::OK, r#"{"status":"ready"}"#)
        } else {
            answer::unavailable()
        }
    }

    async fn gateway(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        client: &UpstreamClient,
    ) -> Response<Body> {
        let path = req.uri().path();
        if !path_is_routable(path) {
            return answer::bad_request();
        }
        let Some((policy, target)) = self.routes.find(path) else {
            return answer::not_found();
        };
        let Some(upstream) = &target.upstream else {
            // A forward-auth-only route: nothing to forward to.
            return answer::not_found();
        };
        let attempt = self.authn.authenticate(policy, req.headers()).await;
        let request_id = self.next_request_id();
        let peer = conn.peer.ip();
        let peer_trusted = is_trusted(&self.trusted_proxies, peer);
        if !policy.public {
            let ip = client_ip(&self.trusted_proxies, peer, req.headers());
            self.record(&request_id, policy, ip, &attempt.result);
        }
        let principal = match attempt.result {
            Ok(p) => p,
            Err(refusal) => {
                return answer::refusal(&refusal, policy, &self.realm, attempt.token_presented);
            }
        };
        let ctx = ForwardContext {
            peer,
            peer_trusted,
            scheme: if conn.tls { "https" } else { "http" },
            request_id: &request_id,
            prefix: &policy.prefix,
        };
        let up = match upstream_request(req, upstream, principal.as_ref(), &ctx) {
            Ok(r) => r,
            Err(_) => return answer::bad_request(),
        };
        match tokio::time::timeout(target.timeout, client.request(up)).await {
            Ok(Ok(mut resp)) => {
                crate::proxy::remove_hop_by_hop(resp.headers_mut());
                resp.map(Body::Upstream)
            }
            Ok(Err(e)) => {
                tracing::warn!(request_id, upstream = %upstream.authority, error = %e, "upstream request failed");
                answer::bad_gateway()
            }
            Err(_) => {
                tracing::warn!(request_id, upstream = %upstream.authority, "upstream timed out");
                answer::gateway_timeout()
            }
        }
    }

    async fn forward_auth(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let headers = req.headers();
        let Some(original) = original_path(headers) else {
            return answer::bad_request();
        };
        if !path_is_routable(&original) {
            return answer::bad_request();
        }
        let Some((policy, _)) = self.routes.find(&original) else {
            return answer::not_found();
        };
        let attempt = self.authn.authenticate(policy, headers).await;
        let request_id = self.next_request_id();
        if !policy.public {
            let ip = client_ip(&self.trusted_proxies, conn.peer.ip(), headers);
            self.record(&request_id, policy, ip, &attempt.result);
        }
        match attempt.result {
            Ok(principal) => {
                let mut r = answer::json(StatusCode::OK, r#"{"status":"ok"}"#);
                if let Some(p) = principal {
                    identity::set_identity(r.headers_mut(), &p);
                }
                r
            }
            Err(refusal) => answer::refusal(&refusal, policy, &self.realm, attempt.token_presented),
        }
    }

    fn record(
        &self,
        request_id: &str,
        policy: &RoutePolicy,
        ip: IpAddr,
        result: &Result<Option<Principal>, Refusal>,
    ) {
        let (outcome, method, reason, subject, credential_id) = match result {
            Ok(Some(p)) => (
                Outcome::Success,
                Some(p.method()),
                None,
                Some(p.subject().to_owned()),
                Some(p.credential_id().to_owned()),
            ),
            Ok(None) => return,
            Err(r) => {
                let (outcome, subject, cred) = match r {
                    Refusal::Forbidden { principal, .. } => (
                        Outcome::Forbidden,
                        Some(principal.subject().to_owned()),
                        Some(principal.credential_id().to_owned()),
                    ),
                    Refusal::Unauthorized {
                        subject,
                        credential_id,
                        ..
                    } => (Outcome::Failure, subject.clone(), credential_id.clone()),
                    _ => (Outcome::Failure, None, None),
                };
                (
                    outcome,
                    r.method(),
                    Some(r.reason().as_str().to_owned()),
                    subject,
                    cred,
                )
            }
        };
        self.audit.record(AuditEvent {
            ts_ms: now_millis(),
            request_id: request_id.to_owned(),
            route: Some(policy.prefix.clone()),
            method,
            outcome,
            reason,
            subject,
            credential_id,
            ip: Some(ip.to_string()),
        });
    }
}

/// The original request's path, from `X-Forwarded-Uri` or `X-Original-URI`.
fn original_path(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(X_FORWARDED_URI)
        .or_else(|| headers.get(X_ORIGINAL_URI))?;
    let uri: Uri = value.to_str().ok()?.parse().ok()?;
    Some(uri.path().to_owned())
}

/// Shared handle.
pub type SharedApp = Arc<App>;
