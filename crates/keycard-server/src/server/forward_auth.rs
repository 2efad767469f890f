//! Forward-auth (`/_keycard/verify`): the verdict on a request a proxy in front holds, read
//! from the proxy's headers and believed only from `server.trusted_proxies`.

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;

use super::app::App;
use crate::authn::RequestFacts;
use crate::config::{METHOD_HEADERS, URI_HEADERS};
use crate::http::answer::{self};
use crate::http::forwarded::{client_ip, is_trusted};
use crate::http::request::{ConnInfo, client_origin, wants_body};
use crate::http::signed_body::permit_to_read;
use crate::upstream::body::Body;
use crate::upstream::identity;

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

/// `X-Keycard-Error`: the kind of a refusal, on `/_keycard/verify` answers.
const X_KEYCARD_ERROR: HeaderName = HeaderName::from_static("x-keycard-error");

/// What a proxy gets back from `/_keycard/verify`: no body on a 200 or on a refusal, so its
/// connection to keycard can carry the next check (nginx reads only the head of an auth
/// subrequest's answer, and does not pool a connection with a body left unread). The kind
/// of a refusal is in `X-Keycard-Error` (the code keycard's own answers carry in their JSON
/// elsewhere, as coarse: `unauthorized`, never why), its challenges in `WWW-Authenticate`.
/// A 400 saying what the proxy sends wrong keeps its explanation for the operator.
fn bodiless(r: Response<Body>) -> Response<Body> {
    let code = match r.status() {
        StatusCode::OK => None,
        StatusCode::BAD_REQUEST => {
            let mut r = r;
            r.headers_mut()
                .insert(X_KEYCARD_ERROR, HeaderValue::from_static("bad_request"));
            return r;
        }
        StatusCode::UNAUTHORIZED => Some("unauthorized"),
        StatusCode::FORBIDDEN => Some("insufficient_scope"),
        StatusCode::NOT_FOUND => Some("not_found"),
        StatusCode::REQUEST_TIMEOUT => Some("request_timeout"),
        StatusCode::PAYLOAD_TOO_LARGE => Some("payload_too_large"),
        StatusCode::TOO_MANY_REQUESTS => Some("too_many_requests"),
        StatusCode::SERVICE_UNAVAILABLE => Some("unavailable"),
        _ => Some("error"),
    };
    let (mut parts, _) = r.into_parts();
    parts.headers.remove(http::header::CONTENT_TYPE);
    if let Some(code) = code {
        parts
            .headers
            .insert(X_KEYCARD_ERROR, HeaderValue::from_static(code));
    }
    Response::from_parts(parts, Body::empty())
}

impl App {
    /// `/_keycard/verify`: the verdict on the request the proxy describes, without a body.
    pub(super) async fn forward_auth(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        request_id: &str,
    ) -> Response<Body> {
        bodiless(self.verdict(req, conn, request_id).await)
    }

    async fn verdict(
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
            crate::http::forwarded::X_FORWARDED_HOST,
            crate::http::forwarded::X_FORWARDED_PROTO,
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
        let reading = if signs_body && !incoming.is_end_stream() {
            match permit_to_read(&self.body_reads, &self.authn, &unread).await {
                Ok(p) => p,
                Err(refused) => return refused,
            }
        } else {
            None
        };
        let body = if reading.is_some() {
            match crate::http::signed_body::read(incoming).await {
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
                let mut r = Response::new(Body::empty());
                // An allow is for this request alone: no cache in between may keep it.
                r.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    HeaderValue::from_static("no-store"),
                );
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
