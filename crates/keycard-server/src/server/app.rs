//! The request path: route, authenticate, audit, then forward (gateway) or answer
//! (forward-auth). Both shapes call [`Authenticator::authenticate`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use keycard_core::MasterKey;
use keycard_core::route::{PathCheck, RoutePolicy, RouteTable, check_path};

use crate::audit::AuditSink;
use crate::authn::Authenticator;
use crate::config::{RouteSettings, Settings, Upstream};
use crate::http::answer::{self, Challenger};
use crate::http::forwarded::{client_ip, is_trusted};
use crate::http::request::{ConnInfo, RequestId, RequestIds, origin_of, request_host, well_formed};
use crate::metrics::Endpoint;
use crate::server::gate::Gate;
use crate::upstream::body::Body;
use crate::upstream::pool::UpstreamPool;

#[derive(Debug)]
pub(super) struct Target {
    pub(super) upstream: Option<Upstream>,
    pub(super) timeout: Duration,
    /// The route's position in the config (its upstream histogram).
    pub(super) index: usize,
    /// `allow_encoded_slash`.
    pub(super) encoded_slash: bool,
}

/// `mtls.forwarded_cert_header` from `mtls.forwarded_cert_from`, and the CA the certificates
/// are judged against.
#[derive(Debug)]
pub(super) struct ForwardedCerts {
    pub(super) header: crate::config::ForwardedCertHeader,
    pub(super) from: Vec<ipnet::IpNet>,
    pub(super) ca: Option<Arc<crate::tls::ClientCa>>,
}

/// The running application: everything a request needs, shared by all connections.
#[derive(Debug)]
pub(crate) struct App {
    pub(super) routes: RouteTable<Target>,
    pub(super) gate: Gate,
    pub(super) trusted_proxies: Vec<ipnet::IpNet>,
    pub(super) authn: Authenticator,
    pub(super) audit: AuditSink,
    pub(super) request_ids: RequestIds,
    /// Permits to read signed bodies, shared with every other entry point.
    pub(super) body_reads: Arc<crate::http::signed_body::BodyReads>,
    pub(super) oauth: crate::oauth::OAuth,
    /// Client certificates forwarded by TLS-terminating proxies, when configured.
    pub(super) forwarded: Option<ForwardedCerts>,
    /// `/_keycard/admin/v1/`: its policy (API key, token or certificate with
    /// `keycard:admin`) and its handler.
    pub(super) admin_policy: RoutePolicy,
    pub(super) admin: crate::admin::api::Admin,
    /// `/_keycard/metrics` on this listener: a credential with `keycard:metrics`.
    pub(super) metrics_policy: RoutePolicy,
    /// keycard's own origin (`scheme://host[:port]` of `server.public_url`): the only
    /// `Origin` the admin API accepts.
    pub(super) own_origin: String,
    /// `server.allow_underscore_headers`.
    pub(super) underscore_headers: bool,
    /// `oauth.issuer_host`: the one host the authorization server answers on.
    pub(super) issuer_host: Option<String>,
    /// `oauth.cors_origins`.
    pub(super) cors: crate::oauth::Cors,
    /// `[forward_auth]`: the header names of the original request's target and method.
    pub(super) forward_auth: crate::config::ForwardAuthSettings,
    /// What a connection may hold.
    pub(super) connections: crate::config::ConnectionLimits,
}

/// The scope that reads `/_keycard/metrics` on the main listener.
pub(crate) const METRICS_SCOPE: &str = "keycard:metrics";

