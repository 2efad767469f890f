//! What an operator does to the store — create, list, rotate and revoke credentials, users,
//! clients, certificates and signing keys, read the audit trail — in one place, used by the
//! CLI (`keycard key create` …) and the admin API (`/_keycard/admin/v1/`) alike. Inputs are
//! checked here; secrets are made here and returned once, in the `…Created` answers.

use std::time::Duration;

use keycard_core::cert::CertIdentity;
use keycard_core::password::check_policy;
use keycard_core::user::DigestSecrets;
use keycard_core::{
    HashDomain, KeyedHasher, MasterKey, Outcome, Scopes, Sealer, SecretBytes, SecretString,
    api_key, new_id,
};
use keycard_store::{
    ApiKeyRow, AuditQuery, CertBindingRow, ClientRow, HmacKeyRow, NewApiKey, NewCertBinding,
    NewHmacKey, NewUser, Store, StoreError, SubjectRow, UserRow,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::Settings;
use crate::now_secs;

/// Grant types keycard issues.
pub const GRANTS: [&str; 3] = ["authorization_code", "refresh_token", "client_credentials"];
/// Bytes of a new HMAC secret.
const HMAC_SECRET_LEN: usize = 32;
/// How long a retired signing key stays published beyond the access-token TTL.
const PUBLISH_MARGIN_SECS: i64 = 60;
/// The most audit events one page holds.
pub const MAX_AUDIT_PAGE: u32 = 1000;

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// The input is wrong (names the field).
    #[error("{0}")]
    Invalid(String),
    /// No such record.
    #[error("{0}")]
    NotFound(String),
    /// The record exists already, or is in a state the operation does not apply to.
    #[error("{0}")]
    Conflict(String),
    /// The store cannot be reached.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// Anything else (the random generator, sealing).
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ManageError::NotFound(e.to_string()),
            StoreError::Conflict(m) => ManageError::Conflict(m),
            e if e.is_unique_violation() => ManageError::Conflict("it exists already".into()),
            e if e.is_unavailable() => ManageError::Unavailable(e.to_string()),
            e => ManageError::Internal(e.to_string()),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> ManageError {
    ManageError::Internal(e.to_string())
}

/// The operations, over one store and the master key's derived keys.
#[derive(Debug, Clone)]
pub struct Manager {
    /// Where each operation that changes something is audited, and on whose behalf.
    journal: Option<(std::sync::Arc<dyn Journal>, std::sync::Arc<Actor>)>,
    store: Store,
    hasher: KeyedHasher,
    sealer: std::sync::Arc<Sealer>,
    realm: String,
    algorithm: keycard_core::jwt::Alg,
    access_ttl: Duration,
}

// ---------------------------------------------------------------------------------------
// The management audit trail.

/// Where management events go: the server's audit writer, or the CLI's own (file and store).
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Records one management event (route `admin` or `cli`, with its operation).
    fn record(&self, event: &crate::audit::Record<'_>);
}

impl Journal for crate::audit::AuditSink {
    fn record(&self, event: &crate::audit::Record<'_>) {
        crate::audit::AuditSink::record(self, event);
    }
}

/// On whose behalf operations run: the admin API's caller, or the command line.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `admin` or `cli`: the audit event's `route`.
    pub route: &'static str,
    /// The request's id (the admin API's), or one made for a CLI run.
    pub request_id: String,
    /// How the caller authenticated (`None` for the CLI).
    pub method: Option<keycard_core::Method>,
    /// The caller's subject (`None` for the CLI).
    pub subject: Option<String>,
    /// The caller's credential id, or `cli`: the event's `actor`.
    pub credential_id: String,
    /// The caller's address (`None` for the CLI).
    pub ip: Option<std::net::IpAddr>,
}

impl Actor {
    /// The command line.
    pub fn cli() -> Self {
        Actor {
            route: "cli",
            request_id: format!(
                "cli-{}",
                keycard_core::random_base62(10).unwrap_or_else(|_| "run".into())
            ),
            method: None,
            subject: None,
            credential_id: "cli".into(),
            ip: None,
        }
    }
}

impl ManageError {
    /// The audit `reason` of a failed operation.
    pub fn code(&self) -> &'static str {
        match self {
            ManageError::Invalid(_) => "invalid",
            ManageError::NotFound(_) => "not_found",
            ManageError::Conflict(_) => "conflict",
            ManageError::Unavailable(_) => "unavailable",
            ManageError::Internal(_) => "internal",
        }
    }
}

/// What an operation's answer names as its target (the new id, for a create).
pub trait Targeted {
    /// The id or name.
    fn target(&self) -> Option<&str> {
        None
    }
}

impl Targeted for () {}
impl Targeted for KeyCreated {
    fn target(&self) -> Option<&str> {
        Some(&self.id)
    }
}
impl Targeted for HmacCreated {
    fn target(&self) -> Option<&str> {
        Some(&self.id)
    }
}
impl Targeted for UserView {
    fn target(&self) -> Option<&str> {
        Some(&self.name)
    }
}
impl Targeted for SubjectView {
    fn target(&self) -> Option<&str> {
        Some(&self.name)
    }
}
impl Targeted for TotpEnrolled {
    fn target(&self) -> Option<&str> {
        Some(&self.name)
    }
}
impl Targeted for ClientCreated {
    fn target(&self) -> Option<&str> {
        Some(&self.client.client_id)
    }
}
impl Targeted for CertView {
    fn target(&self) -> Option<&str> {
        Some(&self.id)
    }
}
impl Targeted for SigningKeyRotated {
    fn target(&self) -> Option<&str> {
        Some(&self.kid)
    }
}

// ---------------------------------------------------------------------------------------
// What callers send.

/// A new API key.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    /// The subject; a service subject is created when the name is new.
    pub subject: String,
    /// Scopes the key holds.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Lifetime, such as `90d` (none: never expires).
    #[serde(default)]
    pub expires_in: Option<String>,
    /// A label.
    #[serde(default)]
    pub name: Option<String>,
}

/// A new RFC 9421 key: a shared secret made by keycard, or a client's Ed25519 public key.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHmacRequest {
    /// The subject; a service subject is created when the name is new.
    pub subject: String,
    /// Scopes the key holds.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Lifetime, such as `90d` (none: never expires).
    #[serde(default)]
    pub expires_in: Option<String>,
    /// An Ed25519 public key (PEM `PUBLIC KEY`): keycard keeps no secret.
    #[serde(default)]
    pub public_key_pem: Option<String>,
}

/// A new user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    /// The login name (no `:`).
    pub name: String,
    /// The password (at least 12 characters, not the name).
    pub password: String,
    /// Scopes the user holds.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Also keep the (password-equivalent) Digest hash, so the user can use HTTP Digest.
    #[serde(default)]
    pub digest: bool,
}

