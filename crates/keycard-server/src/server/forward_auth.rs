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
const NO_ORIGINAL_URI: &str = r#"{"error":"no_original_uri","error_description":"the proxy did not send the original request's URI, after /_keycard/verify in the path (Envoy's path_prefix) or in the header forward_auth.uri_header names (X-Forwarded-Uri by default; X-Original-URI for nginx auth_request)"}"#;

/// `/_keycard/verify` for a method-bound credential without the original method.
const NO_ORIGINAL_METHOD: &str = r#"{"error":"no_original_method","error_description":"a signature or Digest credential is bound to the original request's method, which the proxy did not send in the header forward_auth.method_header names (X-Forwarded-Method by default; X-Original-Method for nginx auth_request)"}"#;

/// `/_keycard/verify/<path>` (prefix mode) with a header naming the method or host.
const PREFIX_AND_HEADER: &str = r#"{"error":"ambiguous_forwarded_header","error_description":"in prefix mode (/_keycard/verify/<path>) the request's own method and Host are the original's: a method header or X-Forwarded-Host beside them is refused (do not pass the client's x-forwarded-method or x-forwarded-host to keycard)"}"#;

/// The header Envoy adds when it passed only part of the body (`allow_partial_message`).
pub(super) const PARTIAL_BODY: &str = "x-envoy-auth-partial-body";

/// `/_keycard/verify` with a forwarded value twice, under both names, or both after the
/// path prefix and in a header.
const TWO_VALUES: &str = r#"{"error":"ambiguous_forwarded_header","error_description":"a forwarded header was sent twice, under both of its names, or with a value that is not one (forward_auth.uri_header and forward_auth.method_header name the one header each that is read)"}"#;

/// The two names of each part of the original request a proxy names in a header.
const URI_NAMES: [HeaderName; 2] = [
    HeaderName::from_static(URI_HEADERS[0]),
    HeaderName::from_static(URI_HEADERS[1]),
];
const METHOD_NAMES: [HeaderName; 2] = [
    HeaderName::from_static(METHOD_HEADERS[0]),
    HeaderName::from_static(METHOD_HEADERS[1]),
];

