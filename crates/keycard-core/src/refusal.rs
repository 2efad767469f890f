//! Why a request is refused. One type inside; the server maps it to HTTP in one place, and
//! the [`Reason`] goes only to the audit log, never to the client.

use crate::method::Method;
use crate::principal::Principal;

/// The audit `reason` code of a refusal (reference §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The route needs a credential and none of an allowed method was presented.
    NoCredential,
    /// A credential was presented in a form that cannot be right (bad checksum, bad syntax).
    Malformed,
    /// The credential is well formed but not known.
    UnknownCredential,
    /// The credential is past its expiry (or its rotation grace).
    Expired,
    /// The credential was revoked.
    Revoked,
    /// The subject is disabled.
    Disabled,
    /// The presented credential's method is not allowed on the route.
    MethodNotAllowed,
    /// The caller is known but lacks a scope the route requires.
    MissingScope,
    /// The store could not be read, so nothing can be verified.
    StoreUnavailable,
    /// The user is known but the password (or Digest response) is wrong.
    BadPassword,
    /// A Digest nonce this server minted, but expired (the client is told `stale=true`).
    StaleNonce,
    /// A Digest nonce this server did not mint (forged MAC or wrong shape), or a realm or
    /// opaque value that is not this server's.
    BadNonce,
    /// A Digest (nonce, nc) pair seen before, or an nc that did not grow.
    Replay,
    /// The Digest response names another request-target than the request's.
    UriMismatch,
    /// Too many failed attempts from this client: the failed-attempt throttle.
    TooManyFailures,
    /// A token longer than any legitimate one, refused before decoding.
    TokenTooLarge,
    /// A token whose JSON repeats a key.
    DuplicateKey,
    /// A JWT with `alg: none`.
    AlgNone,
    /// A JWT whose `alg` is not its key's.
    AlgMismatch,
    /// A JWT header naming key material elsewhere (`jku`, `x5u`, `jwk`, `x5c`).
    ForeignKeyHeader,
    /// A JWT with a `crit` extension keycard does not implement.
    UnknownCrit,
    /// A JWT `kid` with characters no key id needs.
    BadKid,
    /// A JWT `kid` the issuer's key set does not hold.
    UnknownKid,
    /// A signature that does not verify.
    BadSignature,
    /// A JWT before its `nbf` (or `iat`).
    NotYetValid,
    /// A JWT from another issuer.
    WrongIssuer,
    /// An encrypted JWT (JWE): not accepted.
    Jwe,
    /// A JWT for another audience.
    WrongAudience,
    /// A token of keycard's that is not an access token (an ID token presented as one).
    WrongTokenType,
    /// A TOTP code that is wrong, or was used before.
    BadTotp,
    /// A PKCE `code_verifier` that does not answer the code's challenge.
    BadCodeVerifier,
    /// A message signature that does not cover a component the route requires.
    MissingComponent,
    /// A client certificate that does not chain to `client_ca` (mTLS), or a forwarded one
    /// that cannot be read.
    UntrustedCertificate,
    /// A certificate-bound token (RFC 8705 `cnf`) presented without its certificate.
    CertificateMismatch,
    /// The route's rate limit for this subject is spent.
    RateLimited,
    /// A header only a trusted proxy may set, in a form no proxy sends (a forwarded client
    /// certificate header repeated).
    UntrustedForwardedHeader,
    /// A browser request made on another site's behalf (`Origin`, `Sec-Fetch-Site`) to an
    /// endpoint that refuses them (the admin API).
    CrossSite,
    /// A request body that is not the JSON the endpoint takes (a form post).
    NotJson,
    /// A request path an upstream could read as another route's: dot or empty segments,
    /// path parameters, encoded separators, or no path at all.
    PathNotCanonical,
    /// A request HTTP itself forbids: no `Host`, two of them, or an invalid one (RFC 9112
    /// §3.2).
    MalformedRequest,
    /// The account has used up its failed passwords and one-time codes for the window
    /// (`limits.account_failed_auth`), whatever address they came from.
    AccountThrottled,
}

impl Reason {
    /// Every reason, in declaration order ([`Reason::index`] is the position here).
    pub const ALL: [Reason; 41] = [
        Reason::NoCredential,
        Reason::Malformed,
        Reason::UnknownCredential,
        Reason::Expired,
        Reason::Revoked,
        Reason::Disabled,
        Reason::MethodNotAllowed,
        Reason::MissingScope,
        Reason::StoreUnavailable,
        Reason::BadPassword,
        Reason::StaleNonce,
        Reason::BadNonce,
        Reason::Replay,
        Reason::UriMismatch,
        Reason::TooManyFailures,
        Reason::TokenTooLarge,
        Reason::DuplicateKey,
        Reason::AlgNone,
        Reason::AlgMismatch,
        Reason::ForeignKeyHeader,
        Reason::UnknownCrit,
        Reason::BadKid,
        Reason::UnknownKid,
        Reason::BadSignature,
        Reason::NotYetValid,
        Reason::WrongIssuer,
        Reason::Jwe,
        Reason::WrongAudience,
        Reason::WrongTokenType,
        Reason::BadTotp,
        Reason::BadCodeVerifier,
        Reason::MissingComponent,
        Reason::UntrustedCertificate,
        Reason::CertificateMismatch,
        Reason::RateLimited,
        Reason::UntrustedForwardedHeader,
        Reason::CrossSite,
        Reason::NotJson,
        Reason::PathNotCanonical,
        Reason::MalformedRequest,
        Reason::AccountThrottled,
    ];

