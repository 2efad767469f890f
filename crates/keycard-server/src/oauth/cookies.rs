//! The pages' cookies — the session's and the CSRF token's, `__Host-` on TLS — and the key that
//! MACs what the pages carry.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use keycard_core::MasterKey;
use keycard_core::user::UserRecord;
use keycard_store::SessionRow;

use super::html;

/// A login session lasts this long.
pub(super) const SESSION_SECS: i64 = 8 * 3600;

pub(super) const SESSION_COOKIE: &str = "kc_session";

pub(super) const CSRF_COOKIE: &str = "kc_csrf";

pub(super) const SECURE_SESSION_COOKIE: &str = "__Host-kc_session";

pub(super) const SECURE_CSRF_COOKIE: &str = "__Host-kc_csrf";

/// keycard's own cookies: never forwarded to an upstream, never set by one.
pub(crate) const OWN_COOKIES: [&str; 4] = [
    SESSION_COOKIE,
    CSRF_COOKIE,
    SECURE_SESSION_COOKIE,
    SECURE_CSRF_COOKIE,
];

/// The length of a session secret (base62).
pub(super) const SESSION_SECRET_LEN: usize = 43;

/// The keys and settings of the pages.
pub(super) struct PageKeys {
    mac: hmac::Key,
    secure: bool,
    pub(super) csp: HeaderValue,
}

impl std::fmt::Debug for PageKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageKeys([redacted])")
    }
}

impl PageKeys {
    pub(super) fn new(master: &MasterKey, secure: bool) -> Self {
        Self {
            mac: master.session_key(),
            secure,
            csp: HeaderValue::from_str(&html::content_security_policy())
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
        }
    }

    /// A MAC of the credentials `user` signs in with (the password's id, the TOTP seed):
    /// it changes when either does.
    pub(super) fn credential_tag(&self, user: &UserRecord) -> String {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(b"credentials\0");
        ctx.update(user.password_id.as_bytes());
        ctx.update(b"\0");
        if let Some(seed) = &user.totp_seed {
            ctx.update(b"totp\0");
            ctx.update(seed.expose_secret());
        }
        URL_SAFE_NO_PAD.encode(ctx.sign())
    }

    pub(super) fn tag(&self, purpose: &str, value: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(purpose.as_bytes());
        ctx.update(b"\0");
        ctx.update(value.as_bytes());
        URL_SAFE_NO_PAD.encode(ctx.sign())
    }

    /// Whether cookies of a request on a connection that is (or is not) `tls` are `Secure`
    /// and `__Host-` named.
    pub(super) fn secure(&self, tls: bool) -> bool {
        self.secure || tls
    }

    /// The names of the session and CSRF cookies.
    pub(super) fn names(&self, tls: bool) -> (&'static str, &'static str) {
        if self.secure(tls) {
            (SECURE_SESSION_COOKIE, SECURE_CSRF_COOKIE)
        } else {
            (SESSION_COOKIE, CSRF_COOKIE)
        }
    }

    pub(super) fn cookie(
        &self,
        name: &str,
        value: &str,
        max_age: i64,
        tls: bool,
    ) -> Option<HeaderValue> {
        let secure = if self.secure(tls) { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
        ))
        .ok()
    }
}

/// A live login session of the request's browser.
pub(super) struct Session {
    /// The secret of its cookie (the key of the consent and logout forms' MACs).
    pub(super) secret: keycard_core::SecretString,
    /// What the store says of it.
    pub(super) row: SessionRow,
}

#[cfg(test)]
mod tests {
    use keycard_core::MasterKey;

    use super::*;

    #[test]
    fn cookies_are_host_only_and_secure_on_tls() {
        let master = MasterKey::generate().unwrap();
        let https = PageKeys::new(&master, true);
        let (session, csrf) = https.names(false);
        assert_eq!((session, csrf), ("__Host-kc_session", "__Host-kc_csrf"));
        let c = https.cookie(session, "v", 10, false).unwrap();
        assert_eq!(
            c,
            "__Host-kc_session=v; Path=/; Max-Age=10; HttpOnly; SameSite=Lax; Secure"
        );
        // A plain-HTTP deployment (a laptop, a test) cannot use the prefix: the browser
        // would drop a cookie without `Secure`.
        let http = PageKeys::new(&master, false);
        assert_eq!(http.names(false), ("kc_session", "kc_csrf"));
        assert_eq!(http.names(true).0, "__Host-kc_session", "a TLS connection");
        assert!(OWN_COOKIES.contains(&"__Host-kc_session") && OWN_COOKIES.contains(&"kc_csrf"));
    }
}
