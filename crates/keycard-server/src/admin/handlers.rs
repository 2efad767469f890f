//! The admin API's operations, one handler each, and the OpenAPI 3.1 document they are
//! described in (served at `/_keycard/admin/v1/openapi.json`).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use keycard_core::{Outcome, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::admin::manage::{
    AuditFilter, AuditPage, CertView, ClientCreated, ClientView, GrantView, HmacCreated, HmacView,
    KeyCreated, KeyView, ManageError, Manager, NewCertRequest, NewClientRequest, NewHmacRequest,
    NewKeyRequest, NewUserRequest, SignedOut, SigningKeyRotated, SigningKeyView, SubjectView,
    TotpEnrolled, UserView,
};
use crate::upstream::body::Body;

/// An RFC 9457 problem.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Problem {
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
pub(crate) fn problem(status: StatusCode, detail: Option<String>) -> Response<Body> {
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

pub(super) fn error_response(e: &ManageError) -> Response<Body> {
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

pub(super) fn json_response<T: Serialize>(status: StatusCode, v: &T) -> Response<Body> {
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

pub(super) type Answer = Result<Response<Body>, ManageError>;

pub(super) fn ok<T: Serialize>(v: &T) -> Answer {
    Ok(json_response(StatusCode::OK, v))
}

pub(super) fn created<T: Serialize>(v: &T) -> Answer {
    Ok(json_response(StatusCode::CREATED, v))
}

pub(super) fn no_content() -> Answer {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ManageError> {
    serde_json::from_slice(body).map_err(|e| ManageError::Invalid(format!("body: {e}")))
}

/// `{"grace": "24h"}` for a rotation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateRequest {
    /// How long the old key keeps working (default `0s`: revoked at once).
    #[serde(default)]
    pub grace: Option<String>,
}

/// `{"password": "…"}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordRequest {
    /// The new password.
    pub password: String,
}

impl std::fmt::Debug for PasswordRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordRequest(..)")
    }
}

/// Query parameters of the list and audit operations.
#[derive(Debug, Default)]
pub(super) struct Query {
    pub(super) subject: Option<String>,
    pub(super) since: Option<String>,
    pub(super) outcome: Option<String>,
    pub(super) limit: Option<String>,
    pub(super) before: Option<String>,
}

