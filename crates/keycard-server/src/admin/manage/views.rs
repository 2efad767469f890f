//! What management operations take and answer: the requests (also the admin API's JSON
//! bodies) and the views of stored credentials, none of which holds a secret but the one
//! answer that shows a new secret once.

use keycard_core::Outcome;
use keycard_store::{
    ApiKeyRow, CertBindingRow, ClientRow, HmacKeyRow, NewApiKey, SubjectRow, UserRow,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
    /// Page size (1..=[`MAX_AUDIT_PAGE`](super::MAX_AUDIT_PAGE)).
    pub limit: u32,
    /// The cursor of the page after this one (newer), as returned in `next_before`.
    pub before: Option<i64>,
}

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
    pub(super) fn of(
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

pub(super) fn rfc3339(t: i64) -> String {
    keycard_core::time::rfc3339(t)
}

pub(super) fn scope_list(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

pub(super) fn key_view(r: ApiKeyRow, now: i64) -> KeyView {
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

pub(super) fn hmac_view(r: HmacKeyRow, now: i64) -> HmacView {
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

pub(super) fn user_view(u: UserRow) -> UserView {
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

pub(super) fn subject_view(s: SubjectRow) -> SubjectView {
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

pub(super) fn cert_view(r: CertBindingRow, now: i64) -> CertView {
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

pub(super) fn key_created(
    new: NewApiKey,
    key: &str,
    old_valid_until: Option<String>,
) -> KeyCreated {
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
