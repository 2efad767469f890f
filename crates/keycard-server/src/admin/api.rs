//! The admin REST API under `/_keycard/admin/v1/`: what the CLI does, over HTTP, for a
//! caller holding scope `keycard:admin` (API key, client-credentials token or client
//! certificate). JSON in and out; errors are RFC 9457 problem details. The OpenAPI 3.1
//! document (`openapi.json`) is generated from the handlers below by `utoipa`.
//!
//! Every handler calls [`crate::admin::manage::Manager`], the same operations the CLI runs.

pub(crate) use super::handlers::problem;
use bytes::Bytes;
use http::{HeaderValue, Method as HttpMethod, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use keycard_core::Principal;

use super::handlers::{
    Answer, add_cert, add_user, audit, create_client, create_hmac, create_key, disable_subject,
    enable_subject, enroll_totp, error_response, get_user, list_certs, list_clients, list_grants,
    list_hmac, list_keys, list_signing_keys, list_subjects, list_users, logout_user, openapi_json,
    query, revoke_cert, revoke_client, revoke_grant, revoke_grants, revoke_hmac, revoke_key,
    rotate_key, rotate_signing_key, set_password,
};
use crate::admin::manage::{ManageError, Manager};
use crate::upstream::body::Body;

/// The scope an admin credential must hold.
pub(crate) const ADMIN_SCOPE: &str = "keycard:admin";
/// Where the API lives.
pub(crate) const PREFIX: &str = "/_keycard/admin/v1/";
/// The largest request body.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// Turns a refusal answer (401/403 of the gateway, with its challenges) into a problem.
pub(crate) fn as_problem(refused: Response<Body>) -> Response<Body> {
    let (parts, _) = refused.into_parts();
    let mut r = problem(parts.status, None);
    for v in parts.headers.get_all(http::header::WWW_AUTHENTICATE) {
        r.headers_mut()
            .append(http::header::WWW_AUTHENTICATE, v.clone());
    }
    for name in [
        http::header::RETRY_AFTER,
        crate::http::answer::RATELIMIT_LIMIT,
        crate::http::answer::RATELIMIT_REMAINING,
        crate::http::answer::RATELIMIT_RESET,
    ] {
        if let Some(v) = parts.headers.get(&name) {
            r.headers_mut().insert(name, v.clone());
        }
    }
    r
}

/// A path segment, percent-decoded (names may hold any character but controls).
fn segment(s: &str) -> Result<String, ManageError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ManageError::Invalid("path: bad percent-encoding".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ManageError::Invalid("path: not UTF-8".into()))
}

/// The admin API's request handler (after authentication).
#[derive(Debug)]
pub(crate) struct Admin {
    manager: Manager,
    /// Where each operation is audited (the audit writer).
    journal: std::sync::Arc<dyn crate::admin::manage::Journal>,
    doc: Bytes,
}

/// The request an admin call came in: its id and the client's address (for the audit).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    /// The request id.
    pub id: &'a str,
    /// The client's address.
    pub ip: std::net::IpAddr,
}

impl Admin {
    /// The API over `manager`, each operation audited to `journal`.
    pub(crate) fn new(
        manager: Manager,
        journal: std::sync::Arc<dyn crate::admin::manage::Journal>,
    ) -> Self {
        Self {
            manager,
            journal,
            doc: Bytes::from(openapi_json()),
        }
    }

