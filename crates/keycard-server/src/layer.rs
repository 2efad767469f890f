//! keycard inside your own service: a [tower] layer that verifies every request in-process —
//! no proxy hop — with the same methods, store, caches, change feed, refusals and audit
//! trail as the gateway.
//!
//! # What it does
//! [`KeycardLayer`] wraps a service. Each request is checked by the gate — the very
//! step the gateway and `/_keycard/verify` run — against the layer's policy (allowed methods,
//! required scopes, optional rate limit). A request that passes reaches the inner service
//! with the verified caller in its extensions as [`Authenticated`]; one that does not gets
//! the reference §6 answer (401 with challenges, 403, 429, 503) and never reaches it. Every
//! attempt is audited, revocations made anywhere reach the caches within a second.
//!
//! It is as strict as the gateway: any `X-Keycard-*` header the client sent (or its spelling
//! with `_`) is removed before the inner service runs, and a verified caller's identity
//! headers are set as the gateway sets them; `X-Forwarded-For`, `-Proto` and `-Host` count
//! (for the client address, `@scheme` and `@authority`) only from `server.trusted_proxies`;
//! a body a credential signs is read under the gateway's bound
//! ([`MAX_SIGNED_BODY`], 413 beyond) and from the same permits
//! ([`CONCURRENT_READS`] at once, 503 beyond).
//!
//! # What it does not
//! It does not terminate TLS: for `mtls`, hand the peer's certificate chain over in a
//! [`PeerCertificates`] extension. It does not serve keycard's own endpoints (token
//! endpoint, JWKS, admin API): run `keycard serve` for those, on the same store.
//!
//! # Example (axum)
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//! use keycard_core::Method;
//! use keycard_server::layer::{Authenticated, Embedded};
//!
//! let settings = keycard_server::Settings::load(std::path::Path::new("keycard.toml"))?;
//! let keycard = Embedded::start(&settings).await?;
//! let orders = keycard
//!     .layer("/orders/")
//!     .methods([Method::ApiKey, Method::Oauth2, Method::Hmac])
//!     .scopes(["orders:read"])?;
//! let app: Router = Router::new()
//!     .route("/orders/{id}", get(|Authenticated(who): Authenticated| async move {
//!         format!("hello {}", who.subject())
//!     }))
//!     .layer(orders);
//! # let _ = app; Ok(()) }
//! ```
//!
//! # Per method
//! What a caller sends to a layered service — exactly what it sends to the gateway:
//!
//! | method | the request carries |
//! |---|---|
//! | `api_key` | `X-API-Key: kc_…` or `Authorization: Bearer kc_…` (`keycard key create`) |
//! | `oauth2` | `Authorization: Bearer <access token>` from `keycard serve`'s `/oauth2/token` |
//! | `jwt` | `Authorization: Bearer <JWT>` of a `[[jwt.issuers]]` issuer |
//! | `basic`, `digest` | `Authorization: Basic …` / `Digest …` (the 401 carries the challenges) |
//! | `hmac` | `Signature-Input`, `Signature` (+ `Content-Digest`): [`keycard_core::sign`] |
//! | `mtls` | no header: the host puts the TLS peer's chain in [`PeerCertificates`] |
//!
//! A caller signing with the Rust helper, for the `hmac` method:
//! ```
//! use keycard_core::sign::{Signer, sign_http_request};
//!
//! let secret = [7u8; 32]; // `keycard hmac create`'s secret, base64-decoded
//! let mut req = http::Request::post("https://orders.internal/orders")
//!     .header("content-type", "application/json")
//!     .body(r#"{"sku":"A1"}"#)
//!     .unwrap();
//! let body = req.body().as_bytes().to_vec();
//! sign_http_request(&mut req, &body, &Signer::Hmac(&secret), "hk_3kTMd9", &["content-type"])
//!     .unwrap();
//! assert!(req.headers().contains_key("signature"));
//! ```
//!
//! A host handing over the client certificate, for the `mtls` method:
//! ```
//! use keycard_server::layer::PeerCertificates;
//!
//! # let chain_der: Vec<Vec<u8>> = Vec::new();
//! let mut req = http::Request::get("/whoami").body(()).unwrap();
//! // `chain_der`: from the TLS stack (rustls: `peer_certificates()`), leaf first.
//! req.extensions_mut().insert(PeerCertificates(chain_der));
//! ```
//!
//! The peer address comes from axum's `ConnectInfo<SocketAddr>` (serve with
//! `into_make_service_with_connect_info`), or a [`PeerAddr`] extension; without either the
//! failed-attempt throttle counts all callers as one address. A host that terminates TLS
//! itself says so with a [`ConnectionIsTls`] extension (the `@scheme` a signature covers).
//!
//! [tower]: https://docs.rs/tower

pub use crate::http::signed_body::{CONCURRENT_READS, MAX_SIGNED_BODY, READS_PER_CLIENT};

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Either;
use keycard_core::route::RoutePolicy;
use keycard_core::{Method, MethodSet, Principal, Scopes};

