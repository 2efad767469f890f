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
use keycard_core::route::{PathCheck, RoutePolicy, RouteTable, check_path};

use crate::answer::{self, Challenger};
use crate::audit::AuditSink;
use crate::authn::{Authenticator, RequestFacts};
use crate::body::Body;
use crate::config::{METHOD_HEADERS, RouteSettings, Settings, URI_HEADERS, Upstream};
use crate::forwarded::{client_ip, is_trusted};
use crate::gate::{Gate, Passed};
use crate::identity;
use crate::metrics::Endpoint;
use crate::pool::UpstreamPool;
use crate::proxy::{ForwardContext, upstream_request};

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
    /// `allow_encoded_slash`.
    encoded_slash: bool,
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
    /// `server.allow_underscore_headers`.
    underscore_headers: bool,
    /// `oauth.issuer_host`: the one host the authorization server answers on.
    issuer_host: Option<String>,
    /// `oauth.cors_origins`.
    cors: crate::oauth::Cors,
    /// `[forward_auth]`: the header names of the original request's target and method.
    forward_auth: crate::config::ForwardAuthSettings,
    /// What a connection may hold.
    connections: crate::config::ConnectionLimits,
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
                        allow_encoded_slash,
                    },
                )| {
                    (
                        policy.clone(),
                        Target {
                            upstream: upstream.clone(),
                            timeout: *upstream_timeout,
                            index,
                            encoded_slash: *allow_encoded_slash,
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
            underscore_headers: settings.allow_underscore_headers,
            issuer_host: settings.oauth.issuer_host.clone(),
            cors: crate::oauth::Cors::new(&settings.oauth.cors_origins),
            forward_auth: settings.forward_auth.clone(),
            connections: settings.connections,
            admin: crate::admin::Admin::new(
                crate::manage::Manager::new(authn.store().clone(), master, settings),
                Arc::new(audit.clone()),
            ),
        }
    }

    /// What a connection may hold (`server.max_connections*`, `server.*_timeout`).
    pub fn connection_limits(&self) -> crate::config::ConnectionLimits {
        self.connections
    }

    /// `server.trusted_proxies`.
    pub fn trusted_proxies(&self) -> &[ipnet::IpNet] {
        &self.trusted_proxies
    }

    /// Answers one request; `client` is the calling worker's upstream pool.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        client: &UpstreamPool,
    ) -> Response<Body> {
        let mut endpoint = endpoint_of(req.uri().path());
        // With `oauth.issuer_host`, the login pages and `/oauth2/*` are served on that host
        // alone: on another, those paths are an application's, routed like any other.
        if endpoint == Endpoint::OAuth
            && let Some(issuer) = &self.issuer_host
            && !request_host(&req).is_some_and(|h| h.eq_ignore_ascii_case(issuer))
        {
            endpoint = Endpoint::Gateway;
        }
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
        let cors = match endpoint {
            Endpoint::OAuth | Endpoint::Jwks => self.cors.allowed(req.uri().path(), req.headers()),
            _ => None,
        };
        let resp = if !well_formed(&req) {
            let ip = client_ip(&self.trusted_proxies, conn.peer.ip(), req.headers());
            self.refuse(
                request_id,
                None,
                ip,
                keycard_core::Reason::MalformedRequest,
                answer::bad_request(),
            )
        } else if let Some(pre) = cors.as_ref().and_then(|_| {
            self.cors
                .preflight(req.method(), req.uri().path(), req.headers())
        }) {
            pre
        } else {
            let mut r = self.dispatch(endpoint, req, conn, client, request_id).await;
            if let Some(origin) = cors {
                crate::oauth::Cors::expose(origin, &mut r);
            }
            r
        };
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

    /// Refuses a request before any credential is looked at: the event is audited with
    /// `reason` (and the route, when one was chosen), `answer` is sent.
    fn refuse(
        &self,
        request_id: &str,
        route: Option<&str>,
        ip: IpAddr,
        reason: keycard_core::Reason,
        answer: Response<Body>,
    ) -> Response<Body> {
        self.audit.record(&crate::audit::Record {
            ts_ms: crate::clock::now_millis(),
            request_id,
            route,
            method: None,
            outcome: keycard_core::Outcome::Failure,
            reason: Some(reason.as_str()),
            subject: None,
            credential_id: None,
            ip: Some(ip),
            cert_source: None,
            operation: None,
        });
        answer
    }

    /// Refuses a path that is not canonical (400, audited `path_not_canonical`).
    fn not_canonical(&self, request_id: &str, route: Option<&str>, ip: IpAddr) -> Response<Body> {
        self.refuse(
            request_id,
            route,
            ip,
            keycard_core::Reason::PathNotCanonical,
            answer::bad_request(),
        )
    }

    /// The route of a request path, or the refusal to send (audited): a path that is not
    /// canonical ([`check_path`]) is refused, and one with `%2F` is taken only by a route
    /// that allows it, and only when the decoded path chooses that same route (so that no
    /// upstream decoding it can serve it as another route's).
    fn route_of(
        &self,
        path: &str,
        request_id: &str,
        ip: IpAddr,
    ) -> Result<&(RoutePolicy, Target), NoRoute> {
        let not_canonical = |route: Option<&str>| {
            self.not_canonical(request_id, route, ip);
            NoRoute::NotCanonical
        };
        let check = check_path(path);
        if check == PathCheck::Refused {
            return Err(not_canonical(None));
        }
        let found = match self.routes.find(path) {
            Some(found) => found,
            None if check == PathCheck::EncodedSlash => return Err(not_canonical(None)),
            None => return Err(NoRoute::NotFound),
        };
        if check == PathCheck::EncodedSlash {
            let decoded = keycard_core::route::decode_slashes(path);
            let same = self
                .routes
                .find(&decoded)
                .is_some_and(|d| std::ptr::eq(d, found));
            if !found.1.encoded_slash || !same {
                return Err(not_canonical(Some(&found.0.prefix)));
            }
        }
        Ok(found)
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
        let reading = if signs_body && {
            let facts = request_facts(&req, peer_trusted, conn.tls, ip, None, None);
            may_verify(&self.authn, &facts).await
        } {
            match self.body_reads.permit(ip) {
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
        self.authn.metrics.upstream(target.index, sent.elapsed());
        match answer {
            Ok(Ok(mut resp)) => {
                if !crate::proxy::one_framing(&mut resp) {
                    self.authn.metrics.upstream_error();
                    tracing::warn!(request_id, upstream = %upstream.authority, "upstream answer with faulty framing");
                    return answer::bad_gateway();
                }
                // The status line is keycard's (an HTTP/1.0 upstream's version would turn
                // the client's connection into a 1.0 one).
                *resp.version_mut() = http::Version::HTTP_11;
                crate::proxy::remove_hop_by_hop(resp.headers_mut());
                crate::proxy::remove_own_set_cookies(resp.headers_mut());
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
        let ip = client_ip(&self.trusted_proxies, conn.peer.ip(), req.headers());
        let untrusted = |why: &'static str| {
            self.refuse(
                request_id,
                None,
                ip,
                keycard_core::Reason::UntrustedForwardedHeader,
                answer::json(StatusCode::BAD_REQUEST, why),
            )
        };
        // The original request is known only from headers a client could send as well:
        // they are believed from a trusted proxy alone, never from anyone else.
        if !is_trusted(&self.trusted_proxies, conn.peer.ip()) {
            return untrusted(NOT_A_TRUSTED_PROXY);
        }
        let fa = &self.forward_auth;
        let target = match one_forwarded(req.headers(), &fa.uri_header, URI_HEADERS) {
            Ok(Some(t)) => t,
            Ok(None) => return untrusted(NO_ORIGINAL_URI),
            Err(()) => return untrusted(TWO_VALUES),
        };
        let method = match one_forwarded(req.headers(), &fa.method_header, METHOD_HEADERS) {
            Ok(Some(m)) if http::Method::from_bytes(m.as_bytes()).is_ok() => Some(m.to_owned()),
            Ok(Some(_)) | Err(()) => return untrusted(TWO_VALUES),
            Ok(None) => None,
        };
        for name in [
            crate::forwarded::X_FORWARDED_HOST,
            crate::forwarded::X_FORWARDED_PROTO,
        ] {
            if req.headers().get_all(name).iter().nth(1).is_some() {
                return untrusted(TWO_VALUES);
            }
        }
        // Read exactly as sent: a fragment (`#…`), which parsing would drop but the proxy
        // forwards, is refused with the rest of what the path rules refuse.
        let path = match http::uri::PathAndQuery::try_from(target) {
            Ok(pq) if target.starts_with('/') && pq.as_str() == target => pq,
            _ => {
                return self.not_canonical(request_id, None, ip);
            }
        };
        let policy = match self.route_of(path.path(), request_id, ip) {
            Ok((policy, _)) => policy,
            Err(no) => return no.answer(),
        };
        let target = target.to_owned();
        let cert = match self.client_cert(&conn, req.headers(), request_id, &policy.prefix, ip) {
            Ok(c) => c,
            Err(_) => return answer::bad_request(),
        };
        let (parts, incoming) = req.into_parts();
        // A credential that binds the method (a signature, Digest) is judged against the
        // original request's, which only the proxy can name: the subrequest's own (nginx
        // `auth_request` always sends GET) would let a GET signature authorise a DELETE.
        let binds_method = matches!(
            keycard_core::credential::presented(&parts.headers),
            keycard_core::credential::Presented::Signature { .. }
                | keycard_core::credential::Presented::Digest(_)
        );
        if method.is_none() && binds_method && !policy.public {
            return untrusted(NO_ORIGINAL_METHOD);
        }
        let original_method = method.as_deref().unwrap_or(parts.method.as_str());
        // The proxy may pass the body (Envoy can); nginx's `auth_request` does not. A
        // credential that signs a body the proxy did not pass cannot vouch for it: it is
        // refused ([`RequestFacts::body_unread`]) rather than checked against nothing.
        let signs_body = !policy.public && forwarded_body_signed(&parts.headers, original_method);
        let method = method.unwrap_or_else(|| parts.method.as_str().to_owned());
        // Forward-auth: X-Forwarded-Host/-Proto describe the original request (reference §1).
        let (scheme, authority) = client_origin(&parts.headers, &parts.uri, true, conn.tls);
        let unread = RequestFacts {
            method: &method,
            target: &target,
            scheme,
            authority,
            headers: &parts.headers,
            ip,
            body: None,
            body_unread: false,
            cert: None,
        };
        let reading =
            if signs_body && !incoming.is_end_stream() && may_verify(&self.authn, &unread).await {
                match self.body_reads.permit(ip) {
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
        let facts = RequestFacts {
            body: body.as_deref(),
            body_unread: signs_body && body.as_ref().is_none_or(|b| b.is_empty()),
            cert: cert.as_deref(),
            ..unread
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
        body_unread: false,
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

/// Why a path has no route.
#[derive(Debug, Clone, Copy)]
enum NoRoute {
    /// No route's prefix: 404.
    NotFound,
    /// Not canonical (audited already): 400.
    NotCanonical,
}

impl NoRoute {
    fn answer(self) -> Response<Body> {
        match self {
            NoRoute::NotFound => answer::not_found(),
            NoRoute::NotCanonical => answer::bad_request(),
        }
    }
}

/// `/_keycard/verify` from a peer not in `server.trusted_proxies`.
const NOT_A_TRUSTED_PROXY: &str = r#"{"error":"untrusted_proxy","error_description":"/_keycard/verify reads the original request from its proxy's headers, and believes them only from an address in server.trusted_proxies: add the proxy's address there"}"#;
/// `/_keycard/verify` without the configured original-URI header.
const NO_ORIGINAL_URI: &str = r#"{"error":"no_original_uri","error_description":"the proxy did not send the original request's URI in the header forward_auth.uri_header names (X-Forwarded-Uri by default; X-Original-URI for nginx auth_request)"}"#;
/// `/_keycard/verify` for a method-bound credential without the original method.
const NO_ORIGINAL_METHOD: &str = r#"{"error":"no_original_method","error_description":"a signature or Digest credential is bound to the original request's method, which the proxy did not send in the header forward_auth.method_header names (X-Forwarded-Method by default; X-Original-Method for nginx auth_request)"}"#;
/// `/_keycard/verify` with a forwarded value twice, or under both names.
const TWO_VALUES: &str = r#"{"error":"ambiguous_forwarded_header","error_description":"a forwarded header was sent twice, under both of its names, or with a value that is not one (forward_auth.uri_header and forward_auth.method_header name the one header each that is read)"}"#;

/// The one value of the forward-auth header `name` (one of `names`): `Err` when it is sent
/// twice, is not text, or the other of `names` is present too (a client adding the header
/// the proxy does not set must not be read instead of, or beside, the proxy's).
fn one_forwarded<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    names: [&str; 2],
) -> Result<Option<&'a str>, ()> {
    if names
        .iter()
        .any(|n| *n != name.as_str() && headers.contains_key(*n))
    {
        return Err(());
    }
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(());
    }
    first.map(|v| v.to_str().map_err(|_| ())).transpose()
}

/// Whether a forward-auth credential signs the original request's body: Digest
/// `qop=auth-int`; an RFC 9421 signature with `Content-Digest`, or on a request whose method
/// may carry a body (the proxy does not say whether the original had one, so only `GET`,
/// `HEAD`, `OPTIONS` and `TRACE` are taken to have none).
fn forwarded_body_signed(headers: &HeaderMap, original_method: &str) -> bool {
    match keycard_core::credential::presented(headers) {
        keycard_core::credential::Presented::Signature { .. } => {
            headers.contains_key("content-digest")
                || !matches!(original_method, "GET" | "HEAD" | "OPTIONS" | "TRACE")
        }
        keycard_core::credential::Presented::Digest(_) => wants_body(headers, true),
        _ => false,
    }
}

/// Whether a request is one HTTP allows (RFC 9112 §3.2): an HTTP/1.1 request has exactly
/// one `Host`, no request has two, and a `Host` is a valid `uri-host[:port]`. For HTTP/2
/// a `Host` beside `:authority` must name the same (RFC 9113 §8.3.1). The absolute-form's
/// authority (or `:authority`) is held to the same grammar: no user info.
fn well_formed<B>(req: &Request<B>) -> bool {
    if req
        .uri()
        .authority()
        .is_some_and(|a| !valid_host(a.as_str().as_bytes()))
    {
        return false;
    }
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return false;
    }
    match host {
        None => req.version() != http::Version::HTTP_11,
        Some(h) => {
            valid_host(h.as_bytes())
                && (req.version() != http::Version::HTTP_2
                    || req
                        .uri()
                        .authority()
                        .is_none_or(|a| a.as_str().as_bytes() == h.as_bytes()))
        }
    }
}

/// The host a request is for: the authority of an absolute-form target (RFC 9112 §3.2.2),
/// else `Host` (HTTP/2's `:authority` is the URI's authority).
fn request_host(req: &Request<Incoming>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok()),
    }
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2): a reg-name of unreserved, sub-delims and
/// percent-encoded characters, or an IP literal in brackets; no user info.
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = v.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|b| *b == b']') else {
            return false;
        };
        let (lit, after) = rest.split_at(end);
        if lit.is_empty()
            || !lit
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        match after.get(1..).unwrap_or_default() {
            [] => return true,
            [b':', port @ ..] => (&b"x"[..], port),
            _ => return false,
        }
    } else {
        match v.iter().position(|b| *b == b':') {
            Some(i) => (
                v.get(..i).unwrap_or_default(),
                v.get(i + 1..).unwrap_or_default(),
            ),
            None => (v, &b""[..]),
        }
    };
    !host.is_empty()
        && host.len() <= 253
        && host.iter().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        })
        && port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(port)
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p <= 65535)
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
    // The absolute-form's authority wins over `Host` (RFC 9112 §3.2.2).
    let authority = forwarded(crate::forwarded::X_FORWARDED_HOST)
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })
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