impl std::fmt::Debug for NewUserRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUserRequest")
            .field("name", &self.name)
            .field("password", &"..")
            .finish_non_exhaustive()
    }
}

/// A new OAuth 2.0 client.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClientRequest {
    /// `client_id`: 1-100 characters of `A-Z a-z 0-9 - . _ ~`.
    pub client_id: String,
    /// A public client (no secret; PKCE).
    #[serde(default)]
    pub public: bool,
    /// Redirect URIs (authorization code flow).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Grants (default: `client_credentials` without redirect URIs, else
    /// `authorization_code` and `refresh_token`).
    #[serde(default)]
    pub grants: Vec<String>,
    /// Scopes the client may ask for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `client_secret_basic` (default), `client_secret_post`, `tls_client_auth`,
    /// `self_signed_tls_client_auth`.
    #[serde(default)]
    pub auth: Option<String>,
    /// The client's certificate (PEM), for the two certificate methods.
    #[serde(default)]
    pub cert_pem: Option<String>,
    /// The subject DN its certificates carry (RFC 4514), for `tls_client_auth`.
    #[serde(default)]
    pub tls_subject_dn: Option<String>,
    /// Skips the consent page (keycard's own apps).
    #[serde(default)]
    pub first_party: bool,
}

/// A client certificate to bind to a subject.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCertRequest {
    /// The subject; a service subject is created when the name is new.
    pub subject: String,
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Scopes requests with it hold.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Lifetime of the binding (none: as long as the certificate).
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// Filters of an audit page.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only events at or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Only this subject's.
    pub subject: Option<String>,
    /// Only this outcome.
    pub outcome: Option<Outcome>,
    /// Page size (1..=[`MAX_AUDIT_PAGE`]).
    pub limit: u32,
    /// The cursor of the page after this one (newer), as returned in `next_before`.
    pub before: Option<i64>,
}

// ---------------------------------------------------------------------------------------
// What they get back.

/// A credential's status and times (flattened into the views: `status`, `created_at`,
/// `expires_at`, `revoked_at`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Lifecycle {
    /// `active`, `expired`, `revoked` or `disabled`.
    pub status: &'static str,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; null: never.
    pub expires_at: Option<String>,
    /// RFC 3339.
    pub revoked_at: Option<String>,
}

impl Lifecycle {
    fn of(
        created_at: i64,
        expires_at: Option<i64>,
        revoked_at: Option<i64>,
        subject_disabled: bool,
        now: i64,
    ) -> Self {
        Self {
            status: credential_status(revoked_at, expires_at, subject_disabled, now),
            created_at: rfc3339(created_at),
            expires_at: expires_at.map(rfc3339),
            revoked_at: revoked_at.map(rfc3339),
        }
    }
}

/// An API key as listed (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    /// The credential id.
    pub id: String,
    /// Its subject.
    pub subject: String,
    /// Its label.
    pub name: Option<String>,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Status and times.
    #[serde(flatten)]
    pub life: Lifecycle,
    /// RFC 3339 (kept to the minute).
    pub last_used_at: Option<String>,
    /// The key this one replaced.
    pub rotated_from: Option<String>,
}

/// A new API key, with its secret (shown once).
#[derive(Clone, Serialize, ToSchema)]
pub struct KeyCreated {
    /// The credential id.
    pub id: String,
    /// The key (`kc_…`): shown once, never stored.
    pub key: String,
    /// Its subject.
    pub subject: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// RFC 3339; null: never.
    pub expires_at: Option<String>,
    /// Its label.
    pub name: Option<String>,
    /// After a rotation: until when the old key keeps working (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_valid_until: Option<String>,
}

/// An RFC 9421 key as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HmacView {
    /// The credential id.
    pub id: String,
    /// The RFC 9421 `keyid`.
    pub key_id: String,
    /// `hmac-sha256` or `ed25519`.
    pub alg: String,
    /// Its subject.
    pub subject: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Status and times.
    #[serde(flatten)]
    pub life: Lifecycle,
}

/// A new RFC 9421 key; `secret` (standard base64) is shown once, null for Ed25519.
#[derive(Clone, Serialize, ToSchema)]
pub struct HmacCreated {
    /// The credential id.
    pub id: String,
    /// The RFC 9421 `keyid`.
    pub key_id: String,
    /// The shared secret, standard base64 (null for an Ed25519 key).
    pub secret: Option<String>,
    /// `hmac-sha256` or `ed25519`.
    pub alg: String,
    /// Its subject.
    pub subject: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// RFC 3339; null: never.
    pub expires_at: Option<String>,
}

/// A user as listed (never a password or hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    /// The login name.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// `active` or `disabled`.
    pub status: &'static str,
    /// Whether Digest can be used.
    pub digest: bool,
    /// The current password's id (changes with the password).
    pub password_id: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub password_changed_at: String,
    /// RFC 3339.
    pub disabled_at: Option<String>,
}

/// A grant of the authorization server: what one sign-in gave one client, through every
/// refresh (never the tokens themselves).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GrantView {
    /// Its id.
    pub id: String,
    /// The client it was granted to.
    pub client_id: String,
    /// The user.
    pub subject: String,
    /// The scopes.
    pub scopes: Vec<String>,
    /// RFC 3339: when it was granted.
    pub created_at: String,
    /// RFC 3339: when the user signed in for it.
    pub auth_time: String,
    /// RFC 3339: when its refresh tokens end, used or not.
    pub expires_at: String,
}

/// What ending a user's sessions and grants ended.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SignedOut {
    /// The user.
    pub name: String,
    /// Login sessions ended.
    pub sessions: u64,
    /// Grants revoked (their refresh and access tokens stop working).
    pub grants: u64,
}

impl Targeted for SignedOut {
    fn target(&self) -> Option<&str> {
        Some(&self.name)
    }
}

impl Targeted for Vec<GrantView> {}

/// A TOTP enrolment: the seed, shown once, for an authenticator app.
#[derive(Clone, Serialize, ToSchema)]
pub struct TotpEnrolled {
    /// The user.
    pub name: String,
    /// The seed, base32 (SHA-1, 6 digits, 30 s).
    pub secret: String,
    /// The `otpauth://` URI (a QR code of it is what apps scan).
    pub uri: String,
}

/// A subject.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubjectView {
    /// The name.
    pub name: String,
    /// `user` or `service`.
    pub kind: String,
    /// `active` or `disabled`.
    pub status: &'static str,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub disabled_at: Option<String>,
}

/// An OAuth 2.0 client as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClientView {
    /// `client_id`.
    pub client_id: String,
    /// A public client.
    pub public: bool,
    /// The token endpoint authentication method.
    pub auth: String,
    /// Redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Grants.
    pub grants: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Skips consent.
    pub first_party: bool,
    /// `tls_client_auth` subject DN.
    pub tls_subject_dn: Option<String>,
    /// Pinned certificate (SHA-256, hex).
    pub cert_fingerprint: Option<String>,
    /// `active` or `revoked`.
    pub status: &'static str,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub revoked_at: Option<String>,
}