pub(super) fn query(q: Option<&str>) -> Result<Query, ManageError> {
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

/// Every subject (users and services).
#[utoipa::path(get, path = "/subjects", tag = "subjects",
    responses((status = 200, body = Vec<SubjectView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(super) async fn list_subjects(m: &Manager) -> Answer {
    ok(&m.list_subjects().await?)
}

/// Disables a subject: every credential of it is refused within a second.
#[utoipa::path(post, path = "/subjects/{name}/disable", tag = "subjects",
    params(("name" = String, Path, description = "The subject")),
    responses((status = 200, body = SubjectView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn disable_subject(m: &Manager, name: &str) -> Answer {
    ok(&m.set_subject_disabled(name, true).await?)
}

/// Enables a subject again.
#[utoipa::path(post, path = "/subjects/{name}/enable", tag = "subjects",
    params(("name" = String, Path, description = "The subject")),
    responses((status = 200, body = SubjectView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn enable_subject(m: &Manager, name: &str) -> Answer {
    ok(&m.set_subject_disabled(name, false).await?)
}

/// Every user.
#[utoipa::path(get, path = "/users", tag = "users",
    responses((status = 200, body = Vec<UserView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(super) async fn list_users(m: &Manager) -> Answer {
    ok(&m.list_users().await?)
}

/// Adds a user with a password (Basic; Digest too with `digest: true`).
#[utoipa::path(post, path = "/users", tag = "users", request_body = NewUserRequest,
    responses((status = 201, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn add_user(m: &Manager, body: &[u8]) -> Answer {
    created(&m.add_user(parse(body)?).await?)
}

/// One user.
#[utoipa::path(get, path = "/users/{name}", tag = "users",
    params(("name" = String, Path, description = "The user")),
    responses((status = 200, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn get_user(m: &Manager, name: &str) -> Answer {
    ok(&m.get_user(name).await?)
}

/// Sets a user's password.
#[utoipa::path(put, path = "/users/{name}/password", tag = "users", request_body = PasswordRequest,
    params(("name" = String, Path, description = "The user")),
    responses((status = 200, body = UserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn set_password(m: &Manager, name: &str, body: &[u8]) -> Answer {
    let req: PasswordRequest = parse(body)?;
    ok(&m
        .set_password(name, SecretString::new(req.password))
        .await?)
}

/// Enrols TOTP for a user; `secret` and `uri` are in this answer only.
#[utoipa::path(post, path = "/users/{name}/totp", tag = "users",
    params(("name" = String, Path, description = "The user")),
    responses((status = 201, body = TotpEnrolled), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn enroll_totp(m: &Manager, name: &str) -> Answer {
    created(&m.enroll_totp(name).await?)
}

/// Ends every login session of a user and revokes its grants.
#[utoipa::path(post, path = "/users/{name}/logout", tag = "users",
    params(("name" = String, Path, description = "The user")),
    responses((status = 200, body = SignedOut), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn logout_user(m: &Manager, name: &str) -> Answer {
    ok(&m.logout_user(name).await?)
}

/// The grants of a user still in force (never their tokens).
#[utoipa::path(get, path = "/users/{name}/grants", tag = "users",
    params(("name" = String, Path, description = "The user")),
    responses((status = 200, body = Vec<GrantView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn list_grants(m: &Manager, name: &str) -> Answer {
    ok(&m.list_grants(name).await?)
}

/// Revokes every grant of a user: the grants revoked.
#[utoipa::path(delete, path = "/users/{name}/grants", tag = "users",
    params(("name" = String, Path, description = "The user")),
    responses((status = 200, body = Vec<GrantView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn revoke_grants(m: &Manager, name: &str) -> Answer {
    ok(&m.revoke_grants(name, None).await?)
}

/// Revokes one grant of a user.
#[utoipa::path(delete, path = "/users/{name}/grants/{id}", tag = "users",
    params(("name" = String, Path, description = "The user"), ("id" = String, Path, description = "The grant")),
    responses((status = 200, body = Vec<GrantView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn revoke_grant(m: &Manager, name: &str, id: &str) -> Answer {
    ok(&m.revoke_grants(name, Some(id)).await?)
}

/// API keys (never their text).
#[utoipa::path(get, path = "/keys", tag = "keys",
    params(("subject" = Option<String>, Query, description = "Only this subject's")),
    responses((status = 200, body = Vec<KeyView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(super) async fn list_keys(m: &Manager, q: &Query) -> Answer {
    ok(&m.list_api_keys(q.subject.as_deref()).await?)
}

/// Creates an API key; `key` is in this answer only.
#[utoipa::path(post, path = "/keys", tag = "keys", request_body = NewKeyRequest,
    responses((status = 201, body = KeyCreated), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(super) async fn create_key(m: &Manager, body: &[u8]) -> Answer {
    created(&m.create_api_key(parse(body)?).await?)
}

/// Revokes an API key.
#[utoipa::path(delete, path = "/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn revoke_key(m: &Manager, id: &str) -> Answer {
    m.revoke_api_key(id).await?;
    no_content()
}

/// Replaces an API key; the old one works until the grace ends.
#[utoipa::path(post, path = "/keys/{id}/rotate", tag = "keys", request_body = RotateRequest,
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 201, body = KeyCreated), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn rotate_key(m: &Manager, id: &str, body: &[u8]) -> Answer {
    let req: RotateRequest = if body.is_empty() {
        RotateRequest::default()
    } else {
        parse(body)?
    };
    let grace = match req.grace.as_deref() {
        None | Some("0s" | "0") => 0,
        Some(g) => crate::admin::manage::lifetime("grace", g)?,
    };
    created(&m.rotate_api_key(id, grace).await?)
}

/// RFC 9421 keys.
#[utoipa::path(get, path = "/hmac-keys", tag = "hmac-keys",
    params(("subject" = Option<String>, Query, description = "Only this subject's")),
    responses((status = 200, body = Vec<HmacView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(super) async fn list_hmac(m: &Manager, q: &Query) -> Answer {
    ok(&m.list_hmac_keys(q.subject.as_deref()).await?)
}

/// Creates an RFC 9421 key; a shared `secret` is in this answer only.
#[utoipa::path(post, path = "/hmac-keys", tag = "hmac-keys", request_body = NewHmacRequest,
    responses((status = 201, body = HmacCreated), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(super) async fn create_hmac(m: &Manager, body: &[u8]) -> Answer {
    created(&m.create_hmac_key(parse(body)?).await?)
}

/// Revokes an RFC 9421 key.
#[utoipa::path(delete, path = "/hmac-keys/{id}", tag = "hmac-keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn revoke_hmac(m: &Manager, id: &str) -> Answer {
    m.revoke_hmac_key(id).await?;
    no_content()
}

/// OAuth 2.0 clients.
#[utoipa::path(get, path = "/clients", tag = "clients",
    responses((status = 200, body = Vec<ClientView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(super) async fn list_clients(m: &Manager) -> Answer {
    ok(&m.list_clients().await?)
}

/// Registers a client; `client_secret` is in this answer only.
#[utoipa::path(post, path = "/clients", tag = "clients", request_body = NewClientRequest,
    responses((status = 201, body = ClientCreated), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn create_client(m: &Manager, body: &[u8]) -> Answer {
    created(&m.create_client(parse(body)?).await?)
}

/// Revokes a client and its tokens.
#[utoipa::path(delete, path = "/clients/{client_id}", tag = "clients",
    params(("client_id" = String, Path, description = "The client")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn revoke_client(m: &Manager, id: &str) -> Answer {
    m.revoke_client(id).await?;
    no_content()
}

/// Client-certificate bindings.
#[utoipa::path(get, path = "/certs", tag = "certs",
    responses((status = 200, body = Vec<CertView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(super) async fn list_certs(m: &Manager) -> Answer {
    ok(&m.list_certs().await?)
}

/// Binds a client certificate to a subject.
#[utoipa::path(post, path = "/certs", tag = "certs", request_body = NewCertRequest,
    responses((status = 201, body = CertView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn add_cert(m: &Manager, body: &[u8]) -> Answer {
    created(&m.add_cert(parse(body)?).await?)
}

/// Revokes a certificate binding.
#[utoipa::path(delete, path = "/certs/{id}", tag = "certs",
    params(("id" = String, Path, description = "The binding's id")),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn revoke_cert(m: &Manager, id: &str) -> Answer {
    m.revoke_cert(id).await?;
    no_content()
}

/// keycard's signing keys in the JWKS.
#[utoipa::path(get, path = "/signing-keys", tag = "signing-keys",
    responses((status = 200, body = Vec<SigningKeyView>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(super) async fn list_signing_keys(m: &Manager) -> Answer {
    ok(&m.list_signing_keys().await?)
}

/// A new signing key; the old one stays published until its tokens expire.
#[utoipa::path(post, path = "/signing-keys/rotate", tag = "signing-keys",
    responses((status = 201, body = SigningKeyRotated), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(super) async fn rotate_signing_key(m: &Manager) -> Answer {
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
pub(super) async fn audit(m: &Manager, q: &Query) -> Answer {
    let since_ms = match &q.since {
        Some(d) => Some(crate::now_millis() - crate::admin::manage::lifetime("since", d)? * 1000),
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
pub(crate) fn openapi_json() -> String {
    ApiDoc::openapi().to_json().unwrap_or_default()
}