/// Whether a credential that signs the body ([`wants_body`]) could verify at all, judged
/// without the body (`req.body` is `None`): an RFC 9421 signature that verifies but for the
/// body's digest, a Digest user behind a nonce keycard minted. Only then is the body read.
/// Anyone else gets the refusal without holding one of the few body-reading permits (and
/// the body left unread is marked so, [`RequestFacts::body_unread`]: no verification passes
/// over it).
pub(crate) async fn may_verify(authn: &Authenticator, req: &RequestFacts<'_>) -> bool {
    use keycard_core::credential::Presented;
    let now_ms = crate::clock::now_millis();
    match keycard_core::credential::presented(req.headers) {
        Presented::Signature { input, signature } => {
            authn
                .signature_may_verify(input, signature, req, now_ms)
                .await
        }
        Presented::Digest(params) => authn.digest_may_verify(params, now_ms).await,
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
    fn hosts_are_uri_host_and_port_only() {
        for ok in [
            "a.example",
            "a.example:8080",
            "a.example:",
            "[::1]",
            "[::1]:443",
            "127.0.0.1:80",
            "xn--caf-dma.example",
            "a_b",
        ] {
            assert!(super::valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "user@a.example",
            "a example",
            "a.example:80x",
            "a.example:99999",
            "a.example:123456",
            "[::1",
            "[::1]x",
            "[zz]",
            "a/b",
            "a\\b",
            ":80",
        ] {
            assert!(!super::valid_host(bad.as_bytes()), "{bad}");
        }
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