    /// Answers a request `caller` made: `rest` is the path after [`PREFIX`]. Every
    /// operation that changes something is audited with the caller as its actor.
    pub(crate) async fn handle(
        &self,
        caller: &Principal,
        request: Request<'_>,
        method: &HttpMethod,
        rest: &str,
        raw_query: Option<&str>,
        body: hyper::body::Incoming,
    ) -> Response<Body> {
        let m = self.manager.journalled(
            self.journal.clone(),
            crate::admin::manage::Actor {
                route: "admin",
                request_id: request.id.to_owned(),
                method: Some(caller.method()),
                subject: Some(caller.subject().to_owned()),
                credential_id: caller.credential_id().to_owned(),
                ip: Some(request.ip),
            },
        );
        if let Err((operation, target, e)) = not_self_lockout(caller, method, rest) {
            let e = m.refused(operation, &target, e).await;
            return error_response(&e);
        }
        match self.route(&m, method, rest, raw_query, body).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        }
    }

    async fn route(
        &self,
        m: &Manager,
        method: &HttpMethod,
        rest: &str,
        raw_query: Option<&str>,
        body: hyper::body::Incoming,
    ) -> Answer {
        let segs: Vec<&str> = rest.split('/').collect();
        let q = query(raw_query)?;
        let read = || async {
            match Limited::new(body, MAX_BODY).collect().await {
                Ok(c) => Ok(c.to_bytes()),
                Err(_) => Err(ManageError::Invalid(format!(
                    "body: unreadable or over {MAX_BODY} bytes"
                ))),
            }
        };
        use HttpMethod as M;
        match (method, segs.as_slice()) {
            (&M::GET, ["openapi.json"]) => {
                let mut r = Response::new(Body::from_bytes(self.doc.clone()));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Ok(r)
            }
            (&M::GET, ["subjects"]) => list_subjects(m).await,
            (&M::POST, ["subjects", name, "disable"]) => disable_subject(m, &segment(name)?).await,
            (&M::POST, ["subjects", name, "enable"]) => enable_subject(m, &segment(name)?).await,
            (&M::GET, ["users"]) => list_users(m).await,
            (&M::POST, ["users"]) => add_user(m, &read().await?).await,
            (&M::GET, ["users", name]) => get_user(m, &segment(name)?).await,
            (&M::PUT, ["users", name, "password"]) => {
                set_password(m, &segment(name)?, &read().await?).await
            }
            (&M::POST, ["users", name, "totp"]) => enroll_totp(m, &segment(name)?).await,
            (&M::POST, ["users", name, "logout"]) => logout_user(m, &segment(name)?).await,
            (&M::GET, ["users", name, "grants"]) => list_grants(m, &segment(name)?).await,
            (&M::DELETE, ["users", name, "grants"]) => revoke_grants(m, &segment(name)?).await,
            (&M::DELETE, ["users", name, "grants", id]) => {
                revoke_grant(m, &segment(name)?, &segment(id)?).await
            }
            (&M::GET, ["keys"]) => list_keys(m, &q).await,
            (&M::POST, ["keys"]) => create_key(m, &read().await?).await,
            (&M::DELETE, ["keys", id]) => revoke_key(m, &segment(id)?).await,
            (&M::POST, ["keys", id, "rotate"]) => {
                rotate_key(m, &segment(id)?, &read().await?).await
            }
            (&M::GET, ["hmac-keys"]) => list_hmac(m, &q).await,
            (&M::POST, ["hmac-keys"]) => create_hmac(m, &read().await?).await,
            (&M::DELETE, ["hmac-keys", id]) => revoke_hmac(m, &segment(id)?).await,
            (&M::GET, ["clients"]) => list_clients(m).await,
            (&M::POST, ["clients"]) => create_client(m, &read().await?).await,
            (&M::DELETE, ["clients", id]) => revoke_client(m, &segment(id)?).await,
            (&M::GET, ["certs"]) => list_certs(m).await,
            (&M::POST, ["certs"]) => add_cert(m, &read().await?).await,
            (&M::DELETE, ["certs", id]) => revoke_cert(m, &segment(id)?).await,
            (&M::GET, ["signing-keys"]) => list_signing_keys(m).await,
            (&M::POST, ["signing-keys", "rotate"]) => rotate_signing_key(m).await,
            (&M::GET, ["audit"]) => audit(m, &q).await,
            (_, path) => match allowed(path) {
                Some(allow) => {
                    let mut r = problem(
                        StatusCode::METHOD_NOT_ALLOWED,
                        Some(format!("{method} is not allowed here")),
                    );
                    r.headers_mut()
                        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
                    Ok(r)
                }
                None => Ok(problem(StatusCode::NOT_FOUND, None)),
            },
        }
    }
}

/// Why a request to the admin API is refused before its credential is looked at: it
/// comes from a browser on behalf of another site, or carries a body that is not JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrowserRefusal {
    /// `Sec-Fetch-Site` other than `same-origin`/`none`, or an `Origin` other than keycard's
    /// own (`server.public_url`): a page elsewhere making the browser send its client
    /// certificate or session (403).
    CrossSite,
    /// A body without `Content-Type: application/json`: a form post (`text/plain`,
    /// `application/x-www-form-urlencoded`, `multipart/form-data`) needs no CORS preflight,
    /// JSON does (415).
    NotJson,
}

impl BrowserRefusal {
    /// The answer.
    pub(crate) fn answer(self) -> Response<Body> {
        match self {
            BrowserRefusal::CrossSite => problem(
                StatusCode::FORBIDDEN,
                Some("cross-site requests are refused".into()),
            ),
            BrowserRefusal::NotJson => problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("a request body must be Content-Type: application/json".into()),
            ),
        }
    }
}

