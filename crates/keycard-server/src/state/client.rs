//! A registered OAuth 2.0 client as the store holds it: how it authenticates, what it may
//! ask for, where it may be sent back to.

use std::sync::Arc;

use keycard_core::Scopes;
use keycard_store::ClientRow;

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret.
    SecretBasic,
    /// `client_id` and `client_secret` in the form.
    SecretPost,
    /// A public client: no secret.
    None,
    /// RFC 8705 §2.1: a certificate chaining to the client CA, with the registered subject
    /// DN (and, when registered, the registered fingerprint).
    Tls,
    /// RFC 8705 §2.2: exactly the registered (self-signed) certificate.
    SelfSignedTls,
}

impl ClientAuth {
    /// Whether the client authenticates with a certificate (its tokens are then bound to
    /// it, RFC 8705 §3).
    pub(crate) fn uses_certificate(self) -> bool {
        matches!(self, ClientAuth::Tls | ClientAuth::SelfSignedTls)
    }

    /// Parses an RFC 7591 name.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "client_secret_basic" => Some(ClientAuth::SecretBasic),
            "client_secret_post" => Some(ClientAuth::SecretPost),
            "none" => Some(ClientAuth::None),
            "tls_client_auth" => Some(ClientAuth::Tls),
            "self_signed_tls_client_auth" => Some(ClientAuth::SelfSignedTls),
            _ => None,
        }
    }
}

/// A client as the authorization server needs it. `Debug` leaves out the secret's hash.
#[derive(Clone)]
pub(crate) struct ClientRecord {
    /// `client_id`.
    pub client_id: Arc<str>,
    pub(crate) secret_hash: Option<[u8; 32]>,
    /// How it authenticates.
    pub auth: ClientAuth,
    /// Registered redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Grant types it may use.
    pub grants: Vec<String>,
    /// The most it may ask for.
    pub scopes: Scopes,
    /// Consent is not asked.
    pub first_party: bool,
    /// Revoked: nothing it holds works.
    pub revoked: bool,
    /// `tls_client_auth`: the RFC 4514 subject DN its certificate must have (normalised).
    pub tls_subject_dn: Option<String>,
    /// The SHA-256 fingerprint (hex) its certificate must have.
    pub cert_fingerprint: Option<String>,
}

impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("auth", &self.auth)
            .field("redirect_uris", &self.redirect_uris)
            .field("grants", &self.grants)
            .field("scopes", &self.scopes)
            .field("first_party", &self.first_party)
            .field("revoked", &self.revoked)
            .field("tls_subject_dn", &self.tls_subject_dn)
            .field("cert_fingerprint", &self.cert_fingerprint)
            .finish_non_exhaustive()
    }
}

impl ClientRecord {
    /// From a stored row; `None` (refused) when the row cannot be right.
    pub(crate) fn from_row(r: ClientRow) -> Option<Self> {
        let scopes = Scopes::parse(&r.scopes).ok()?;
        let auth = ClientAuth::parse(&r.auth_method)?;
        let secret_hash = match r.secret_hash {
            Some(h) => Some(<[u8; 32]>::try_from(h.as_slice()).ok()?),
            None => None,
        };
        // A secret client without a secret, or any other with one, is refused; so is a
        // certificate client without what identifies its certificate.
        let wants_secret = matches!(auth, ClientAuth::SecretBasic | ClientAuth::SecretPost);
        if secret_hash.is_some() != wants_secret {
            return None;
        }
        let tls_subject_dn = match r.tls_subject_dn.as_deref() {
            Some(dn) => Some(keycard_core::cert::normalize_dn(dn).ok()?),
            None => None,
        };
        let identified = match auth {
            ClientAuth::Tls => tls_subject_dn.is_some() || r.cert_fingerprint.is_some(),
            ClientAuth::SelfSignedTls => r.cert_fingerprint.is_some(),
            _ => true,
        };
        if !identified {
            return None;
        }
        Some(Self {
            client_id: r.client_id.into(),
            secret_hash,
            auth,
            redirect_uris: r.redirect_uris,
            grants: r.grants,
            scopes,
            first_party: r.first_party,
            revoked: r.revoked_at.is_some(),
            tls_subject_dn,
            cert_fingerprint: r.cert_fingerprint,
        })
    }

    /// Whether it may use `grant`.
    pub(crate) fn allows_grant(&self, grant: &str) -> bool {
        self.grants.iter().any(|g| g == grant)
    }

    /// Whether it is a public client (no secret, no certificate).
    pub(crate) fn is_public(&self) -> bool {
        self.auth == ClientAuth::None
    }

    /// Whether `uri` is one of its redirect URIs: exactly, or for a loopback `http`
    /// redirect URI with any port (RFC 8252 §7.3).
    pub(crate) fn redirect_uri_matches(&self, uri: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|r| r == uri || loopback_equal(r, uri))
    }
}

/// Whether two `http://127.0.0.1` / `http://[::1]` URIs differ only in their port.
fn loopback_equal(registered: &str, presented: &str) -> bool {
    let (Ok(a), Ok(b)) = (url::Url::parse(registered), url::Url::parse(presented)) else {
        return false;
    };
    let loopback = |u: &url::Url| {
        u.scheme() == "http"
            && matches!(u.host_str(), Some("127.0.0.1" | "[::1]"))
            && u.username().is_empty()
            && u.password().is_none()
    };
    loopback(&a)
        && loopback(&b)
        && a.host_str() == b.host_str()
        && a.path() == b.path()
        && a.query() == b.query()
        && b.fragment().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(uris: &[&str]) -> ClientRecord {
        ClientRecord {
            client_id: "app".into(),
            secret_hash: None,
            auth: ClientAuth::None,
            redirect_uris: uris.iter().map(|s| (*s).to_owned()).collect(),
            grants: vec!["authorization_code".into()],
            scopes: Scopes::empty(),
            first_party: false,
            revoked: false,
            tls_subject_dn: None,
            cert_fingerprint: None,
        }
    }

    #[test]
    fn redirect_uris_match_exactly_except_loopback_ports() {
        let c = record(&[
            "https://app.example/cb",
            "http://127.0.0.1/cb",
            "http://[::1]:8000/cb",
        ]);
        assert!(c.redirect_uri_matches("https://app.example/cb"));
        assert!(!c.redirect_uri_matches("https://app.example/cb/"));
        assert!(!c.redirect_uri_matches("https://app.example/cb?x=1"));
        assert!(!c.redirect_uri_matches("https://app.example:8443/cb"));
        assert!(!c.redirect_uri_matches("https://APP.example/cb"));
        assert!(c.redirect_uri_matches("http://127.0.0.1:51234/cb"));
        assert!(c.redirect_uri_matches("http://[::1]:1/cb"));
        assert!(!c.redirect_uri_matches("http://127.0.0.1:51234/other"));
        assert!(!c.redirect_uri_matches("http://localhost:51234/cb"));
        assert!(!c.redirect_uri_matches("http://user@127.0.0.1:5/cb"));
        assert!(!c.redirect_uri_matches("https://127.0.0.1:51234/cb"));
    }
}