use crate::authn::RequestFacts;
use crate::server::gate::Gate;
use crate::upstream::body::Body;
use crate::{Core, Settings, StartError};

/// The verified caller, in the request's extensions (and an axum extractor with the `axum`
/// feature).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// The peer's address, for services not on axum's `ConnectInfo`.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The host's connection is TLS (it serves HTTPS itself): `@scheme` is `https` for RFC 9421
/// signatures, as at the gateway. A request behind a trusted proxy takes the proxy's
/// `X-Forwarded-Proto` instead; one with [`PeerCertificates`] is TLS already.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionIsTls;

/// The peer's certificate chain (DER, leaf first) from the host service's TLS handshake,
/// for the `mtls` method. keycard verifies it against `mtls.client_ca` itself.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Vec<Vec<u8>>);

/// keycard's state without a listener: store, caches kept fresh by the change feed, audit
/// writer, authenticator. Make one per process; [`Embedded::layer`] makes layers from it.
#[derive(Debug)]
pub struct Embedded {
    shared: Arc<Shared>,
    core: Core,
}

#[derive(Debug)]
struct Shared {
    gate: Gate,
    client_ca: Option<Arc<crate::tls::ClientCa>>,
    /// `server.trusted_proxies`: whose `X-Forwarded-For`, `-Proto` and `-Host` are believed
    /// (the client address, `@scheme` and `@authority`), as at the gateway.
    trusted_proxies: Vec<ipnet::IpNet>,
    /// The process's permits for reading signed bodies, shared with `keycard serve`'s
    /// listener when both run on one core.
    body_reads: Arc<crate::http::signed_body::BodyReads>,
    request_ids: crate::http::request::RequestIds,
}

impl Embedded {
    /// Opens the store (creating and migrating it), loads the master key, follows the change
    /// feed and starts the audit writer — what `keycard serve` does, less the listener.
    pub async fn start(settings: &Settings) -> Result<Embedded, StartError> {
        let store = keycard_store::Store::open(settings.store_url.as_str()).await?;
        let master = crate::master_key::unlock(&store, &settings.master_key_file).await?;
        let core = Core::start(settings, master, store).await?;
        let shared = Arc::new(Shared {
            gate: Gate {
                authn: core.authn.clone(),
                audit: core.sink.clone(),
                challenger: crate::http::answer::Challenger::new(settings, &core.master),
            },
            client_ca: crate::authn::mtls::forwarding_ca(&settings.mtls),
            trusted_proxies: settings.trusted_proxies.clone(),
            body_reads: core.body_reads.clone(),
            request_ids: crate::http::request::RequestIds::new(),
        });
        Ok(Embedded { shared, core })
    }

    /// A layer for the requests under `route` (the audit `route`; any label will do). By
    /// default every method is allowed and no scope is required: narrow it with
    /// [`KeycardLayer::methods`] and [`KeycardLayer::scopes`].
    pub fn layer(&self, route: &str) -> KeycardLayer {
        KeycardLayer {
            shared: self.shared.clone(),
            policy: Arc::new(RoutePolicy {
                prefix: route.into(),
                methods: MethodSet::all(),
                scopes: Scopes::default(),
                public: false,
                rate_limit: None,
            }),
        }
    }

    /// A layer with a route's policy from the config (`[[routes]]` with this `prefix`).
    pub fn layer_for_route(&self, settings: &Settings, prefix: &str) -> Option<KeycardLayer> {
        let route = settings
            .routes
            .iter()
            .find(|r| *r.policy.prefix == *prefix)?;
        Some(KeycardLayer {
            shared: self.shared.clone(),
            policy: Arc::new(route.policy.clone()),
        })
    }

    /// Stops the feed and the timers, writes the audit queue, closes the store.
    pub async fn shutdown(self) {
        self.core.shutdown().await;
    }
}

/// The tower layer. Cheap to clone; one per policy.
#[derive(Debug, Clone)]
pub struct KeycardLayer {
    shared: Arc<Shared>,
    policy: Arc<RoutePolicy>,
}

/// A scope that cannot be one (see [`Scopes`]).
#[derive(Debug, thiserror::Error)]
#[error("invalid scope: {0}")]
pub struct InvalidScope(String);

impl KeycardLayer {
    /// Allows only these methods.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        let mut set = MethodSet::empty();
        for m in methods {
            set.insert(m);
        }
        Arc::make_mut(&mut self.policy).methods = set;
        self
    }

    /// Requires all these scopes (403 `insufficient_scope` without them).
    pub fn scopes<I, S>(mut self, scopes: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Arc::make_mut(&mut self.policy).scopes =
            Scopes::from_list(scopes).map_err(|e| InvalidScope(e.to_string()))?;
        Ok(self)
    }

    /// Limits each subject to `rate` (such as `"100/s"`; 429 beyond).
    pub fn rate_limit(mut self, rate: &str) -> Result<Self, InvalidScope> {
        let r = keycard_core::parse_rate(rate).map_err(|e| InvalidScope(e.to_string()))?;
        Arc::make_mut(&mut self.policy).rate_limit = Some(keycard_core::rate::Gcra::new(r, None));
        Ok(self)
    }
}