    /// The position in [`Reason::ALL`]: a dense index for counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The reason whose audit code is `code`.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == code)
    }

    /// The short code written to the audit log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::NoCredential => "no_credential",
            Reason::Malformed => "malformed",
            Reason::UnknownCredential => "unknown_credential",
            Reason::Expired => "expired",
            Reason::Revoked => "revoked",
            Reason::Disabled => "disabled",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::MissingScope => "missing_scope",
            Reason::StoreUnavailable => "store_unavailable",
            Reason::BadPassword => "bad_password",
            Reason::StaleNonce => "stale_nonce",
            Reason::BadNonce => "bad_nonce",
            Reason::Replay => "replay",
            Reason::UriMismatch => "uri_mismatch",
            Reason::TooManyFailures => "too_many_failures",
            Reason::TokenTooLarge => "token_too_large",
            Reason::DuplicateKey => "duplicate_key",
            Reason::AlgNone => "alg_none",
            Reason::AlgMismatch => "alg_mismatch",
            Reason::ForeignKeyHeader => "foreign_key_header",
            Reason::UnknownCrit => "unknown_crit",
            Reason::BadKid => "bad_kid",
            Reason::UnknownKid => "unknown_kid",
            Reason::BadSignature => "bad_signature",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::Jwe => "jwe",
            Reason::WrongAudience => "wrong_audience",
            Reason::WrongTokenType => "wrong_token_type",
            Reason::BadTotp => "bad_totp",
            Reason::BadCodeVerifier => "bad_code_verifier",
            Reason::MissingComponent => "missing_component",
            Reason::UntrustedCertificate => "untrusted_certificate",
            Reason::CertificateMismatch => "certificate_mismatch",
            Reason::RateLimited => "rate_limited",
            Reason::UntrustedForwardedHeader => "untrusted_forwarded_header",
            Reason::CrossSite => "cross_site",
            Reason::NotJson => "not_json",
            Reason::PathNotCanonical => "path_not_canonical",
            Reason::MalformedRequest => "malformed_request",
            Reason::AccountThrottled => "account_throttled",
        }
    }
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// 401: no acceptable proof of identity.
    Unauthorized {
        /// Why (audit only).
        reason: Reason,
        /// The method of the credential that was presented, if one was recognised.
        method: Option<Method>,
        /// The credential id, when the credential was found but is not valid now.
        credential_id: Option<String>,
        /// The subject, when known (audit only).
        subject: Option<String>,
    },
    /// 403: the caller proved who it is but lacks a scope the route requires.
    Forbidden {
        /// Who the caller is.
        principal: Principal,
        /// The first required scope it lacks (audit only).
        missing: String,
    },
    /// 503: the store cannot be read; fail closed.
    Unavailable {
        /// The method of the credential that was presented, if one was recognised.
        method: Option<Method>,
    },
    /// 429: the failed-attempt throttle bites for this client.
    Throttled {
        /// The method of the credential that was presented, if one was recognised.
        method: Option<Method>,
        /// The subject named by the attempt, when known (audit only).
        subject: Option<String>,
        /// Attempts allowed per window.
        limit: u32,
        /// Seconds until the window passes.
        retry_after_secs: u64,
        /// Whether it is the account's failures (from any address) that bite, rather than
        /// this client's.
        account: bool,
    },
    /// 429: the route's rate limit for this caller is spent.
    RateLimited {
        /// Who the caller is (`None` on a public route: counted per client address).
        principal: Option<Principal>,
        /// The configured count (`RateLimit-Limit`).
        limit: u32,
        /// Seconds until the next request would be allowed.
        retry_after_secs: u64,
        /// Seconds until the whole budget is back (`RateLimit-Reset`).
        reset_secs: u64,
    },
}

impl Refusal {
    /// A 401 with no credential details.
    pub fn unauthorized(reason: Reason, method: Option<Method>) -> Self {
        Refusal::Unauthorized {
            reason,
            method,
            credential_id: None,
            subject: None,
        }
    }

    /// The audit reason.
    pub fn reason(&self) -> Reason {
        match self {
            Refusal::Unauthorized { reason, .. } => *reason,
            Refusal::Forbidden { .. } => Reason::MissingScope,
            Refusal::Unavailable { .. } => Reason::StoreUnavailable,
            Refusal::Throttled { account: true, .. } => Reason::AccountThrottled,
            Refusal::Throttled { .. } => Reason::TooManyFailures,
            Refusal::RateLimited { .. } => Reason::RateLimited,
        }
    }

    /// The method of the presented credential, if recognised.
    pub fn method(&self) -> Option<Method> {
        match self {
            Refusal::Unauthorized { method, .. }
            | Refusal::Unavailable { method }
            | Refusal::Throttled { method, .. } => *method,
            Refusal::Forbidden { principal, .. } => Some(principal.method()),
            Refusal::RateLimited { principal, .. } => principal.as_ref().map(Principal::method),
        }
    }
}

#[cfg(test)]
mod reason_tests {
    use super::Reason;

    #[test]
    fn every_reason_is_in_all_at_its_index() {
        for (i, r) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(Reason::from_code(r.as_str()), Some(r));
        }
        assert_eq!(Reason::from_code("nonsense"), None);
    }
}
