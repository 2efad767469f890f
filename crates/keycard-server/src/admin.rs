//! The admin REST API under `/_keycard/admin/v1/`: what the CLI does, over HTTP, for a
//! caller holding scope `keycard:admin` (API key, client-credentials token or client
//! certificate). JSON in and out; errors are RFC 9457 problem details. The OpenAPI 3.1
//! document (`openapi.json`) is generated from the handlers below by `utoipa`.
//!
//! Every handler calls [`crate::manage::Manager`], the same operations the CLI runs.

use bytes::Bytes;
use http::{HeaderValue, Method as HttpMethod, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use keycard_core::{Outcome, Principal, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::body::Body;
use crate::manage::{
    AuditFilter, AuditPage, CertView, ClientCreated, ClientView, GrantView, HmacCreated, HmacView,
    KeyCreated, KeyView, ManageError, Manager, NewCertRequest, NewClientRequest, NewHmacRequest,
    NewKeyRequest, NewUserRequest, SignedOut, SigningKeyRotated, SigningKeyView, SubjectView,
    TotpEnrolled, UserView,
};

/// The scope an admin credential must hold.
pub const ADMIN_SCOPE: &str = "keycard:admin";
/// Where the API lives.
pub const PREFIX: &str = "/_keycard/admin/v1/";
/// The largest request body.
pub const MAX_BODY: usize = 1024 * 1024;

/// An RFC 9457 problem.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What was wrong (absent on 401 and 403: refusals do not say why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `unauthorized` (401) or `insufficient_scope` (403), as keycard's other refusals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

/// A problem response.
pub fn problem(status: StatusCode, detail: Option<String>) -> Response<Body> {
    let error = match status {
        StatusCode::UNAUTHORIZED => Some("unauthorized"),
        StatusCode::FORBIDDEN => Some("insufficient_scope"),
        _ => None,
    };
    let p = Problem {
        kind: "about:blank",
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        error,
    };
    let body = serde_json::to_vec(&p).unwrap_or_default();
    let mut r = Response::new(Body::from_bytes(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

/// Turns a refusal answer (401/403 of the gateway, with its challenges) into a problem.
pub fn as_problem(refused: Response<Body>) -> Response<Body> {
    let (parts, _) = refused.into_parts();
    let mut r = problem(parts.status, None);
    for v in parts.headers.get_all(http::header::WWW_AUTHENTICATE) {
        r.headers_mut()
            .append(http::header::WWW_AUTHENTICATE, v.clone());
    }
    for name in [
        http::header::RETRY_AFTER,
        crate::answer::RATELIMIT_LIMIT,
        crate::answer::RATELIMIT_REMAINING,
        crate::answer::RATELIMIT_RESET,
    ] {
        if let Some(v) = parts.headers.get(&name) {
            r.headers_mut().insert(name, v.clone());
        }
    }
    r
}

fn error_response(e: &ManageError) -> Response<Body> {
    match e {
        ManageError::Invalid(m) => problem(StatusCode::BAD_REQUEST, Some(m.clone())),
        ManageError::NotFound(m) => problem(StatusCode::NOT_FOUND, Some(m.clone())),
        ManageError::Conflict(m) => problem(StatusCode::CONFLICT, Some(m.clone())),
        ManageError::Unavailable(m) => {
            tracing::warn!(error = %m, "admin API: the store is unavailable");
            problem(StatusCode::SERVICE_UNAVAILABLE, None)
        }
        ManageError::Internal(m) => {
            tracing::error!(error = %m, "admin API: internal error");
            problem(StatusCode::INTERNAL_SERVER_ERROR, None)
        }
    }
}

fn json_response<T: Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    match serde_json::to_vec(v) {
        Ok(b) => {
            let mut r = Response::new(Body::from_bytes(Bytes::from(b)));
            *r.status_mut() = status;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r.headers_mut().insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            r
        }
        Err(_) => problem(StatusCode::INTERNAL_SERVER_ERROR, None),
    }
}

type Answer = Result<Response<Body>, ManageError>;

fn ok<T: Serialize>(v: &T) -> Answer {
    Ok(json_response(StatusCode::OK, v))
}

fn created<T: Serialize>(v: &T) -> Answer {
    Ok(json_response(StatusCode::CREATED, v))
}

fn no_content() -> Answer {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ManageError> {
    serde_json::from_slice(body).map_err(|e| ManageError::Invalid(format!("body: {e}")))
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

/// Query parameters of the list and audit operations.
#[derive(Debug, Default)]
struct Query {
    subject: Option<String>,
    since: Option<String>,
    outcome: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

fn query(q: Option<&str>) -> Result<Query, ManageError> {
    let mut out = Query::default();
    for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        let slot = match k.as_ref() {
            "subject" => &mut out.subject,
            "since" => &mut out.since,
            "outcome" => &mut out.outcome,
            "limit" => &mut out.limit,
            "before" => &mut out.before,
            _ => continue,
        };
        *slot = Some(v.into_owned());
    }
    Ok(out)
}

/// `{"grace": "24h"}` for a rotation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// How long the old key keeps working (default `0s`: revoked at once).
    #[serde(default)]
    pub grace: Option<String>,
}

/// `{"password": "…"}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    /// The new password.
    pub password: String,
}

impl std::fmt::Debug for PasswordRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordRequest(..)")
    }
}

// --- handlers (documented for the OpenAPI document) ---

/// Every subject (users and services).
#[utoipa::path(get, path = "/subjects", tag = "subjects",
    responses((status = 200, body = Vec<SubjectView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_subjects(m: &Manager) -> Answer {
    ok(&m.list_subjects().await?)
}

/// Disables a subject: every credential of it is refused within a second.
#[utoipa::path(post, path = "/subjects/{name}/disable", tag = "subjects",
    params(("name" = String, Path, description = "The subject")),
    responses((status = 200, body = SubjectView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn disable_subject(m: &Manager, name: &str) -> Answer {
    ok(&m.set_subject_disabled(name, true).await?)
}

/// Enables a subject again.
#[utoipa::path(post, path = "/subjects/{name}/enable", tag = "subjects",
    params(("name" = String, Path, description = "The subject")),
    responses((status = 200, body = SubjectView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn enable_subject(m: &Manager, name: &str) -> Answer {
    ok(&m.set_subject_disabled(name, false).await?)
}

/// Every user.
#[utoipa::path(get, path = "/users", tag = "users",
    responses((status = 200, body = Vec<UserView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_users(m: &Manager) -> Answer {
    ok(&m.list_users().await?)
}

/// Adds a user with a password (Basic; Digest too with `digest: true`).
#[utoipa::path(post, path = "/users", tag = "users", request_body = NewUserRequest,
    responses((status = 201, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn add_user(m: &Manager, body: &[u8]) -> Answer {
    created(&m.add_user(parse(body)?).await?)
}

/// One user.
#[utoipa::path(get, path = "/users/{name}", tag = "users",
    params(("name" = String, Path, description = "The user")),
    responses((status = 200, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn get_user(m: &Manager, name: &str) -> Answer {
    ok(&m.get_user(name).await?)
}

/// Sets a user's password.
#[utoipa::path(put, path = "/users/{name}/password", tag = "users", request_body = PasswordRequest,
    params(("name" = String, Path, description = "The user")),
    responses((status = 200, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn set_password(m: &Manager, name: &str, body: &[u8]) -> Answer {
    let req: PasswordRequest = parse(body)?;
    ok(&m
        .set_password(name, SecretString::new(req.password))
        .await?)
}

/// Enrols TOTP for a user; `secret` and `uri` are in this answer only.
#[utoipa::path(post, path = "/users/{name}/totp", tag = "users",
    params(("name" = String, Path, description = "The user")),
    responses((status = 201, body = TotpEnrolled), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn enroll_totp(m: &Manager, name: &str) -> Answer {
    created(&m.enroll_totp(name).await?)
}

/// Ends every login session of a user and revokes its grants.
#[utoipa::path(post, path = "/users/{name}/logout", tag = "users",
    params(("name" = String, Path, description = "The user")),
    responses((status = 200, body = SignedOut), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn logout_user(m: &Manager, name: &str) -> Answer {
    ok(&m.logout_user(name).await?)
}

/// The grants of a user still in force (never their tokens).
#[utoipa::path(get, path = "/users/{name}/grants", tag = "users",
    params(("name" = String, Path, description = "The user")),
    responses((status = 200, body = Vec<GrantView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn list_grants(m: &Manager, name: &str) -> Answer {
    ok(&m.list_grants(name).await?)
}

/// Revokes every grant of a user: the grants revoked.
#[utoipa::path(delete, path = "/users/{name}/grants", tag = "users",
    params(("name" = String, Path, description = "The user")),
    responses((status = 200, body = Vec<GrantView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn revoke_grants(m: &Manager, name: &str) -> Answer {
    ok(&m.revoke_grants(name, None).await?)
}

/// Revokes one grant of a user.
#[utoipa::path(delete, path = "/users/{name}/grants/{id}", tag = "users",
    params(("name" = String, Path, description = "The user"), ("id" = String, Path, description = "The grant")),
    responses((status = 200, body = Vec<GrantView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn revoke_grant(m: &Manager, name: &str, id: &str) -> Answer {
    ok(&m.revoke_grants(name, Some(id)).await?)
}

/// API keys (never their text).
#[utoipa::path(get, path = "/keys", tag = "keys",
    params(("subject" = Option<String>, Query, description = "Only this subject's")),
    responses((status = 200, body = Vec<KeyView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_keys(m: &Manager, q: &Query) -> Answer {
    ok(&m.list_api_keys(q.subject.as_deref()).await?)
}

/// Creates an API key; `key` is in this answer only.
#[utoipa::path(post, path = "/keys", tag = "keys", request_body = NewKeyRequest,
    responses((status = 201, body = KeyCreated), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn create_key(m: &Manager, body: &[u8]) -> Answer {
    created(&m.create_api_key(parse(body)?).await?)
}

/// Revokes an API key.
#[utoipa::path(delete, path = "/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn revoke_key(m: &Manager, id: &str) -> Answer {
    m.revoke_api_key(id).await?;
    no_content()
}

/// Replaces an API key; the old one works until the grace ends.
#[utoipa::path(post, path = "/keys/{id}/rotate", tag = "keys", request_body = RotateRequest,
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 201, body = KeyCreated), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn rotate_key(m: &Manager, id: &str, body: &[u8]) -> Answer {
    let req: RotateRequest = if body.is_empty() {
        RotateRequest::default()
    } else {
        parse(body)?
    };
    let grace = match req.grace.as_deref() {
        None | Some("0s" | "0") => 0,
        Some(g) => crate::manage::lifetime("grace", g)?,
    };
    created(&m.rotate_api_key(id, grace).await?)
}

/// RFC 9421 keys.
#[utoipa::path(get, path = "/hmac-keys", tag = "hmac-keys",
    params(("subject" = Option<String>, Query, description = "Only this subject's")),
    responses((status = 200, body = Vec<HmacView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_hmac(m: &Manager, q: &Query) -> Answer {
    ok(&m.list_hmac_keys(q.subject.as_deref()).await?)
}

/// Creates an RFC 9421 key; a shared `secret` is in this answer only.
#[utoipa::path(post, path = "/hmac-keys", tag = "hmac-keys", request_body = NewHmacRequest,
    responses((status = 201, body = HmacCreated), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn create_hmac(m: &Manager, body: &[u8]) -> Answer {
    created(&m.create_hmac_key(parse(body)?).await?)
}

/// Revokes an RFC 9421 key.
#[utoipa::path(delete, path = "/hmac-keys/{id}", tag = "hmac-keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn revoke_hmac(m: &Manager, id: &str) -> Answer {
    m.revoke_hmac_key(id).await?;
    no_content()
}

/// OAuth 2.0 clients.
#[utoipa::path(get, path = "/clients", tag = "clients",
    responses((status = 200, body = Vec<ClientView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_clients(m: &Manager) -> Answer {
    ok(&m.list_clients().await?)
}

/// Registers a client; `client_secret` is in this answer only.
#[utoipa::path(post, path = "/clients", tag = "clients", request_body = NewClientRequest,
    responses((status = 201, body = ClientCreated), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn create_client(m: &Manager, body: &[u8]) -> Answer {
    created(&m.create_client(parse(body)?).await?)
}

/// Revokes a client and its tokens.
#[utoipa::path(delete, path = "/clients/{client_id}", tag = "clients",
    params(("client_id" = String, Path, description = "The client")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn revoke_client(m: &Manager, id: &str) -> Answer {
    m.revoke_client(id).await?;
    no_content()
}

/// Client-certificate bindings.
#[utoipa::path(get, path = "/certs", tag = "certs",
    responses((status = 200, body = Vec<CertView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_certs(m: &Manager) -> Answer {
    ok(&m.list_certs().await?)
}

/// Binds a client certificate to a subject.
#[utoipa::path(post, path = "/certs", tag = "certs", request_body = NewCertRequest,
    responses((status = 201, body = CertView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn add_cert(m: &Manager, body: &[u8]) -> Answer {
    created(&m.add_cert(parse(body)?).await?)
}

/// Revokes a certificate binding.
#[utoipa::path(delete, path = "/certs/{id}", tag = "certs",
    params(("id" = String, Path, description = "The binding's id")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn revoke_cert(m: &Manager, id: &str) -> Answer {
    m.revoke_cert(id).await?;
    no_content()
}

/// keycard's signing keys in the JWKS.
#[utoipa::path(get, path = "/signing-keys", tag = "signing-keys",
    responses((status = 200, body = Vec<SigningKeyView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_signing_keys(m: &Manager) -> Answer {
    ok(&m.list_signing_keys().await?)
}

/// A new signing key; the old one stays published until its tokens expire.
#[utoipa::path(post, path = "/signing-keys/rotate", tag = "signing-keys",
    responses((status = 201, body = SigningKeyRotated), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn rotate_signing_key(m: &Manager) -> Answer {
    created(&m.rotate_signing_key().await?)
}

/// The audit trail, newest first, a page at a time.
#[utoipa::path(get, path = "/audit", tag = "audit",
    params(
        ("since" = Option<String>, Query, description = "Only the last DUR (`1h`, `7d`)"),
        ("subject" = Option<String>, Query, description = "Only this subject's"),
        ("outcome" = Option<String>, Query, description = "success, failure, forbidden or throttled"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"),
        ("before" = Option<i64>, Query, description = "The `next_before` of the previous page"),
    ),
    responses((status = 200, body = AuditPage), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn audit(m: &Manager, q: &Query) -> Answer {
    let since_ms = match &q.since {
        Some(d) => Some(crate::now_millis() - crate::manage::lifetime("since", d)? * 1000),
        None => None,
    };
    let outcome = match q.outcome.as_deref() {
        None => None,
        Some(o) => Some(Outcome::parse(o).ok_or_else(|| {
            ManageError::Invalid("outcome: success, failure, forbidden or throttled".into())
        })?),
    };
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(l) => l
            .parse()
            .map_err(|_| ManageError::Invalid("limit: a number from 1 to 1000".into()))?,
    };
    let before = match q.before.as_deref() {
        None => None,
        Some(b) => Some(
            b.parse()
                .map_err(|_| ManageError::Invalid("before: the next_before of a page".into()))?,
        ),
    };
    ok(&m
        .audit(AuditFilter {
            since_ms,
            subject: q.subject.clone(),
            outcome,
            limit,
            before,
        })
        .await?)
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (kc_…) or a client-credentials access token with scope keycard:admin",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        openapi.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("api_key", Vec::<String>::new()),
        ]);
    }
}

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "keycard admin API",
        description = "Manage keycard's subjects, users, API keys, RFC 9421 keys, OAuth clients, client certificates and signing keys, and read the audit trail. Every operation needs a credential holding scope keycard:admin. Secrets are returned once, at creation.",
        license(name = "Apache-2.0")
    ),
    servers((url = "/_keycard/admin/v1")),
    paths(
        list_subjects, disable_subject, enable_subject,
        list_users, add_user, get_user, set_password, enroll_totp,
        logout_user, list_grants, revoke_grants, revoke_grant,
        list_keys, create_key, revoke_key, rotate_key,
        list_hmac, create_hmac, revoke_hmac,
        list_clients, create_client, revoke_client,
        list_certs, add_cert, revoke_cert,
        list_signing_keys, rotate_signing_key,
        audit,
    ),
    components(schemas(Problem)),
    modifiers(&Security),
)]
struct ApiDoc;

/// The OpenAPI document, as JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_json().unwrap_or_default()
}

/// The admin API's request handler (after authentication).
#[derive(Debug)]
pub struct Admin {
    manager: Manager,
    /// Where each operation is audited (the audit writer).
    journal: std::sync::Arc<dyn crate::manage::Journal>,
    doc: Bytes,
}

/// The request an admin call came in: its id and the client's address (for the audit).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The request id.
    pub id: &'a str,
    /// The client's address.
    pub ip: std::net::IpAddr,
}

impl Admin {
    /// The API over `manager`, each operation audited to `journal`.
    pub fn new(manager: Manager, journal: std::sync::Arc<dyn crate::manage::Journal>) -> Self {
        Self {
            manager,
            journal,
            doc: Bytes::from(openapi_json()),
        }
    }

    /// Answers a request `caller` made: `rest` is the path after [`PREFIX`]. Every
    /// operation that changes something is audited with the caller as its actor.
    pub async fn handle(
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
            crate::manage::Actor {
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
pub enum BrowserRefusal {
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
    pub fn answer(self) -> Response<Body> {
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
pub fn browser_check(
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