/// A new client; `client_secret` is shown once (null for public and certificate clients).
#[derive(Clone, Serialize, ToSchema)]
pub struct ClientCreated {
    /// The client.
    #[serde(flatten)]
    pub client: ClientView,
    /// The secret (`kcs_…`): shown once, stored as a keyed hash.
    pub client_secret: Option<String>,
}

/// A certificate binding.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CertView {
    /// The credential id.
    pub id: String,
    /// Its subject.
    pub subject: String,
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub fingerprint: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Status and times.
    #[serde(flatten)]
    pub life: Lifecycle,
    /// RFC 3339.
    pub last_used_at: Option<String>,
}

/// One of keycard's signing keys.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SigningKeyView {
    /// `kid`.
    pub kid: String,
    /// `ES256`, `EdDSA` or `RS256`.
    pub alg: String,
    /// Whether it signs new tokens.
    pub current: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: when it stopped signing.
    pub retired_at: Option<String>,
    /// RFC 3339: until when it stays in the JWKS.
    pub published_until: Option<String>,
}

/// A signing-key rotation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SigningKeyRotated {
    /// The new key's `kid`.
    pub kid: String,
    /// Its algorithm.
    pub alg: String,
    /// The key it replaced.
    pub previous: Option<String>,
    /// Until when the previous key stays published (RFC 3339).
    pub previous_published_until: Option<String>,
}

/// One audit event (reference §7).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEventView {
    /// RFC 3339 with milliseconds.
    pub ts: String,
    /// The request id.
    pub request_id: String,
    /// The route prefix.
    pub route: Option<String>,
    /// The authentication method.
    pub method: Option<String>,
    /// `success`, `failure`, `forbidden` or `throttled`.
    pub outcome: String,
    /// Why it was refused.
    pub reason: Option<String>,
    /// The subject.
    pub subject: Option<String>,
    /// The credential id.
    pub credential_id: Option<String>,
    /// The client address.
    pub ip: Option<String>,
}

/// A page of audit events, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditPage {
    /// The events.
    pub events: Vec<AuditEventView>,
    /// Pass as `before` for the next (older) page; null when this is the last.
    pub next_before: Option<i64>,
}

// ---------------------------------------------------------------------------------------

/// `active`, `expired`, `revoked` or `disabled`, in that precedence.
pub fn credential_status(
    revoked_at: Option<i64>,
    expires_at: Option<i64>,
    subject_disabled: bool,
    now: i64,
) -> &'static str {
    if revoked_at.is_some() {
        "revoked"
    } else if expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else if subject_disabled {
        "disabled"
    } else {
        "active"
    }
}

fn rfc3339(t: i64) -> String {
    keycard_core::time::rfc3339(t)
}