/// Checks an admin request's headers for what a browser sends on another site's behalf.
/// `origin`: keycard's own, `scheme://host[:port]` of `server.public_url`; `may_have_body`:
/// the body is not known to be empty.
pub(crate) fn browser_check(
    headers: &http::HeaderMap,
    origin: &str,
    method: &HttpMethod,
    may_have_body: bool,
) -> Result<(), BrowserRefusal> {
    for site in headers.get_all("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Err(BrowserRefusal::CrossSite);
        }
    }
    for o in headers.get_all(http::header::ORIGIN) {
        if !o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()) {
            return Err(BrowserRefusal::CrossSite);
        }
    }
    // Reads change nothing: what they carry is not looked at.
    if matches!(
        *method,
        HttpMethod::GET | HttpMethod::HEAD | HttpMethod::OPTIONS
    ) {
        return Ok(());
    }
    let mut types = headers.get_all(http::header::CONTENT_TYPE).iter();
    let json = match (types.next(), types.next()) {
        (None, _) => None,
        (Some(t), None) => Some(
            t.to_str()
                .ok()
                .and_then(|t| t.split(';').next())
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")),
        ),
        (Some(_), Some(_)) => Some(false),
    };
    match json {
        Some(false) => Err(BrowserRefusal::NotJson),
        None if may_have_body => Err(BrowserRefusal::NotJson),
        _ => Ok(()),
    }
}

/// Refuses what would lock the caller out: revoking or rotating the credential it is
/// using, or disabling its own subject. Another admin credential can do it.
fn not_self_lockout(
    caller: &Principal,
    method: &HttpMethod,
    rest: &str,
) -> Result<(), (&'static str, String, ManageError)> {
    let segs: Vec<&str> = rest.split('/').collect();
    let own = |seg: &str| segment(seg).ok().filter(|s| s == caller.credential_id());
    let locked = match (method, segs.as_slice()) {
        (&HttpMethod::DELETE, [kind, id]) => {
            let op = match *kind {
                "keys" => "key.revoke",
                "hmac-keys" => "hmac.revoke",
                "clients" => "client.revoke",
                "certs" => "cert.revoke",
                _ => return Ok(()),
            };
            own(id).map(|id| (op, id))
        }
        (&HttpMethod::POST, ["keys", id, "rotate"]) => own(id).map(|id| ("key.rotate", id)),
        (&HttpMethod::POST, ["subjects", name, "disable"]) => segment(name)
            .ok()
            .filter(|s| s == caller.subject())
            .map(|name| ("subject.disable", name)),
        _ => None,
    };
    match locked {
        Some((op, target)) => Err((
            op,
            target,
            ManageError::Conflict(
                "this is the credential (or subject) making the request: use another admin credential"
                    .into(),
            ),
        )),
        None => Ok(()),
    }
}

/// The methods a known path takes (for 405), `None` for an unknown path.
fn allowed(path: &[&str]) -> Option<&'static str> {
    Some(match path {
        ["openapi.json" | "subjects" | "signing-keys" | "audit" | "certs" | "clients"] => {
            match path {
                ["certs" | "clients"] => "GET, POST",
                _ => "GET",
            }
        }
        ["users" | "keys" | "hmac-keys"] => "GET, POST",
        ["subjects", _, "disable" | "enable"]
        | ["keys", _, "rotate"]
        | ["users", _, "totp" | "logout"] => "POST",
        ["signing-keys", "rotate"] => "POST",
        ["users", _] => "GET",
        ["users", _, "password"] => "PUT",
        ["users", _, "grants"] => "GET, DELETE",
        ["users", _, "grants", _] => "DELETE",
        ["keys" | "hmac-keys" | "clients" | "certs", _] => "DELETE",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_operation() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/subjects",
            "/users",
            "/users/{name}/password",
            "/users/{name}/logout",
            "/users/{name}/grants",
            "/keys",
            "/keys/{id}/rotate",
            "/hmac-keys",
            "/clients",
            "/certs",
            "/signing-keys/rotate",
            "/audit",
        ] {
            assert!(paths.contains_key(p), "{p}");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }

    #[test]
    fn segments_are_percent_decoded_and_bad_ones_refused() {
        assert_eq!(segment("a%20b").unwrap(), "a b");
        assert_eq!(segment("plain").unwrap(), "plain");
        assert!(segment("%zz").is_err());
        assert!(segment("%ff").is_err());
        assert!(segment("%2").is_err());
    }

    #[test]
    fn unknown_and_wrong_method_paths() {
        assert_eq!(allowed(&["keys"]), Some("GET, POST"));
        assert_eq!(allowed(&["keys", "x"]), Some("DELETE"));
        assert_eq!(allowed(&["nope"]), None);
    }
}