/// The one value of the forward-auth header `name` (one of `names`): `Err` when it is sent
/// twice, is not text, or the other of `names` is present too (a client adding the header
/// the proxy does not set must not be read instead of, or beside, the proxy's).
fn one_forwarded<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    names: &[HeaderName; 2],
) -> Result<Option<&'a str>, ()> {
    if names.iter().any(|n| n != name && headers.contains_key(n)) {
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
fn forwarded_body_signed(
    presented: &keycard_core::credential::Presented<'_>,
    headers: &HeaderMap,
    original_method: &str,
) -> bool {
    match presented {
        keycard_core::credential::Presented::Signature { .. } => {
            headers.contains_key("content-digest")
                || !matches!(original_method, "GET" | "HEAD" | "OPTIONS" | "TRACE")
        }
        keycard_core::credential::Presented::Digest(_) => wants_body(headers, true),
        _ => false,
    }
}

/// The forward-auth endpoint; in prefix mode the original target follows it.
const VERIFY: &str = "/_keycard/verify";

/// `X-Keycard-Error`: the kind of a refusal, on `/_keycard/verify` answers.
const X_KEYCARD_ERROR: HeaderName = HeaderName::from_static("x-keycard-error");

/// What a proxy gets back from `/_keycard/verify`: no body on a 200 or on a refusal, so its
/// connection to keycard can carry the next check (nginx reads only the head of an auth
/// subrequest's answer, and does not pool a connection with a body left unread). The kind
/// of a refusal is in `X-Keycard-Error` (the code keycard's own answers carry in their JSON
/// elsewhere, as coarse: `unauthorized`, never why), its challenges in `WWW-Authenticate`.
/// A 400 saying what the proxy sends wrong keeps its explanation for the operator.
pub(super) fn bodiless(r: Response<Body>) -> Response<Body> {
    let code = match r.status() {
        // The allow is made without a body.
        StatusCode::OK => return r,
        StatusCode::BAD_REQUEST => {
            let mut r = r;
            r.headers_mut()
                .insert(X_KEYCARD_ERROR, HeaderValue::from_static("bad_request"));
            return r;
        }
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "insufficient_scope",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "error",
    };
    let (mut parts, _) = r.into_parts();
    parts.headers.remove(http::header::CONTENT_TYPE);
    one_challenge_field(&mut parts.headers);
    parts
        .headers
        .insert(X_KEYCARD_ERROR, HeaderValue::from_static(code));
    Response::from_parts(parts, Body::empty())
}

/// The challenges of a refusal as one `WWW-Authenticate` field (a list, RFC 9110 §11.6.1):
/// nginx's `auth_request` passes on only the first field of its subrequest's answer, which
/// would leave a Digest or Basic client with nothing but `Bearer`. A browser reads only the
/// first scheme of a field, so the schemes it knows go first, the strongest ahead: Digest,
/// then Basic, then the rest (clients of `Bearer` find it by name in the list).
fn one_challenge_field(headers: &mut HeaderMap) {
    let mut values: Vec<HeaderValue> = match headers.entry(http::header::WWW_AUTHENTICATE) {
        http::header::Entry::Occupied(e) => e.remove_entry_mult().1.collect(),
        http::header::Entry::Vacant(_) => return,
    };
    let rank = |v: &HeaderValue| {
        let scheme = v
            .as_bytes()
            .split(|b| *b == b' ')
            .next()
            .unwrap_or_default();
        if scheme.eq_ignore_ascii_case(b"digest") {
            0
        } else if scheme.eq_ignore_ascii_case(b"basic") {
            1
        } else {
            2
        }
    };
    values.sort_by_key(rank);
    let mut joined = Vec::with_capacity(values.iter().map(|v| v.len() + 2).sum());
    for v in &values {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(http::header::WWW_AUTHENTICATE, v);
    }
}

/// The original request's method, as the proxy describes it.
#[derive(Debug, Clone, Copy)]
pub(super) enum OriginalMethod<'a> {
    /// Named by the proxy (a header, or the method of a request that keeps it).
    Named(&'a str),
    /// Not named: the method of the proxy's own request, which need not be the original's.
    /// A credential bound to the method is refused rather than judged against it.
    Assumed(&'a str),
}

/// The body of the original request, as the proxy passes it.
#[derive(Debug)]
pub(super) enum OriginalBody {
    /// The proxy's request streams it (Envoy's HTTP service with `with_request_body`), or
    /// sends none.
    Stream(Incoming),
    /// Whole, in the description (Envoy's gRPC service with `with_request_body`).
    Given(bytes::Bytes),
    /// Not passed (or passed in part): a credential that signs it is refused.
    Withheld,
}

/// The original request a trusted proxy described.
#[derive(Debug)]
pub(super) struct Original<'a> {
    /// The connection the description came on.
    pub(super) conn: &'a ConnInfo,
    /// The client's address.
    pub(super) ip: std::net::IpAddr,
    /// The request-target, exactly as the client sent it.
    pub(super) target: &'a str,
    pub(super) method: OriginalMethod<'a>,
    pub(super) scheme: &'a str,
    pub(super) authority: &'a str,
    /// The client's headers (the credential is read from them).
    pub(super) headers: &'a HeaderMap,
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
        // Prefix mode (Envoy's HTTP `ext_authz` with `path_prefix: /_keycard/verify`): the
        // original target follows the prefix, and the original method is the request's own.
        let prefixed = req
            .uri()
            .path_and_query()
            .and_then(|pq| pq.as_str().strip_prefix(VERIFY))
            .filter(|rest| !rest.is_empty() && !rest.starts_with('?'));
        let named = match one_forwarded(req.headers(), &fa.uri_header, &URI_NAMES) {
            Ok(t) => t,
            Err(()) => return untrusted(TWO_VALUES),
        };
        let target = match (prefixed, named) {
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => return untrusted(NO_ORIGINAL_URI),
            (Some(_), Some(_)) => return untrusted(TWO_VALUES),
        };
        let prefix_mode = prefixed.is_some();
        let method = match one_forwarded(req.headers(), &fa.method_header, &METHOD_NAMES) {
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
        // In prefix mode the request's own method and Host are the original's (Envoy keeps
        // both and sets neither header): a header naming them is a client's, passed on by
        // the proxy, and would let a signature for GET on one host pass a DELETE on another.
        if prefix_mode
            && (method.is_some()
                || req
                    .headers()
                    .contains_key(crate::http::forwarded::X_FORWARDED_HOST))
        {
            return untrusted(PREFIX_AND_HEADER);
        }
        // Envoy marks a body it passed only in part: none was passed that could be checked.
        let partial = req
            .headers()
            .get(PARTIAL_BODY)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let target = target.to_owned();
        let (parts, incoming) = req.into_parts();
        // The original method as the proxy names it. nginx's `auth_request` always sends GET
        // and names the original in a header; Envoy's prefix mode keeps the original.
        let method = match (method.as_deref(), prefix_mode) {
            (Some(m), _) => OriginalMethod::Named(m),
            (None, true) => OriginalMethod::Named(parts.method.as_str()),
            (None, false) => OriginalMethod::Assumed(parts.method.as_str()),
        };
        // Forward-auth: X-Forwarded-Host/-Proto describe the original request (reference §1).
        let (scheme, authority) = client_origin(&parts.headers, &parts.uri, true, conn.tls);
        let original = Original {
            conn: &conn,
            ip,
            target: &target,
            method,
            scheme,
            authority,
            headers: &parts.headers,
        };
        let body = if partial {
            OriginalBody::Withheld
        } else {
            OriginalBody::Stream(incoming)
        };
        self.decide(original, body, request_id).await
    }

    /// The verdict on the original request a trusted proxy described: 200 with the identity
    /// headers, or the refusal (with a body, which [`bodiless`] drops for HTTP proxies).
    pub(super) async fn decide(
        &self,
        original: Original<'_>,
        body: OriginalBody,
        request_id: &str,
    ) -> Response<Body> {
        let Original {
            conn,
            ip,
            target,
            method,
            scheme,
            authority,
            headers,
        } = original;
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
        let cert = match self.client_cert(conn, headers, request_id, &policy.prefix, ip) {
            Ok(c) => c,
            Err(_) => return answer::bad_request(),
        };
        // A credential that binds the method (a signature, Digest) is judged against the
        // original request's, which only the proxy can name: the subrequest's own (nginx
        // `auth_request` always sends GET) would let a GET signature authorise a DELETE.
        let presented = keycard_core::credential::presented(headers);
        let binds_method = matches!(
            presented,
            keycard_core::credential::Presented::Signature { .. }
                | keycard_core::credential::Presented::Digest(_)
        );
        let method = match method {
            OriginalMethod::Named(m) => m,
            OriginalMethod::Assumed(_) if binds_method && !policy.public => {
                return self.refuse(
                    request_id,
                    Some(&policy.prefix),
                    ip,
                    keycard_core::Reason::UntrustedForwardedHeader,
                    answer::json(StatusCode::BAD_REQUEST, NO_ORIGINAL_METHOD),
                );
            }
            OriginalMethod::Assumed(m) => m,
        };
        // The proxy may pass the body (Envoy can); nginx's `auth_request` does not. A
        // credential that signs a body the proxy did not pass cannot vouch for it: it is
        // refused ([`RequestFacts::body_unread`]) rather than checked against nothing.
        let signs_body = !policy.public && forwarded_body_signed(&presented, headers, method);
        let unread = RequestFacts {
            method,
            target,
            scheme,
            authority,
            headers,
            ip,
            body: None,
            body_unread: false,
            cert: None,
        };
        let (_permit, body) = match body {
            OriginalBody::Stream(incoming) if signs_body && !incoming.is_end_stream() => {
                match permit_to_read(&self.body_reads, &self.authn, &unread).await {
                    Ok(Some(p)) => match crate::http::signed_body::read(incoming).await {
                        Ok(b) => (Some(p), Some(b)),
                        Err(r) => return r,
                    },
                    Ok(None) => (None, None),
                    Err(refused) => return refused,
                }
            }
            OriginalBody::Given(b) if signs_body => {
                if b.len() > crate::http::signed_body::MAX_SIGNED_BODY {
                    return answer::json(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        r#"{"error":"payload_too_large"}"#,
                    );
                }
                (None, Some(b))
            }
            OriginalBody::Stream(_) | OriginalBody::Given(_) | OriginalBody::Withheld => {
                (None, None)
            }
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
                // No-store, the identity and rate-limit headers: one allocation for all.
                r.headers_mut().reserve(12);
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