fn scope_list(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// Subject names: 1–200 characters, no control characters, no Unicode format characters
/// (bidi overrides, zero-width joiners and spaces: they make one name look like another in
/// a listing, a log or an audit event) and no line or paragraph separators.
pub fn check_subject(what: &str, name: &str) -> Result<(), ManageError> {
    if name.is_empty()
        || name.chars().count() > 200
        || name.len() > crate::authn::MAX_USER_NAME
        || name
            .chars()
            .any(|c| c.is_control() || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err(ManageError::Invalid(format!(
            "{what}: `{}` is not a valid subject name (1-200 characters and at most 256 bytes, no control or invisible formatting characters)",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// Whether `c` is of Unicode general category Cf (format), as of Unicode 15.1.
fn is_format(c: char) -> bool {
    matches!(
        u32::from(c),
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// The most scopes one credential or client may hold, and the longest scope.
pub const MAX_SCOPES: usize = 64;
/// The longest scope, in bytes.
pub const MAX_SCOPE_LEN: usize = 128;
/// The most redirect URIs one client may register.
pub const MAX_REDIRECT_URIS: usize = 16;

/// A user name: a subject name without `:` (HTTP Basic splits on it).
pub fn check_user_name(what: &str, name: &str) -> Result<(), ManageError> {
    check_subject(what, name)?;
    if name.contains(':') {
        return Err(ManageError::Invalid(format!(
            "{what}: a user name cannot contain `:` (HTTP Basic splits on it)"
        )));
    }
    Ok(())
}

/// A `client_id`: 1-100 characters of `A-Z a-z 0-9 - . _ ~`.
pub fn check_client_id(id: &str) -> Result<(), ManageError> {
    if id.is_empty()
        || id.len() > 100
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return Err(ManageError::Invalid(format!(
            "client_id: `{}` must be 1-100 characters of A-Z a-z 0-9 - . _ ~",
            id.escape_debug()
        )));
    }
    Ok(())
}

/// Redirect URIs: absolute, no fragment; `https`, or `http` only on loopback (RFC 8252
/// §7.3), or a private-use scheme with a dot (RFC 8252 §7.1).
pub fn check_redirect_uri(uri: &str) -> Result<(), ManageError> {
    let bad = |why: &str| Err(ManageError::Invalid(format!("redirect URI {uri}: {why}")));
    let Ok(u) = url::Url::parse(uri) else {
        return bad("not an absolute URI");
    };
    if u.fragment().is_some() {
        return bad("a redirect URI cannot have a fragment (RFC 6749 §3.1.2)");
    }
    match u.scheme() {
        "https" => Ok(()),
        "http" if matches!(u.host_str(), Some("127.0.0.1" | "[::1]" | "localhost")) => Ok(()),
        "http" => bad(
            "plain http only for loopback redirects (http://127.0.0.1 or http://[::1]); use https",
        ),
        s if s.contains('.') => Ok(()),
        _ => bad(
            "use https, a loopback http URI, or a private-use scheme in reverse-DNS form (com.example.app:/cb)",
        ),
    }
}

fn scopes(list: &[String]) -> Result<Scopes, ManageError> {
    if list.len() > MAX_SCOPES {
        return Err(ManageError::Invalid(format!(
            "scopes: at most {MAX_SCOPES} (got {})",
            list.len()
        )));
    }
    if let Some(long) = list.iter().find(|s| s.len() > MAX_SCOPE_LEN) {
        return Err(ManageError::Invalid(format!(
            "scopes: `{}…` is longer than {MAX_SCOPE_LEN} bytes",
            long.chars().take(32).collect::<String>().escape_debug()
        )));
    }
    Scopes::from_list(list).map_err(|e| ManageError::Invalid(format!("scopes: {e}")))
}

/// A positive lifetime such as `90d`, in seconds.
pub fn lifetime(what: &str, text: &str) -> Result<i64, ManageError> {
    let d = keycard_core::parse_duration(text)
        .map_err(|e| ManageError::Invalid(format!("{what}: {e}")))?;
    let secs = i64::try_from(d.as_secs())
        .ok()
        .filter(|s| *s <= 100 * 365 * 86_400)
        .ok_or_else(|| ManageError::Invalid(format!("{what}: `{text}` is too long")))?;
    if secs <= 0 {
        return Err(ManageError::Invalid(format!(
            "{what}: must be more than 0s"
        )));
    }
    Ok(secs)
}

fn expiry(now: i64, expires_in: Option<&str>) -> Result<Option<i64>, ManageError> {
    expires_in
        .map(|d| lifetime("expires_in", d).map(|s| now + s))
        .transpose()
}

/// A certificate's identity from PEM (the first certificate).
pub fn read_cert_pem(what: &str, pem: &[u8]) -> Result<CertIdentity, ManageError> {
    let der = keycard_core::cert::certs_from_pem(pem)
        .map_err(|e| ManageError::Invalid(format!("{what}: {e}")))?;
    let first = der
        .first()
        .ok_or_else(|| ManageError::Invalid(format!("{what}: no certificate")))?;
    CertIdentity::from_der(first).map_err(|e| ManageError::Invalid(format!("{what}: {e}")))
}

fn key_view(r: ApiKeyRow, now: i64) -> KeyView {
    KeyView {
        life: Lifecycle::of(
            r.created_at,
            r.expires_at,
            r.revoked_at,
            r.subject_disabled,
            now,
        ),
        scopes: scope_list(&r.scopes),
        last_used_at: r.last_used_at.map(rfc3339),
        id: r.id,
        subject: r.subject,
        name: r.name,
        rotated_from: r.rotated_from,
    }
}

fn hmac_view(r: HmacKeyRow, now: i64) -> HmacView {
    HmacView {
        life: Lifecycle::of(
            r.created_at,
            r.expires_at,
            r.revoked_at,
            r.subject_disabled,
            now,
        ),
        scopes: scope_list(&r.scopes),
        id: r.id,
        key_id: r.key_id,
        alg: r
            .alg
            .unwrap_or_else(|| keycard_core::httpsig::HMAC_SHA256.into()),
        subject: r.subject,
    }
}

fn user_view(u: UserRow) -> UserView {
    UserView {
        scopes: scope_list(&u.scopes),
        status: if u.disabled_at.is_some() {
            "disabled"
        } else {
            "active"
        },
        digest: u.digest_sealed.is_some(),
        created_at: rfc3339(u.created_at),
        password_changed_at: rfc3339(u.password_changed_at),
        disabled_at: u.disabled_at.map(rfc3339),
        password_id: u.password_id,
        name: u.name,
    }
}

fn subject_view(s: SubjectRow) -> SubjectView {
    SubjectView {
        status: if s.disabled_at.is_some() {
            "disabled"
        } else {
            "active"
        },
        created_at: rfc3339(s.created_at),
        disabled_at: s.disabled_at.map(rfc3339),
        name: s.name,
        kind: s.kind,
    }
}

/// A stored client as listed.
pub fn client_view(c: ClientRow) -> ClientView {
    ClientView {
        public: c.auth_method == "none",
        auth: c.auth_method,
        tls_subject_dn: c.tls_subject_dn,
        cert_fingerprint: c.cert_fingerprint,
        redirect_uris: c.redirect_uris,
        grants: c.grants,
        scopes: scope_list(&c.scopes),
        first_party: c.first_party,
        status: if c.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        },
        created_at: rfc3339(c.created_at),
        revoked_at: c.revoked_at.map(rfc3339),
        client_id: c.client_id,
    }
}

fn cert_view(r: CertBindingRow, now: i64) -> CertView {
    CertView {
        life: Lifecycle::of(
            r.created_at,
            r.expires_at,
            r.revoked_at,
            r.subject_disabled,
            now,
        ),
        scopes: scope_list(&r.scopes),
        last_used_at: r.last_used_at.map(rfc3339),
        id: r.id,
        subject: r.subject,
        fingerprint: r.fingerprint,
    }
}

impl Manager {
    /// Operations on `store` with the keys derived from `master`.
    pub fn new(store: Store, master: &MasterKey, settings: &Settings) -> Self {
        Self {
            journal: None,
            store,
            hasher: master.keyed_hasher(),
            sealer: std::sync::Arc::new(master.sealer()),
            realm: settings.digest.realm.clone(),
            algorithm: settings.tokens.algorithm,
            access_ttl: settings.tokens.access_token_ttl,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The same operations, each one that changes something audited to `journal` as done by
    /// `actor` — its outcome, and on failure why.
    pub fn journalled(&self, journal: std::sync::Arc<dyn Journal>, actor: Actor) -> Self {
        Self {
            journal: Some((journal, std::sync::Arc::new(actor))),
            ..self.clone()
        }
    }

    /// Records `operation` on `target` as refused before it ran (such as one that would lock
    /// its caller out) with `error`, and hands the error back.
    pub async fn refused(&self, operation: &str, target: &str, error: ManageError) -> ManageError {
        let refused = self
            .audited(operation, Some(target), async { Err::<(), _>(error) })
            .await;
        match refused {
            Err(e) => e,
            Ok(()) => ManageError::Internal("a refusal went through".into()),
        }
    }

    /// Runs `op` and records its management event: `target` (the input's id) or the one
    /// its answer names.
    async fn audited<T: Targeted>(
        &self,
        operation: &str,
        target: Option<&str>,
        op: impl std::future::Future<Output = Result<T, ManageError>>,
    ) -> Result<T, ManageError> {
        let result = op.await;
        if let Some((journal, actor)) = &self.journal {
            let (outcome, reason, named) = match &result {
                Ok(v) => (keycard_core::Outcome::Success, None, v.target()),
                Err(e) => (keycard_core::Outcome::Failure, Some(e.code()), None),
            };
            journal.record(&crate::audit::Record {
                ts_ms: crate::clock::now_millis(),
                request_id: &actor.request_id,
                route: Some(actor.route),
                method: actor.method,
                outcome,
                reason,
                subject: actor.subject.as_deref(),
                credential_id: Some(&actor.credential_id),
                ip: actor.ip,
                cert_source: None,
                operation: Some((operation, target.or(named))),
            });
        }
        result
    }

    // --- API keys ---

    /// Creates an API key; its text is in the answer only.
    pub async fn create_api_key(&self, req: NewKeyRequest) -> Result<KeyCreated, ManageError> {
        self.audited("key.create", None, async {
            check_subject("subject", &req.subject)?;
            let scopes = scopes(&req.scopes)?;
            if let Some(n) = &req.name {
                check_subject("name", n)?;
            }
            let now = now_secs();
            let expires_at = expiry(now, req.expires_in.as_deref())?;
            let key = api_key::generate().map_err(internal)?;
            let new = NewApiKey {
                id: new_id("key").map_err(internal)?,
                subject: req.subject,
                lookup: api_key::lookup_handle(&self.hasher, key.expose_secret()),
                name: req.name,
                scopes: scopes.as_str().to_owned(),
                created_at: now,
                expires_at,
            };
            self.store.create_api_key(&new).await?;
            Ok(key_created(new, key.expose_secret(), None))
        })
        .await
    }

    /// API keys, of one subject or all.
    pub async fn list_api_keys(&self, subject: Option<&str>) -> Result<Vec<KeyView>, ManageError> {
        let now = now_secs();
        Ok(self
            .store
            .list_api_keys(subject)
            .await?
            .into_iter()
            .map(|r| key_view(r, now))
            .collect())
    }

    /// Revokes an API key (every instance refuses it within a second).
    pub async fn revoke_api_key(&self, id: &str) -> Result<(), ManageError> {
        self.audited("key.revoke", Some(id), async {
            Ok(self.store.revoke_api_key(id, now_secs()).await?)
        })
        .await
    }

    /// Replaces an API key; the old one works for `grace_secs` more (0: revoked now).
    pub async fn rotate_api_key(
        &self,
        id: &str,
        grace_secs: i64,
    ) -> Result<KeyCreated, ManageError> {
        self.audited("key.rotate", Some(id), async {
            if grace_secs < 0 {
                return Err(ManageError::Invalid("grace: must not be negative".into()));
            }
            let old = self.store.get_api_key(id).await?;
            let now = now_secs();
            // The new key lives as long as the old one was meant to, counted from now.
            let expires_at = old.expires_at.map(|e| now + (e - old.created_at).max(0));
            let key = api_key::generate().map_err(internal)?;
            let new = NewApiKey {
                id: new_id("key").map_err(internal)?,
                subject: old.subject.clone(),
                lookup: api_key::lookup_handle(&self.hasher, key.expose_secret()),
                name: old.name.clone(),
                scopes: old.scopes.clone(),
                created_at: now,
                expires_at,
            };
            let grace_until = now + grace_secs;
            self.store.rotate_api_key(id, &new, grace_until).await?;
            Ok(key_created(
                new,
                key.expose_secret(),
                Some(rfc3339(grace_until)),
            ))
        })
        .await
    }

    // --- RFC 9421 keys ---

    /// Creates an RFC 9421 key: a fresh shared secret (returned once), or a client's
    /// Ed25519 public key.
    pub async fn create_hmac_key(&self, req: NewHmacRequest) -> Result<HmacCreated, ManageError> {
        self.audited("hmac.create", None, async {
        use base64::Engine;
        check_subject("subject", &req.subject)?;
        let scopes = scopes(&req.scopes)?;
        let now = now_secs();
        let expires_at = expiry(now, req.expires_in.as_deref())?;
        let id = new_id("hmac").map_err(internal)?;
        let key_id = new_id("hk").map_err(internal)?;
        let (sealed, alg, secret) = match &req.public_key_pem {
            Some(pem) => {
                let public = keycard_core::httpsig::ed25519_public_key_from_pem(pem.as_bytes())
                    .ok_or_else(|| {
                        ManageError::Invalid(
                            "public key: not an Ed25519 public key (PEM: openssl pkey -in key.pem -pubout)"
                                .into(),
                        )
                    })?;
                (
                    public.to_vec(),
                    Some(keycard_core::httpsig::ED25519.to_owned()),
                    None,
                )
            }
            None => {
                let mut raw = vec![0u8; HMAC_SECRET_LEN];
                aws_lc_rs::rand::fill(&mut raw)
                    .map_err(|_| internal("the random number generator failed"))?;
                let secret = SecretBytes::new(raw);
                let sealed = keycard_core::httpsig::seal_secret(
                    &self.sealer,
                    &key_id,
                    secret.expose_secret(),
                )
                .map_err(internal)?;
                let b64 = SecretString::new(
                    base64::engine::general_purpose::STANDARD.encode(secret.expose_secret()),
                );
                (sealed, None, Some(b64))
            }
        };
        let new = NewHmacKey {
            id: id.clone(),
            key_id: key_id.clone(),
            subject: req.subject.clone(),
            lookup: self.hasher.hash(HashDomain::HmacKeyId, key_id.as_bytes()),
            sealed,
            alg: alg.clone(),
            scopes: scopes.as_str().to_owned(),
            created_at: now,
            expires_at,
        };
        self.store.create_hmac_key(&new).await?;
        Ok(HmacCreated {
            id,
            key_id,
            secret: secret.map(|s| s.expose_secret().to_owned()),
            alg: alg.unwrap_or_else(|| keycard_core::httpsig::HMAC_SHA256.into()),
            subject: req.subject,
            scopes: scopes.to_vec(),
            expires_at: expires_at.map(rfc3339),
        })
    })
        .await
    }

    /// RFC 9421 keys, of one subject or all.
    pub async fn list_hmac_keys(
        &self,
        subject: Option<&str>,
    ) -> Result<Vec<HmacView>, ManageError> {
        let now = now_secs();
        Ok(self
            .store
            .list_hmac_keys(subject)
            .await?
            .into_iter()
            .map(|r| hmac_view(r, now))
            .collect())
    }

    /// Revokes an RFC 9421 key.
    pub async fn revoke_hmac_key(&self, id: &str) -> Result<(), ManageError> {
        self.audited("hmac.revoke", Some(id), async {
            Ok(self.store.revoke_hmac_key(id, now_secs()).await?)
        })
        .await
    }

    // --- users and subjects ---

    /// argon2id of the password (off the async threads) and, with `digest`, the sealed
    /// RFC 7616 hashes for this realm.
    async fn hash_and_seal(
        &self,
        name: &str,
        pw: &SecretString,
        digest: bool,
    ) -> Result<(String, Option<Vec<u8>>), ManageError> {
        let for_hash = pw.clone();
        let hash = tokio::task::spawn_blocking(move || {
            keycard_core::password::hash(for_hash.expose_secret().as_bytes())
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let sealed = if digest {
            let secrets = DigestSecrets::derive(name, &self.realm, pw.expose_secret());
            Some(secrets.seal(&self.sealer, name).map_err(internal)?)
        } else {
            None
        };
        Ok((hash, sealed))
    }

    /// Adds a user with a password.
    pub async fn add_user(&self, req: NewUserRequest) -> Result<UserView, ManageError> {
        self.audited("user.add", None, async {
            let NewUserRequest {
                name,
                password,
                scopes: list,
                digest,
            } = req;
            let password = SecretString::new(password);
            check_user_name("name", &name)?;
            let scopes = scopes(&list)?;
            if self.store.find_client(&name).await?.is_some() {
                return Err(ManageError::Invalid(format!(
                    "name: `{}` is an OAuth client's id; a user and a client must not share a name (RFC 9700 4.15: tokens would name either as their subject)",
                    name.escape_debug()
                )));
            }
            if self.store.find_user(&name).await?.is_some() {
                return Err(ManageError::Conflict(format!(
                    "user `{name}` already exists"
                )));
            }
            check_policy(&name, password.expose_secret())
                .map_err(|e| ManageError::Invalid(format!("password: {e}")))?;
            let (hash, sealed) = self.hash_and_seal(&name, &password, digest).await?;
            self.store
                .create_user(&NewUser {
                    name: name.clone(),
                    password_id: new_id("pwd").map_err(internal)?,
                    password_hash: hash,
                    digest_sealed: sealed,
                    scopes: scopes.as_str().to_owned(),
                    created_at: now_secs(),
                })
                .await?;
            Ok(user_view(self.store.get_user(&name).await?))
        })
        .await
    }

    /// Sets a user's password (Digest hashes too, when the user has them).
    pub async fn set_password(
        &self,
        name: &str,
        password: SecretString,
    ) -> Result<UserView, ManageError> {
        self.audited("user.password", Some(name), async {
            let user = self.store.get_user(name).await?;
            check_policy(name, password.expose_secret())
                .map_err(|e| ManageError::Invalid(format!("password: {e}")))?;
            let digest = user.digest_sealed.is_some();
            let (hash, sealed) = self.hash_and_seal(name, &password, digest).await?;
            self.store
                .set_password(
                    name,
                    &new_id("pwd").map_err(internal)?,
                    &hash,
                    sealed.as_deref(),
                    now_secs(),
                )
                .await?;
            Ok(user_view(self.store.get_user(name).await?))
        })
        .await
    }

    /// Creates the user with `password`, or gives the existing user that password.
    pub async fn ensure_user(&self, req: NewUserRequest) -> Result<UserView, ManageError> {
        if self.store.find_user(&req.name).await?.is_some() {
            let name = req.name.clone();
            return self
                .set_password(&name, SecretString::new(req.password))
                .await;
        }
        self.add_user(req).await
    }

    /// Enrols (or re-enrols) TOTP for a user: the login page asks for a code from then on.
    pub async fn enroll_totp(&self, name: &str) -> Result<TotpEnrolled, ManageError> {
        self.audited("user.totp", Some(name), async {
            self.store.get_user(name).await?;
            let seed = keycard_core::totp::generate_seed().map_err(internal)?;
            let sealed =
                keycard_core::user::seal_totp_seed(&self.sealer, name, seed.expose_secret())
                    .map_err(internal)?;
            self.store.set_totp(name, &sealed, now_secs()).await?;
            Ok(TotpEnrolled {
                name: name.to_owned(),
                secret: keycard_core::totp::base32_encode(seed.expose_secret()),
                uri: keycard_core::totp::otpauth_uri("keycard", name, seed.expose_secret()),
            })
        })
        .await
    }

    /// Ends every login session of a user and revokes every grant it holds: the user signs
    /// in again everywhere, and applications' refresh tokens stop working.
    pub async fn logout_user(&self, name: &str) -> Result<SignedOut, ManageError> {
        self.audited("user.logout", Some(name), async {
            let ended = self.store.end_user_sessions(name, now_secs()).await?;
            Ok(SignedOut {
                name: name.to_owned(),
                sessions: ended.sessions,
                grants: ended.grants,
            })
        })
        .await
    }

    /// The grants of a user still in force.
    pub async fn list_grants(&self, name: &str) -> Result<Vec<GrantView>, ManageError> {
        self.store.get_user(name).await?;
        Ok(self
            .store
            .list_grants(name, now_secs())
            .await?
            .into_iter()
            .map(|g| GrantView {
                id: g.grant_id,
                client_id: g.client_id,
                subject: g.subject,
                scopes: g.scopes.split_whitespace().map(str::to_owned).collect(),
                created_at: rfc3339(g.created_at),
                auth_time: rfc3339(g.auth_time),
                expires_at: rfc3339(g.expires_at),
            })
            .collect())
    }

    /// Revokes one grant of a user (`id`), or every one (`None`).
    pub async fn revoke_grants(
        &self,
        name: &str,
        id: Option<&str>,
    ) -> Result<Vec<GrantView>, ManageError> {
        self.audited("user.grants.revoke", Some(name), async {
            let grants = self.list_grants(name).await?;
            let now = now_secs();
            let mut revoked = Vec::new();
            for g in grants {
                if id.is_some_and(|id| id != g.id) {
                    continue;
                }
                if self.store.revoke_grant(name, &g.id, now).await? {
                    revoked.push(g);
                }
            }
            if let Some(id) = id
                && revoked.is_empty()
            {
                return Err(ManageError::NotFound(format!(
                    "user `{name}` holds no grant `{id}`"
                )));
            }
            Ok(revoked)
        })
        .await
    }

    /// A user.
    pub async fn get_user(&self, name: &str) -> Result<UserView, ManageError> {
        Ok(user_view(self.store.get_user(name).await?))
    }

    /// Every user.
    pub async fn list_users(&self) -> Result<Vec<UserView>, ManageError> {
        Ok(self
            .store
            .list_users()
            .await?
            .into_iter()
            .map(user_view)
            .collect())
    }

    /// Every subject.
    pub async fn list_subjects(&self) -> Result<Vec<SubjectView>, ManageError> {
        Ok(self
            .store
            .list_subjects()
            .await?
            .into_iter()
            .map(subject_view)
            .collect())
    }

    /// Disables (or enables) a subject: all its credentials stop (or start) working.
    pub async fn set_subject_disabled(
        &self,
        name: &str,
        disabled: bool,
    ) -> Result<SubjectView, ManageError> {
        let operation = if disabled {
            "subject.disable"
        } else {
            "subject.enable"
        };
        self.audited(operation, Some(name), async {
            check_subject("name", name)?;
            self.store
                .set_subject_disabled(name, disabled, now_secs())
                .await?;
            self.store
                .list_subjects()
                .await?
                .into_iter()
                .find(|s| s.name == name)
                .map(subject_view)
                .ok_or_else(|| ManageError::NotFound(format!("subject `{name}` not found")))
        })
        .await
    }

    // --- OAuth clients ---

    /// Registers a client; a confidential one with a secret gets it in the answer only.
    pub async fn create_client(&self, req: NewClientRequest) -> Result<ClientCreated, ManageError> {
        self.audited("client.create", None, async {
        let invalid = |m: &str| Err(ManageError::Invalid(m.to_owned()));
        check_client_id(&req.client_id)?;
        if self.store.find_user(&req.client_id).await?.is_some() {
            return Err(ManageError::Invalid(format!(
                "client id: `{}` is a user's name; a user and a client must not share a name (RFC 9700 4.15: tokens would name either as their subject)",
                req.client_id.escape_debug()
            )));
        }
        let auth = match (req.public, req.auth.as_deref()) {
            (true, None) => "none",
            (true, Some(_)) => {
                return invalid("a public client has no auth method: it sends no secret");
            }
            (false, None | Some("client_secret_basic")) => "client_secret_basic",
            (false, Some("client_secret_post")) => "client_secret_post",
            (false, Some("tls_client_auth")) => "tls_client_auth",
            (false, Some("self_signed_tls_client_auth")) => "self_signed_tls_client_auth",
            (false, Some(other)) => {
                return Err(ManageError::Invalid(format!(
                    "auth `{}`: one of client_secret_basic, client_secret_post, tls_client_auth, self_signed_tls_client_auth",
                    other.escape_debug()
                )));
            }
        };
        let uses_cert = matches!(auth, "tls_client_auth" | "self_signed_tls_client_auth");
        if !uses_cert && (req.cert_pem.is_some() || req.tls_subject_dn.is_some()) {
            return invalid(
                "a certificate or subject DN goes with auth tls_client_auth or self_signed_tls_client_auth",
            );
        }
        let tls_subject_dn = match &req.tls_subject_dn {
            Some(_) if auth == "self_signed_tls_client_auth" => {
                return invalid(
                    "the subject DN goes with tls_client_auth; a self-signed client registers its certificate",
                );
            }
            Some(dn) => Some(keycard_core::cert::normalize_dn(dn).map_err(|e| {
                ManageError::Invalid(format!("tls subject DN: {e} (write it as `CN=svc,O=Example`, most specific first: openssl x509 -noout -subject -nameopt RFC2253)"))
            })?),
            None => None,
        };
        let cert_fingerprint = match &req.cert_pem {
            Some(pem) => Some(read_cert_pem("certificate", pem.as_bytes())?.fingerprint_hex()),
            None => None,
        };
        if auth == "tls_client_auth" && tls_subject_dn.is_none() && cert_fingerprint.is_none() {
            return invalid(
                "tls_client_auth needs the subject DN its certificates carry (or a certificate to pin)",
            );
        }
        if auth == "self_signed_tls_client_auth" && cert_fingerprint.is_none() {
            return invalid("self_signed_tls_client_auth needs the client's certificate");
        }
        if req.redirect_uris.len() > MAX_REDIRECT_URIS {
            return invalid("at most 16 redirect URIs");
        }
        for uri in &req.redirect_uris {
            check_redirect_uri(uri)?;
        }
        let grants = if req.grants.is_empty() {
            if req.redirect_uris.is_empty() {
                vec!["client_credentials".to_owned()]
            } else {
                vec!["authorization_code".to_owned(), "refresh_token".to_owned()]
            }
        } else {
            req.grants.clone()
        };
        for g in &grants {
            if !GRANTS.contains(&g.as_str()) {
                return Err(ManageError::Invalid(format!(
                    "grant `{}`: keycard issues authorization_code, refresh_token and client_credentials (no implicit or password grant, RFC 9700 §2.4)",
                    g.escape_debug()
                )));
            }
        }
        if req.public && grants.iter().any(|g| g == "client_credentials") {
            return invalid(
                "the client_credentials grant needs a confidential client (not public)",
            );
        }
        if grants.iter().any(|g| g == "authorization_code") && req.redirect_uris.is_empty() {
            return invalid("the authorization_code grant needs at least one redirect URI");
        }
        let scopes = scopes(&req.scopes)?;
        let secret = if req.public || uses_cert {
            None
        } else {
            let s = keycard_core::random_base62(43).map_err(internal)?;
            Some(SecretString::new(format!("kcs_{s}")))
        };
        let row = ClientRow {
            client_id: req.client_id,
            secret_hash: secret.as_ref().map(|s| {
                self.hasher
                    .hash(HashDomain::ClientSecret, s.expose_secret().as_bytes())
                    .to_vec()
            }),
            auth_method: auth.to_owned(),
            redirect_uris: req.redirect_uris,
            grants,
            scopes: scopes.as_str().to_owned(),
            first_party: req.first_party,
            created_at: now_secs(),
            revoked_at: None,
            tls_subject_dn,
            cert_fingerprint,
        };
        if self.store.find_client(&row.client_id).await?.is_some() {
            return Err(ManageError::Conflict(format!(
                "client `{}` already exists",
                row.client_id
            )));
        }
        self.store.create_client(&row).await?;
        Ok(ClientCreated {
            client: client_view(row),
            client_secret: secret.map(|s| s.expose_secret().to_owned()),
        })
    })
        .await
    }

    /// Every client.
    pub async fn list_clients(&self) -> Result<Vec<ClientView>, ManageError> {
        Ok(self
            .store
            .list_clients()
            .await?
            .into_iter()
            .map(client_view)
            .collect())
    }

    /// Revokes a client and every token it holds.
    pub async fn revoke_client(&self, client_id: &str) -> Result<(), ManageError> {
        self.audited("client.revoke", Some(client_id), async {
            Ok(self.store.revoke_client(client_id, now_secs()).await?)
        })
        .await
    }

    // --- certificates ---

    /// Binds a client certificate to a subject (the `mtls` method).
    pub async fn add_cert(&self, req: NewCertRequest) -> Result<CertView, ManageError> {
        self.audited("cert.add", None, async {
            check_subject("subject", &req.subject)?;
            let scopes = scopes(&req.scopes)?;
            let identity = read_cert_pem("certificate", req.cert_pem.as_bytes())?;
            let now = now_secs();
            if identity.not_after < now {
                return Err(ManageError::Invalid(format!(
                    "certificate: it expired on {}",
                    rfc3339(identity.not_after)
                )));
            }
            let expires_at = expiry(now, req.expires_in.as_deref())?;
            let fingerprint = identity.fingerprint_hex();
            let new = NewCertBinding {
                id: new_id("cert").map_err(internal)?,
                subject: req.subject,
                lookup: self
                    .hasher
                    .hash(HashDomain::CertFingerprint, fingerprint.as_bytes()),
                fingerprint,
                scopes: scopes.as_str().to_owned(),
                created_at: now,
                expires_at,
            };
            self.store.create_cert_binding(&new).await?;
            Ok(CertView {
                id: new.id,
                subject: new.subject,
                fingerprint: new.fingerprint,
                scopes: scopes.to_vec(),
                life: Lifecycle::of(now, expires_at, None, false, now),
                last_used_at: None,
            })
        })
        .await
    }

    /// Every certificate binding.
    pub async fn list_certs(&self) -> Result<Vec<CertView>, ManageError> {
        let now = now_secs();
        Ok(self
            .store
            .list_cert_bindings()
            .await?
            .into_iter()
            .map(|r| cert_view(r, now))
            .collect())
    }

    /// Revokes a certificate binding.
    pub async fn revoke_cert(&self, id: &str) -> Result<(), ManageError> {
        self.audited("cert.revoke", Some(id), async {
            Ok(self.store.revoke_cert_binding(id, now_secs()).await?)
        })
        .await
    }

    // --- signing keys ---

    /// A new signing key; the previous one stops signing and stays published until the
    /// tokens it signed have expired.
    pub async fn rotate_signing_key(&self) -> Result<SigningKeyRotated, ManageError> {
        self.audited("signing_key.rotate", None, async {
            let now = now_secs();
            let before = self.store.published_signing_keys(now).await?;
            let previous = before
                .iter()
                .find(|k| k.retired_at.is_none())
                .map(|k| k.kid.clone());
            let row = crate::own_keys::new_key_row(self.algorithm, &self.sealer, now)
                .map_err(internal)?;
            let ttl = i64::try_from(self.access_ttl.as_secs()).unwrap_or(86_400);
            let publish_until = now + ttl + PUBLISH_MARGIN_SECS;
            self.store
                .add_signing_key(&row, publish_until, false)
                .await?;
            Ok(SigningKeyRotated {
                previous_published_until: previous.as_ref().map(|_| rfc3339(publish_until)),
                previous,
                kid: row.kid,
                alg: row.alg,
            })
        })
        .await
    }

    /// The keys in the JWKS now.
    pub async fn list_signing_keys(&self) -> Result<Vec<SigningKeyView>, ManageError> {
        Ok(self
            .store
            .published_signing_keys(now_secs())
            .await?
            .into_iter()
            .map(|k| SigningKeyView {
                current: k.retired_at.is_none(),
                created_at: rfc3339(k.created_at),
                retired_at: k.retired_at.map(rfc3339),
                published_until: k.publish_until.map(rfc3339),
                kid: k.kid,
                alg: k.alg,
            })
            .collect())
    }

    // --- audit ---

    /// A page of audit events, newest first.
    pub async fn audit(&self, f: AuditFilter) -> Result<AuditPage, ManageError> {
        if f.limit == 0 || f.limit > MAX_AUDIT_PAGE {
            return Err(ManageError::Invalid(format!(
                "limit: 1 to {MAX_AUDIT_PAGE}"
            )));
        }
        let rows = self
            .store
            .query_audit_ids(&AuditQuery {
                since_ms: f.since_ms,
                subject: f.subject,
                outcome: f.outcome,
                limit: i64::from(f.limit),
                before_id: f.before,
            })
            .await?;
        let full = rows.len() == f.limit as usize;
        let next_before = rows.iter().map(|(id, _)| *id).min().filter(|_| full);
        let events = rows
            .into_iter()
            .rev()
            .map(|(_, e)| AuditEventView {
                ts: keycard_core::time::rfc3339_millis(e.ts_ms),
                request_id: e.request_id,
                route: e.route.as_deref().map(str::to_owned),
                method: e.method.map(|m| m.as_str().to_owned()),
                outcome: e.outcome.as_str().to_owned(),
                reason: e.reason,
                subject: e.subject.as_deref().map(str::to_owned),
                credential_id: e.credential_id.as_deref().map(str::to_owned),
                ip: e.ip,
            })
            .collect();
        Ok(AuditPage {
            events,
            next_before,
        })
    }
}

// The answers that carry a secret show it in JSON, once, and never in `Debug`.
impl std::fmt::Debug for KeyCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCreated")
            .field("id", &self.id)
            .field("key", &"..")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for HmacCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacCreated")
            .field("id", &self.id)
            .field("key_id", &self.key_id)
            .field("secret", &self.secret.as_ref().map(|_| ".."))
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TotpEnrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpEnrolled")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ClientCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCreated")
            .field("client", &self.client)
            .field("client_secret", &self.client_secret.as_ref().map(|_| ".."))
            .finish()
    }
}

fn key_created(new: NewApiKey, key: &str, old_valid_until: Option<String>) -> KeyCreated {
    KeyCreated {
        scopes: scope_list(&new.scopes),
        expires_at: new.expires_at.map(rfc3339),
        id: new.id,
        key: key.to_owned(),
        subject: new.subject,
        name: new.name,
        old_valid_until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_look_like_others_are_refused() {
        for bad in [
            "",
            "admin\u{202E}nimda",
            "ad\u{200B}min",
            "ad\u{200D}min",
            "\u{FEFF}admin",
            "admin\u{2066}",
            "a\u{00AD}dmin",
            "a\nb",
            "a\u{7F}",
            "a\u{2028}b",
            "tag\u{E0041}",
        ] {
            assert!(check_subject("s", bad).is_err(), "{}", bad.escape_debug());
        }
        for good in ["alice", "José", "spiffe://example.org/ns/a", "名前", "a b"] {
            assert!(check_subject("s", good).is_ok(), "{good}");
        }
        assert!(check_subject("s", &"x".repeat(200)).is_ok());
        assert!(check_subject("s", &"x".repeat(201)).is_err());
    }

    #[test]
    fn scope_lists_are_bounded() {
        let n = |count: usize, len: usize| -> Vec<String> {
            (0..count).map(|i| format!("{i:0>len$}")).collect()
        };
        assert!(scopes(&n(64, 128)).is_ok());
        assert!(scopes(&n(65, 4)).is_err());
        assert!(scopes(&n(1, 129)).is_err());
    }

    #[test]
    fn created_answers_never_show_their_secret_in_debug() {
        let life = Lifecycle::of(0, None, None, false, 0);
        let k = KeyCreated {
            id: "key_1".into(),
            key: "kc_SECRETSECRET".into(),
            subject: "s".into(),
            scopes: vec![],
            expires_at: None,
            name: None,
            old_valid_until: None,
        };
        let h = HmacCreated {
            id: "hmac_1".into(),
            key_id: "hk_1".into(),
            secret: Some("SECRETSECRET".into()),
            alg: "hmac-sha256".into(),
            subject: "s".into(),
            scopes: vec![],
            expires_at: None,
        };
        let t = TotpEnrolled {
            name: "u".into(),
            secret: "SECRETSECRET".into(),
            uri: "otpauth://totp/keycard:u?secret=SECRETSECRET".into(),
        };
        let c = ClientCreated {
            client: ClientView {
                client_id: "c".into(),
                public: false,
                auth: "client_secret_basic".into(),
                redirect_uris: vec![],
                grants: vec![],
                scopes: vec![],
                first_party: false,
                tls_subject_dn: None,
                cert_fingerprint: None,
                status: life.status,
                created_at: life.created_at.clone(),
                revoked_at: None,
            },
            client_secret: Some("kcs_SECRETSECRET".into()),
        };
        for text in [
            format!("{k:?}"),
            format!("{h:?}"),
            format!("{t:?}"),
            format!("{c:?}"),
        ] {
            assert!(!text.contains("SECRETSECRET"), "{text}");
        }
        // The JSON answer does carry it: that is where it is shown, once.
        assert!(
            serde_json::to_string(&k)
                .unwrap()
                .contains("kc_SECRETSECRET")
        );
    }
}
