//! The request path: route, authenticate, audit, then forward (gateway) or answer
//! (forward-auth). Both shapes call [`Authenticator::authenticate`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use keycard_core::MasterKey;
use keycard_core::route::{RoutePolicy, RouteTable, path_is_routable};

use crate::answer::{self, Challenger};
use crate::audit::AuditSink;
use crate::authn::{Authenticator, RequestFacts};
use crate::body::Body;
use crate::config::{RouteSettings, Settings, Upstream};
use crate::forwarded::{client_ip, is_trusted};
use crate::gate::{Gate, Passed};
use crate::identity;
use crate::metrics::Endpoint;
use crate::pool::UpstreamPool;
use crate::proxy::{ForwardContext, upstream_request};

/// `X-Forwarded-Uri` (Traefik, Caddy) — the original request's path and query.
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
/// `X-Original-URI` (nginx `auth_request` examples).
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
/// `X-Forwarded-Method` (forward-auth: the original request's method).
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");

/// What the listener knows about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether it arrived over TLS.
    pub tls: bool,
    /// The client certificate of the TLS handshake.
    pub cert: Option<Arc<crate::tls::PeerCert>>,
    /// The peer's address as a header value (`X-Forwarded-For`), built once per connection.
    pub peer_value: HeaderValue,
}

impl ConnInfo {
    /// A connection from `peer`.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            tls,
            cert: None,
            peer_value: HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        }
    }
}

/// A request id, held inline: assigning one costs no allocation.
#[derive(Clone, Copy)]
pub struct RequestId {
    buf: [u8; RequestId::MAX],
    len: usize,
}

impl RequestId {
    /// The longest id accepted from a trusted proxy.
    const MAX: usize = 128;

    /// A proxy's id when it is 1–128 of `[A-Za-z0-9._:-]`.
    fn from_proxy(v: &[u8]) -> Option<Self> {
        if !(1..=Self::MAX).contains(&v.len())
            || !v
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return None;
        }
        let mut id = Self {
            buf: [0; Self::MAX],
            len: v.len(),
        };
        id.buf.get_mut(..v.len())?.copy_from_slice(v);
        Some(id)
    }

    /// `{prefix}-{n in hex}`.
    fn generated(prefix: &str, n: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = Self {
            buf: [0; Self::MAX],
            len: 0,
        };
        let p = prefix.as_bytes();
        let p = p.get(..p.len().min(Self::MAX - 17)).unwrap_or_default();
        if let Some(dst) = id.buf.get_mut(..p.len()) {
            dst.copy_from_slice(p);
        }
        id.len = p.len();
        if let Some(b) = id.buf.get_mut(id.len) {
            *b = b'-';
        }
        id.len += 1;
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        for i in 0..digits {
            let nibble = (n >> (4 * (digits - 1 - i))) & 0xf;
            if let (Some(b), Some(h)) = (id.buf.get_mut(id.len + i), HEX.get(nibble as usize)) {
                *b = *h;
            }
        }
        id.len += digits;
        id
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        self.buf
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
struct Target {
    upstream: Option<Upstream>,
    timeout: Duration,
    /// The route's position in the config (its upstream histogram).
    index: usize,
}

/// `mtls.forwarded_cert_header` from `mtls.forwarded_cert_from`, and the CA the certificates
/// are judged against.
#[derive(Debug)]
struct ForwardedCerts {
    header: crate::config::ForwardedCertHeader,
    from: Vec<ipnet::IpNet>,
    ca: Option<Arc<crate::tls::ClientCa>>,
}

/// The running application: everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct App {
    routes: RouteTable<Target>,
    gate: Gate,
    trusted_proxies: Vec<ipnet::IpNet>,
    authn: Authenticator,
    audit: AuditSink,
    request_prefix: String,
    request_counter: AtomicU64,
    /// Permits to read signed bodies, shared with every other entry point.
    body_reads: Arc<crate::signed_body::BodyReads>,
    oauth: crate::oauth::OAuth,
    /// Client certificates forwarded by TLS-terminating proxies, when configured.
    forwarded: Option<ForwardedCerts>,
    /// `/_keycard/admin/v1/`: its policy (API key, token or certificate with
    /// `keycard:admin`) and its handler.
    admin_policy: RoutePolicy,
    admin: crate::admin::Admin,
    /// `/_keycard/metrics` on this listener: a credential with `keycard:metrics`.
    metrics_policy: RoutePolicy,
    /// keycard's own origin (`scheme://host[:port]` of `server.public_url`): the only
    /// `Origin` the admin API accepts.
    own_origin: String,
}