impl<S> tower_layer::Layer<S> for KeycardLayer {
    type Service = KeycardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KeycardService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`KeycardLayer`] wraps around yours.
#[derive(Debug, Clone)]
pub struct KeycardService<S> {
    inner: S,
    layer: KeycardLayer,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B, RB> tower_service::Service<Request<B>> for KeycardService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + From<Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Either<RB, Body>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The ready inner service goes with this call; its clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let req = match layer.verify(req).await {
                Ok(req) => req,
                Err(refused) => return Ok(refused.map(Either::Right)),
            };
            let (req, passed) = req;
            let mut resp = inner.call(req).await?;
            passed.set_headers(resp.headers_mut());
            Ok(resp.map(Either::Left))
        })
    }
}

impl KeycardLayer {
    /// [`Gate::check`] for one request: on success the request (its body restored when it
    /// was read) with [`Authenticated`] in its extensions.
    async fn verify<B>(
        &self,
        req: Request<B>,
    ) -> Result<(Request<B>, crate::server::gate::Passed), Response<Body>>
    where
        B: http_body::Body + From<Bytes>,
        B::Error: Into<BoxError>,
    {
        let shared = &self.shared;
        let policy = &*self.policy;
        let peer = peer_ip(&req);
        let peer_trusted = crate::http::forwarded::is_trusted(&shared.trusted_proxies, peer);
        let request_id = shared.request_ids.assign(req.headers(), peer_trusted);
        let (mut parts, body) = req.into_parts();
        // Whatever the client sent as keycard's word never reaches the inner service, nor a
        // forwarded client certificate (the layer reads the host's handshake only).
        crate::upstream::identity::strip_identity(&mut parts.headers);
        parts.headers.remove(crate::authn::mtls::X_SSL_CLIENT_CERT);
        parts
            .headers
            .remove(crate::authn::mtls::X_FORWARDED_CLIENT_CERT);
        let ip = crate::http::forwarded::client_ip(&shared.trusted_proxies, peer, &parts.headers);
        let cert = parts.extensions.get::<PeerCertificates>().and_then(|c| {
            let chain: Vec<rustls_pki_types::CertificateDer<'_>> =
                c.0.iter()
                    .map(|d| rustls_pki_types::CertificateDer::from(d.as_slice()))
                    .collect();
            crate::tls::PeerCert::judge(
                &chain,
                shared.client_ca.as_deref(),
                keycard_core::CertSource::Tls,
            )
        });
        let tls = parts.uri.scheme_str() == Some("https")
            || cert.is_some()
            || parts.extensions.get::<ConnectionIsTls>().is_some();
        let (scheme, authority) =
            crate::http::request::client_origin(&parts.headers, &parts.uri, peer_trusted, tls);
        let target = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        // A credential that signs the body needs it before the check: read under the same
        // bound as the gateway's, from the same permits, once the credential could verify.
        let may_have_body = !body.is_end_stream();
        let signs_body =
            !policy.public && crate::http::request::wants_body(&parts.headers, may_have_body);
        let unread = RequestFacts {
            method: parts.method.as_str(),
            target,
            scheme,
            authority,
            headers: &parts.headers,
            ip,
            body: None,
            body_unread: false,
            cert: None,
        };
        let reading = if signs_body {
            crate::http::signed_body::permit_to_read(
                &shared.body_reads,
                &shared.gate.authn,
                &unread,
            )
            .await?
        } else {
            None
        };
        let (body, bytes) = if reading.is_some() {
            let b = crate::http::signed_body::read(body).await?;
            (B::from(b.clone()), Some(b))
        } else {
            (body, None)
        };
        let facts = RequestFacts {
            body: bytes.as_deref(),
            body_unread: signs_body && bytes.is_none(),
            cert: cert.as_ref(),
            ..unread
        };
        let passed = shared.gate.check(policy, &facts, request_id.as_str()).await;
        drop(reading);
        let passed = passed?;
        let mut req = Request::from_parts(parts, body);
        if let Some(p) = &passed.principal {
            crate::upstream::identity::set_identity(req.headers_mut(), p);
            req.extensions_mut().insert(Authenticated(p.clone()));
        }
        Ok((req, passed))
    }
}

fn peer_ip<B>(req: &Request<B>) -> IpAddr {
    if let Some(PeerAddr(a)) = req.extensions().get::<PeerAddr>() {
        return a.ip();
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(a)) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return a.ip();
    }
    // Without an address every caller counts as one for the failed-attempt throttle: one
    // guesser could lock everybody out. Say so, once.
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "keycard layer: the request carries no peer address (axum ConnectInfo or PeerAddr); \
             the failed-attempt throttle counts all callers as one"
        );
    });
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Authenticated {
    type Rejection = http::StatusCode;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        // Present whenever the layer let the request through; absent only when a handler
        // is not behind the layer — a programming error, answered as one.
        parts
            .extensions
            .get::<Authenticated>()
            .cloned()
            .ok_or(http::StatusCode::INTERNAL_SERVER_ERROR)
    }
}
