//! The verified identity a request carries once a verifier has accepted it.

use std::sync::Arc;

use http::HeaderValue;

use crate::{Method, Scopes};

/// The values of a principal's identity headers (reference §5: `X-Keycard-Subject`,
/// `X-Keycard-Scopes`, `X-Keycard-Credential`), encoded once for a credential that is used
/// again and again (a cached API key) instead of per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityValues {
    /// `X-Keycard-Subject`.
    pub subject: HeaderValue,
    /// `X-Keycard-Scopes`.
    pub scopes: HeaderValue,
    /// `X-Keycard-Credential`.
    pub credential: HeaderValue,
}

impl IdentityValues {
    /// Encodes the three values.
    pub fn encode(subject: &str, scopes: &str, credential_id: &str) -> Self {
        Self {
            subject: header_value(subject),
            scopes: header_value_with_spaces(scopes),
            credential: header_value(credential_id),
        }
    }
}

/// A header value: as is when all visible ASCII other than `%`, else percent-encoded UTF-8
/// (RFC 3986 unreserved characters kept). `%` is always encoded, so one rule reads every
/// value back — percent-decode it — and no two names are sent alike (`José` is
/// `Jos%C3%A9`, the literal name `Jos%C3%A9` is `Jos%25C3%25A9`).
pub fn header_value(value: &str) -> HeaderValue {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'%')
        && let Ok(v) = HeaderValue::from_str(value)
    {
        return v;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.push(b'%');
            out.push(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
            out.push(HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0'));
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// As [`header_value`], spaces kept (they separate scope tokens, which are visible ASCII by
/// construction: RFC 6749 §3.3); a `%` in a token is sent as `%25`.
fn header_value_with_spaces(value: &str) -> HeaderValue {
    if value.contains('%') {
        if value
            .bytes()
            .all(|b| b == b' ' || (0x21..=0x7e).contains(&b))
        {
            return HeaderValue::from_str(&value.replace('%', "%25"))
                .unwrap_or_else(|_| header_value(value));
        }
        return header_value(value);
    }
    HeaderValue::from_str(value).unwrap_or_else(|_| header_value(value))
}

/// What a principal's credential was issued to (`X-Keycard-Subject-Kind`): a person who
/// signed in, or software (RFC 9700 §4.15: a client's token must not pass for a user's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// A person: HTTP Basic and Digest passwords, tokens of an authorization code grant,
    /// and an external issuer's tokens unless they say they are a client's.
    User,
    /// Software: API keys, HMAC keys, client certificates and client-credentials tokens
    /// (an API key is software's even when its subject is also a user's name).
    Client,
}

impl SubjectKind {
    /// `user` or `client`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "user",
            SubjectKind::Client => "client",
        }
    }

    /// The kind a credential of `method` is, unless its token says otherwise.
    pub const fn of(method: Method) -> Self {
        match method {
            Method::Basic | Method::Digest | Method::Oauth2 | Method::Jwt => SubjectKind::User,
            Method::ApiKey | Method::Hmac | Method::Mtls => SubjectKind::Client,
        }
    }
}

/// Who a request proved to be. Only this crate's verifiers construct one, so code that
/// forwards a request must hold the result of a successful verification: a skipped check
/// does not compile.
///
/// One shared allocation: a clone (every request of a cached credential takes one) bumps
/// one reference count, not one per field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(Arc<Parts>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts {
    subject: Arc<str>,
    method: Method,
    scopes: Scopes,
    credential_id: Arc<str>,
    /// The external issuer whose token proved it (`jwt`); `None` for keycard's own subjects.
    issuer: Option<Arc<str>>,
    /// The identity headers' values, when the credential had them encoded already.
    identity: Option<Arc<IdentityValues>>,
    /// What the credential was issued to.
    kind: SubjectKind,
}

impl Principal {
    /// The subject, shared (a reference-count bump, no copy).
    pub fn subject_arc(&self) -> Arc<str> {
        self.0.subject.clone()
    }

    /// The credential id, shared.
    pub fn credential_id_arc(&self) -> Arc<str> {
        self.0.credential_id.clone()
    }

    pub(crate) fn new(
        subject: Arc<str>,
        method: Method,
        scopes: Scopes,
        credential_id: Arc<str>,
    ) -> Self {
        Self(Arc::new(Parts {
            subject,
            method,
            scopes,
            credential_id,
            issuer: None,
            identity: None,
            kind: SubjectKind::of(method),
        }))
    }

    /// Proved by a token issued to a client for itself (client credentials).
    pub(crate) fn issued_to_client(mut self) -> Self {
        Arc::make_mut(&mut self.0).kind = SubjectKind::Client;
        self
    }

    /// What the credential was issued to (`X-Keycard-Subject-Kind`).
    pub fn kind(&self) -> SubjectKind {
        self.0.kind
    }

    /// Proved by a token of the external issuer `issuer`: its subjects are that issuer's
    /// names, not keycard's.
    pub(crate) fn with_issuer(mut self, issuer: Arc<str>) -> Self {
        Arc::make_mut(&mut self.0).issuer = Some(issuer);
        self
    }

    /// The external issuer whose token proved it (`jwt`); `None` for keycard's own subjects.
    pub fn issuer(&self) -> Option<&str> {
        self.0.issuer.as_deref()
    }

    /// With the identity headers' values encoded already (they must be this principal's).
    pub(crate) fn with_identity(mut self, identity: Option<Arc<IdentityValues>>) -> Self {
        Arc::make_mut(&mut self.0).identity = identity;
        self
    }

    /// Whether both are one allocation (a clone of the other).
    #[cfg(test)]
    pub(crate) fn shares_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether it was made of exactly these fields (the same allocations, not equal copies).
    pub(crate) fn built_from(
        &self,
        subject: &Arc<str>,
        method: Method,
        scopes: &Scopes,
        credential_id: &Arc<str>,
        identity: Option<&Arc<IdentityValues>>,
    ) -> bool {
        let p = &*self.0;
        p.method == method
            && Arc::ptr_eq(&p.subject, subject)
            && p.scopes.same(scopes)
            && Arc::ptr_eq(&p.credential_id, credential_id)
            && match (&p.identity, identity) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }

    /// The identity headers' values, if encoded already (else see [`IdentityValues::encode`]).
    pub fn identity_values(&self) -> Option<&IdentityValues> {
        self.0.identity.as_deref()
    }

    /// The subject name (`X-Keycard-Subject`).
    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    /// How it authenticated (`X-Keycard-Method`).
    pub fn method(&self) -> Method {
        self.0.method
    }

    /// The scopes it holds (`X-Keycard-Scopes`).
    pub fn scopes(&self) -> &Scopes {
        &self.0.scopes
    }

    /// The credential's id (`X-Keycard-Credential`).
    pub fn credential_id(&self) -> &str {
        &self.0.credential_id
    }
}