/// The scope that reads `/_keycard/metrics` on the main listener.
pub const METRICS_SCOPE: &str = "keycard:metrics";

/// The policy of one of keycard's own machine endpoints (`prefix`): the methods a machine
/// uses, and `scope`.
fn machine_policy(prefix: &str, scope: &str) -> RoutePolicy {
    let mut methods = keycard_core::MethodSet::empty();
    for m in [
        keycard_core::Method::ApiKey,
        keycard_core::Method::Oauth2,
        keycard_core::Method::Mtls,
    ] {
        methods.insert(m);
    }
    RoutePolicy {
        prefix: prefix.into(),
        methods,
        scopes: keycard_core::Scopes::parse(scope).unwrap_or_default(),
        public: false,
        rate_limit: None,
    }
}

impl App {
    /// Assembles the application. `body_reads`: the process's permits for reading signed
    /// bodies (shared with a tower layer on the same core).
    pub fn new(
        settings: &Settings,
        master: &MasterKey,
        authn: Authenticator,
        audit: AuditSink,
        body_reads: Arc<crate::signed_body::BodyReads>,
    ) -> Self {
        let routes = settings
            .routes
            .iter()
            .enumerate()
            .map(
                |(
                    index,
                    RouteSettings {
                        policy,
                        upstream,
                        upstream_timeout,
                    },
                )| {
                    (
                        policy.clone(),
                        Target {
                            upstream: upstream.clone(),
                            timeout: *upstream_timeout,
                            index,
                        },
                    )
                },
            )
            .collect();
        Self {
            routes: RouteTable::new(routes),
            gate: Gate {
                authn: authn.clone(),
                audit: audit.clone(),
                challenger: Challenger::new(settings, master),
            },
            trusted_proxies: settings.trusted_proxies.clone(),
            authn: authn.clone(),
            audit: audit.clone(),
            request_prefix: keycard_core::random_base62(10).unwrap_or_else(|_| "kc".into()),
            request_counter: AtomicU64::new(0),
            body_reads,
            oauth: crate::oauth::OAuth::new(settings, master, authn.clone(), audit.clone()),
            forwarded: settings.mtls.forwarded.as_ref().map(|f| ForwardedCerts {
                header: f.header,
                from: f.from.clone(),
                ca: crate::mtls::forwarding_ca(&settings.mtls),
            }),
            admin_policy: machine_policy("/_keycard/admin/", crate::admin::ADMIN_SCOPE),
            metrics_policy: machine_policy("/_keycard/metrics", METRICS_SCOPE),
            own_origin: origin_of(&settings.public_url),
            admin: crate::admin::Admin::new(
                crate::manage::Manager::new(authn.store().clone(), master, settings),
                Arc::new(audit.clone()),
            ),
        }
    }

