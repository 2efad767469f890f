//! What management operations check before they store anything: names, client ids,
//! redirect URIs, scope lists, lifetimes, certificates.

use keycard_core::Scopes;
use keycard_core::cert::CertIdentity;

use super::error::ManageError;

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
pub(super) fn is_format(c: char) -> bool {
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

pub(super) fn scopes(list: &[String]) -> Result<Scopes, ManageError> {
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

pub(super) fn expiry(now: i64, expires_in: Option<&str>) -> Result<Option<i64>, ManageError> {
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