/// The policy of one of keycard's own machine endpoints (`prefix`): the methods a machine
/// uses, and `scope`.
pub(super) fn machine_policy(prefix: &str, scope: &str) -> RoutePolicy {
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
    pub(crate) fn new(
        settings: &Settings,
        master: &MasterKey,
        authn: Authenticator,
        audit: AuditSink,
        body_reads: Arc<crate::http::signed_body::BodyReads>,
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
            request_ids: RequestIds::new(),
            body_reads,
            oauth: crate::oauth::OAuth::new(settings, master, authn.clone(), audit.clone()),
            forwarded: settings.mtls.forwarded.as_ref().map(|f| ForwardedCerts {
                header: f.header,
                from: f.from.clone(),
                ca: crate::authn::mtls::forwarding_ca(&settings.mtls),
            }),
            admin_policy: machine_policy("/_keycard/admin/", crate::admin::api::ADMIN_SCOPE),
            metrics_policy: machine_policy("/_keycard/metrics", METRICS_SCOPE),
            own_origin: origin_of(&settings.public_url),
            underscore_headers: settings.allow_underscore_headers,
            issuer_host: settings.oauth.issuer_host.clone(),
            cors: crate::oauth::Cors::new(&settings.oauth.cors_origins),
            forward_auth: settings.forward_auth.clone(),
            connections: settings.connections,
            admin: crate::admin::api::Admin::new(
                crate::admin::manage::Manager::new(authn.store().clone(), master, settings),
                Arc::new(audit.clone()),
            ),
        }
    }

    /// What a connection may hold (`server.max_connections*`, `server.*_timeout`).
    pub(crate) fn connection_limits(&self) -> crate::config::ConnectionLimits {
        self.connections
    }

    /// `server.trusted_proxies`.
    pub(crate) fn trusted_proxies(&self) -> &[ipnet::IpNet] {
        &self.trusted_proxies
    }

    /// Answers one request; `client` is the calling worker's upstream pool.
    pub(crate) async fn handle(
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
                crate::http::redact::headers(req.headers()),
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
        self.authn.metrics().request(endpoint, resp.status());
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

    pub(super) async fn dispatch(
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
    pub(super) fn refuse(
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
    pub(super) fn not_canonical(
        &self,
        request_id: &str,
        route: Option<&str>,
        ip: IpAddr,
    ) -> Response<Body> {
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
    pub(super) fn route_of(
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
    pub(super) fn request_id(&self, headers: &HeaderMap, peer: IpAddr) -> RequestId {
        self.request_ids
            .assign(headers, is_trusted(&self.trusted_proxies, peer))
    }

    /// The client certificate of a request: from a peer in `mtls.forwarded_cert_from`, the
    /// one in the configured header (and only there: such a peer's own handshake
    /// certificate is the proxy's, not the client's); from any other peer, the connection's.
    /// An unreadable forwarded one counts as none (no `mtls`, no bound token); a repeated
    /// header is an error, audited with `route` (the caller answers 400).
    pub(super) fn client_cert(
        &self,
        conn: &ConnInfo,
        headers: &http::HeaderMap,
        request_id: &str,
        route: &str,
        ip: IpAddr,
    ) -> Result<Option<Arc<crate::tls::PeerCert>>, crate::authn::mtls::ForwardedError> {
        let Some(f) = self
            .forwarded
            .as_ref()
            .filter(|f| is_trusted(&f.from, conn.peer.ip()))
        else {
            return Ok(conn.cert.clone());
        };
        match crate::authn::mtls::forwarded_cert(headers, f.header, f.ca.as_deref()) {
            Ok(c) => Ok(c.map(Arc::new)),
            Err(crate::authn::mtls::ForwardedError::Unreadable) => {
                tracing::debug!(peer = %conn.peer, "a forwarded client certificate cannot be read; ignored");
                Ok(None)
            }
            Err(crate::authn::mtls::ForwardedError::Repeated) => {
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
                Err(crate::authn::mtls::ForwardedError::Repeated)
            }
        }
    }
}

/// The `tracing` target of the access log.
pub(crate) const ACCESS_LOG: &str = "keycard::access";

/// Which part of keycard a path belongs to.
pub(super) fn endpoint_of(path: &str) -> Endpoint {
    if path == "/.well-known/jwks.json" {
        Endpoint::Jwks
    } else if crate::oauth::OAuth::owns(path) {
        Endpoint::OAuth
    } else if let Some(rest) = path.strip_prefix("/_keycard/") {
        match rest {
            "health" | "ready" => Endpoint::Health,
            "verify" => Endpoint::Verify,
            _ if rest.starts_with("verify/") => Endpoint::Verify,
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
pub(super) enum NoRoute {
    /// No route's prefix: 404.
    NotFound,
    /// Not canonical (audited already): 400.
    NotCanonical,
}

impl NoRoute {
    pub(super) fn answer(self) -> Response<Body> {
        match self {
            NoRoute::NotFound => answer::not_found(),
            NoRoute::NotCanonical => answer::bad_request(),
        }
    }
}