    /// Answers one request; `client` is the calling worker's upstream pool.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        client: &UpstreamPool,
    ) -> Response<Body> {
        let endpoint = endpoint_of(req.uri().path());
        let request_id = self.request_id(req.headers(), conn.peer.ip());
        let request_id = request_id.as_str();
        // The access log is off unless asked for (`KEYCARD_LOG=info,keycard::access=info`):
        // then the request line and its headers, sensitive ones redacted, never the query.
        let access = tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO).then(|| {
            (
                std::time::Instant::now(),
                req.method().clone(),
                req.uri().path().to_owned(),
                crate::redact::headers(req.headers()),
            )
        });
        let resp = self.dispatch(endpoint, req, conn, client, request_id).await;
        self.authn.metrics.request(endpoint, resp.status());
        if let Some((began, method, path, headers)) = access {
            tracing::info!(
                target: ACCESS_LOG,
                request_id,
                endpoint = endpoint.as_str(),
                http_method = %method,
                path,
                status = resp.status().as_u16(),
                duration_us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX),
                headers,
                "request"
            );
        }
        resp
    }

    async fn dispatch(
        &self,
        endpoint: Endpoint,
        req: Request<Incoming>,
        conn: ConnInfo,
        client: &UpstreamPool,
        request_id: &str,
    ) -> Response<Body> {
        // Only the gateway's future is inline: the others are boxed so that the future of
        // every proxied request (moved as it is polled) is not as large as the largest
        // endpoint's.
        match endpoint {
            Endpoint::Gateway => self.gateway(req, conn, client, request_id).await,
            Endpoint::Jwks => Box::pin(self.jwks()).await,
            Endpoint::OAuth => {
                let ip = client_ip(&self.trusted_proxies, conn.peer.ip(), req.headers());
                let cert = match self.client_cert(&conn, req.headers(), request_id, "oauth", ip) {
                    Ok(c) => c,
                    Err(_) => return answer::bad_request(),
                };
                let caller = crate::oauth::Caller {
                    ip,
                    tls: conn.tls,
                    cert,
                    request_id: request_id.into(),
                };
                Box::pin(self.oauth.handle(req, caller)).await
            }
            Endpoint::Health if req.uri().path() == "/_keycard/ready" => {
                Box::pin(self.ready()).await
            }
            Endpoint::Health => answer::json(StatusCode::OK, r#"{"status":"ok"}"#),
            Endpoint::Verify => Box::pin(self.forward_auth(req, conn, request_id)).await,
            Endpoint::Metrics => Box::pin(self.scraped(req, conn, request_id)).await,
            Endpoint::Admin => Box::pin(self.admin(req, conn, request_id)).await,
            Endpoint::Other => answer::not_found(),
        }
    }

    /// The request's id: a trusted proxy's `X-Request-Id` (nginx `$request_id`, Envoy) when
    /// it is a plain token, else a new one. Sent upstream and written to the audit event.
    fn request_id(&self, headers: &HeaderMap, peer: IpAddr) -> RequestId {
        if is_trusted(&self.trusted_proxies, peer)
            && let Some(v) = headers.get(crate::proxy::X_REQUEST_ID)
            && let Some(id) = RequestId::from_proxy(v.as_bytes())
        {
            return id;
        }
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        RequestId::generated(&self.request_prefix, n)
    }

    /// `/_keycard/admin/…`: authenticated like a route (audited as `/_keycard/admin/`),
    /// then handed to the admin API. Every path answers 401 without a credential.
    async fn admin(
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
        if let Err(refused) = crate::admin::browser_check(
            req.headers(),
            &self.own_origin,
            req.method(),
            !req.body().is_end_stream(),
        ) {
            let reason = match refused {
                crate::admin::BrowserRefusal::CrossSite => keycard_core::Reason::CrossSite,
                crate::admin::BrowserRefusal::NotJson => keycard_core::Reason::NotJson,
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
                Limited::new(req.into_body(), crate::admin::MAX_BODY).collect(),
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
            Ok(_) => return crate::admin::problem(StatusCode::UNAUTHORIZED, None),
            Err(refused) => return crate::admin::as_problem(refused),
        };
        let (parts, body) = req.into_parts();
        match parts.uri.path().strip_prefix(crate::admin::PREFIX) {
            Some(rest) => {
                let request = crate::admin::Request { id: request_id, ip };
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
            None => crate::admin::problem(StatusCode::NOT_FOUND, None),
        }
    }

    /// `/_keycard/metrics` on the main listener, which the public reaches: authenticated
    /// like a route (scope `keycard:metrics`), and the reasons that tell credentials apart
    /// counted as one.
    async fn scraped(
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
            Ok(crate::gate::Passed {
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
            .metrics
            .render(&gauges, &self.authn.cache().hit_counts(), detail);
        let mut r = Response::new(Body::from_bytes(Bytes::from(text)));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }

    /// The client certificate of a request: from a peer in `mtls.forwarded_cert_from`, the
    /// one in the configured header (and only there: such a peer's own handshake
    /// certificate is the proxy's, not the client's); from any other peer, the connection's.
    /// An unreadable forwarded one counts as none (no `mtls`, no bound token); a repeated
    /// header is an error, audited with `route` (the caller answers 400).
    fn client_cert(
        &self,
        conn: &ConnInfo,
        headers: &http::HeaderMap,
        request_id: &str,
        route: &str,
        ip: IpAddr,
    ) -> Result<Option<Arc<crate::tls::PeerCert>>, crate::mtls::ForwardedError> {
        let Some(f) = self
            .forwarded
            .as_ref()
            .filter(|f| is_trusted(&f.from, conn.peer.ip()))
        else {
            return Ok(conn.cert.clone());
        };
        match crate::mtls::forwarded_cert(headers, f.header, f.ca.as_deref()) {
            Ok(c) => Ok(c.map(Arc::new)),
            Err(crate::mtls::ForwardedError::Unreadable) => {
                tracing::debug!(peer = %conn.peer, "a forwarded client certificate cannot be read; ignored");
                Ok(None)
            }
            Err(crate::mtls::ForwardedError::Repeated) => {
                let reason = keycard_core::Reason::UntrustedForwardedHeader;
                self.audit.record(&crate::audit::Record {
                    ts_ms: crate::clock::now_millis(),
                    request_id,
                    route: Some(route),
                    method: None,
                    outcome: keycard_core::Outcome::Failure,
                    reason: Some(reason.as_str()),
                    subject: None,
                    credential_id: None,
                    ip: Some(ip),
                    cert_source: Some(keycard_core::CertSource::Forwarded),
                    operation: None,
                });
                Err(crate::mtls::ForwardedError::Repeated)
            }
        }
    }

    /// `/.well-known/jwks.json`: keycard's public signing keys (RFC 7517).
    async fn jwks(&self) -> Response<Body> {
        let doc = if self.authn.keyring.is_fresh() {
            self.authn.keyring.current().doc.clone()
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

    async fn ready(&self) -> Response<Body> {
        let store_ok = self.authn.store_answers(Duration::from_secs(2)).await;
        let redis_ok = self.authn.redis_answers().await.unwrap_or(true);
        if store_ok && redis_ok && self.authn.feed_is_fresh() {
            answer::json(StatusCode::OK, r#"{"status":"ready"}"#)
        } else {
            answer::unavailable()
        }
    }

    async fn gateway(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        client: &UpstreamPool,
        request_id: &str,
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
        let peer = conn.peer.ip();
        let peer_trusted = is_trusted(&self.trusted_proxies, peer);
        let ip = if policy.public {
            peer
        } else {
            client_ip(&self.trusted_proxies, peer, req.headers())
        };
        // Digest auth-int signs the body: read it (bounded) before verifying, then forward it.
        let reading = if !policy.public && wants_body(req.headers(), !req.body().is_end_stream()) {
            match self.body_reads.permit() {
                Some(p) => Some(p),
                None => return answer::unavailable(),
            }
        } else {
            None
        };
        let (req, body) = if reading.is_some() {
            let (parts, incoming) = req.into_parts();
            let bytes = match Box::pin(crate::signed_body::read(incoming)).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let req = Request::from_parts(parts, Body::Full(Full::new(bytes.clone())));
            (req, Some(bytes))
        } else {
            (req.map(Body::Upstream), None)
        };
        let cert = match self.client_cert(&conn, req.headers(), request_id, &policy.prefix, ip) {
            Ok(c) => c,
            Err(_) => return answer::bad_request(),
        };
        let passed = {
            let facts = request_facts(
                &req,
                peer_trusted,
                conn.tls,
                ip,
                body.as_deref(),
                cert.as_deref(),
            );
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
        };
        let up = match upstream_request(req, upstream, passed.principal.as_ref(), &ctx) {
            Ok(r) => r,
            Err(_) => return answer::bad_request(),
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
        self.authn.metrics.upstream(target.index, sent.elapsed());
        match answer {
            Ok(Ok(mut resp)) => {
                crate::proxy::remove_hop_by_hop(resp.headers_mut());
                passed.set_headers(resp.headers_mut());
                resp
            }
            Ok(Err(e)) => {
                self.authn.metrics.upstream_error();
                tracing::warn!(request_id, upstream = %upstream.authority, error = %e, "upstream request failed");
                answer::bad_gateway()
            }
            Err(_) => {
                self.authn.metrics.upstream_error();
                tracing::warn!(request_id, upstream = %upstream.authority, "upstream timed out");
                answer::gateway_timeout()
            }
        }
    }

    async fn forward_auth(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        request_id: &str,
    ) -> Response<Body> {
        let Some(target) = original_target(req.headers()) else {
            return answer::bad_request();
        };
        let Some(original) = target_path(&target) else {
            return answer::bad_request();
        };
        if !path_is_routable(&original) {
            return answer::bad_request();
        }
        let Some((policy, _)) = self.routes.find(&original) else {
            return answer::not_found();
        };
        let ip = client_ip(&self.trusted_proxies, conn.peer.ip(), req.headers());
        let cert = match self.client_cert(&conn, req.headers(), request_id, &policy.prefix, ip) {
            Ok(c) => c,
            Err(_) => return answer::bad_request(),
        };
        let (parts, incoming) = req.into_parts();
        // The proxy may pass the body (Envoy can); nginx's auth_request does not: then an
        // auth-int credential is checked against an empty body.
        let reading = if !policy.public && wants_body(&parts.headers, !incoming.is_end_stream()) {
            match self.body_reads.permit() {
                Some(p) => Some(p),
                None => return answer::unavailable(),
            }
        } else {
            None
        };
        let body = if reading.is_some() {
            match crate::signed_body::read(incoming).await {
                Ok(b) => Some(b),
                Err(r) => return r,
            }
        } else {
            None
        };
        let method = parts
            .headers
            .get(X_FORWARDED_METHOD)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| parts.method.as_str());
        // Forward-auth: X-Forwarded-Host/-Proto describe the original request (SPEC §1).
        let (scheme, authority) = client_origin(&parts.headers, &parts.uri, true, conn.tls);
        let facts = RequestFacts {
            method,
            target: &target,
            scheme,
            authority,
            headers: &parts.headers,
            ip,
            body: body.as_deref(),
            cert: cert.as_deref(),
        };
        match self.gate.check(policy, &facts, request_id).await {
            Ok(passed) => {
                let mut r = answer::json(StatusCode::OK, r#"{"status":"ok"}"#);
                if let Some(p) = &passed.principal {
                    identity::set_identity(r.headers_mut(), p);
                }
                passed.set_headers(r.headers_mut());
                r
            }
            Err(refused) => refused,
        }
    }
}

/// What the authenticator needs to know of a request that arrived at keycard directly (the
/// gateway, the admin API); forward-auth builds its own from the forwarded headers.
fn request_facts<'a, B>(
    req: &'a Request<B>,
    peer_trusted: bool,
    tls: bool,
    ip: IpAddr,
    body: Option<&'a [u8]>,
    cert: Option<&'a crate::tls::PeerCert>,
) -> RequestFacts<'a> {
    let (scheme, authority) = client_origin(req.headers(), req.uri(), peer_trusted, tls);
    RequestFacts {
        method: req.method().as_str(),
        target: req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/"),
        scheme,
        authority,
        headers: req.headers(),
        ip,
        body,
        cert,
    }
}

/// `scheme://host[:port]` of an absolute URL (what a browser sends as `Origin`).
fn origin_of(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(u) => match (u.scheme_str(), u.authority()) {
            (Some(s), Some(a)) => format!("{s}://{a}"),
            _ => url.to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

/// The `tracing` target of the access log.
pub const ACCESS_LOG: &str = "keycard::access";

/// Which part of keycard a path belongs to.
fn endpoint_of(path: &str) -> Endpoint {
    if path == "/.well-known/jwks.json" {
        Endpoint::Jwks
    } else if crate::oauth::OAuth::owns(path) {
        Endpoint::OAuth
    } else if let Some(rest) = path.strip_prefix("/_keycard/") {
        match rest {
            "health" | "ready" => Endpoint::Health,
            "verify" => Endpoint::Verify,
            "metrics" => Endpoint::Metrics,
            _ if rest.starts_with("admin/") => Endpoint::Admin,
            _ => Endpoint::Other,
        }
    } else {
        Endpoint::Gateway
    }
}

/// The original request-target, from `X-Forwarded-Uri` or `X-Original-URI`, as sent.
fn original_target(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(X_FORWARDED_URI)
        .or_else(|| headers.get(X_ORIGINAL_URI))?;
    Some(value.to_str().ok()?.to_owned())
}

/// The path of a request-target.
fn target_path(target: &str) -> Option<String> {
    let uri: Uri = target.parse().ok()?;
    Some(uri.path().to_owned())
}

/// The scheme and authority the client used: a trusted proxy's `X-Forwarded-Proto` and
/// `X-Forwarded-Host` when `believe_forwarded`, else the connection and `Host` (or the
/// HTTP/2 `:authority`).
pub(crate) fn client_origin<'a>(
    headers: &'a HeaderMap,
    uri: &'a Uri,
    believe_forwarded: bool,
    tls: bool,
) -> (&'a str, &'a str) {
    let forwarded = |name: HeaderName| {
        believe_forwarded
            .then(|| headers.get(name).and_then(|v| v.to_str().ok()))
            .flatten()
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    let scheme = match forwarded(crate::forwarded::X_FORWARDED_PROTO) {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ if tls => "https",
        _ => "http",
    };
    let authority = forwarded(crate::forwarded::X_FORWARDED_HOST)
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    (scheme, authority)
}

/// Whether the credential may sign the body: a Digest `qop=auth-int`, or an RFC 9421
/// signature on a request that may carry a body. Decided from the credential exactly as the
/// verifier will read it ([`keycard_core::credential::presented`], then the parsed `qop`),
/// so that the body is never left unread for a credential that is then checked against one.
/// `may_have_body`: the body is not known to be empty — an HTTP/2 request need send neither
/// `Content-Length` nor `Transfer-Encoding`, so the headers alone cannot tell. A false
/// positive only reads an empty body.
pub(crate) fn wants_body(headers: &HeaderMap, may_have_body: bool) -> bool {
    use keycard_core::credential::Presented;
    match keycard_core::credential::presented(headers) {
        Presented::Signature { .. } => may_have_body,
        Presented::Digest(params) => keycard_core::digest::parse(params)
            .is_some_and(|r| r.qop == keycard_core::digest::Qop::AuthInt),
        _ => false,
    }
}

/// Shared handle.
pub type SharedApp = Arc<App>;

#[cfg(test)]
mod tests {
    use super::RequestId;

    #[test]
    fn digest_auth_int_is_told_from_the_parsed_qop() {
        let with = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
            super::wants_body(&h, true)
        };
        let params = |qop: &str, user: &str| {
            format!(
                r#"Digest username="{user}", realm="r", nonce="n", uri="/a", qop={qop}, nc=00000001, cnonce="c", response="x""#
            )
        };
        assert!(with(&params("auth-int", "u")));
        assert!(with(&params(r#""auth\-int""#, "u")));
        assert!(!with(&params("auth", "auth-int")));
        assert!(!with(&params("auth", "u")));
        assert!(!with("Basic YTpi"));
        assert!(!with("Digest auth-int"));
        // Padded so that the untrimmed text is too long to parse: the verifier trims it, and
        // so does this.
        let padded = format!(
            "Digest {}{}",
            " ".repeat(400),
            &params("auth-int", "u")[7..]
        );
        assert!(with(&padded));
        // An RFC 9421 signature on a request that may have a body.
        let mut h = http::HeaderMap::new();
        h.insert("signature-input", "sig1=()".parse().unwrap());
        h.insert("signature", "sig1=:AAAA:".parse().unwrap());
        assert!(super::wants_body(&h, true));
        assert!(!super::wants_body(&h, false));
    }

    #[test]
    fn generated_ids_are_prefix_dash_hex() {
        for n in [0u64, 1, 15, 16, 255, 0xdead_beef, u64::MAX] {
            assert_eq!(
                RequestId::generated("AbC123xyz0", n).as_str(),
                format!("AbC123xyz0-{n:x}")
            );
        }
    }

    #[test]
    fn a_proxy_id_is_kept_only_when_it_is_a_plain_token() {
        let ok = "req-1_2.3:4".repeat(12);
        assert_eq!(
            RequestId::from_proxy(&ok.as_bytes()[..128])
                .unwrap()
                .as_str(),
            &ok[..128]
        );
        for bad in [
            &b""[..],
            &[b'a'; 129][..],
            b"a b",
            b"a\"b",
            b"a\r\nX-Keycard-Subject: admin",
            "Jos\u{e9}".as_bytes(),
        ] {
            assert!(RequestId::from_proxy(bad).is_none());
        }
    }
}
