//! Registered clients, as the token endpoint sees them, and client authentication
//! (RFC 6749 §2.3.1): `client_secret_basic` or `client_secret_post` for confidential
//! clients, exactly the registered one; public clients send only their `client_id`.
//! Secrets are random, so a keyed hash checks them in microseconds (no password hash).

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use keycard_core::{HashDomain, Reason, Scopes, constant_time_eq};
use keycard_store::ClientRow;

use super::Params;
use crate::authn::Authenticator;
use crate::clock::{now_millis, now_secs};
use crate::throttle::Verdict;
use crate::tls::PeerCert;

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
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
    /// The RFC 7591 name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::SecretBasic => "client_secret_basic",
            ClientAuth::SecretPost => "client_secret_post",
            ClientAuth::None => "none",
            ClientAuth::Tls => "tls_client_auth",
            ClientAuth::SelfSignedTls => "self_signed_tls_client_auth",
        }
    }

    /// Whether the client authenticates with a certificate (its tokens are then bound to
    /// it, RFC 8705 §3).
    pub fn uses_certificate(self) -> bool {
        matches!(self, ClientAuth::Tls | ClientAuth::SelfSignedTls)
    }

    /// Parses an RFC 7591 name.
    pub fn parse(s: &str) -> Option<Self> {
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
pub struct ClientRecord {
    /// `client_id`.
    pub client_id: Arc<str>,
    secret_hash: Option<[u8; 32]>,
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
    pub fn from_row(r: ClientRow) -> Option<Self> {
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
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grants.iter().any(|g| g == grant)
    }

    /// Whether it is a public client (no secret, no certificate).
    pub fn is_public(&self) -> bool {
        self.auth == ClientAuth::None
    }

    /// Whether `uri` is one of its redirect URIs: exactly, or for a loopback `http`
    /// redirect URI with any port (RFC 8252 §7.3).
    pub fn redirect_uri_matches(&self, uri: &str) -> bool {
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

/// Why client authentication failed (each an `invalid_client` or `invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// Two methods at once, or a malformed Basic header (`invalid_request`).
    Malformed,
    /// Unknown, revoked, wrong secret or wrong method (`invalid_client`); the reason and
    /// client id are for the audit log.
    Refused(Reason, Option<String>),
    /// Too many failures from this address (`429`).
    Throttled(u64),
    /// The store cannot be read.
    Unavailable,
}

/// What the caller presented to authenticate as a client.
struct Presented {
    client_id: String,
    secret: Option<String>,
    via: ClientAuth,
}

fn presented(headers: &HeaderMap, form: &Params) -> Result<Option<Presented>, ClientError> {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        });
    let posted_secret = form.get("client_secret");
    match header {
        Some(token) => {
            if posted_secret.is_some() {
                return Err(ClientError::Malformed);
            }
            let raw = STANDARD.decode(token).map_err(|_| ClientError::Malformed)?;
            let text = String::from_utf8(raw).map_err(|_| ClientError::Malformed)?;
            let (id, secret) = text.split_once(':').ok_or(ClientError::Malformed)?;
            // RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
            let decode = |s: &str| -> String {
                form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            let (id, secret) = (decode(id), decode(secret));
            if let Some(body_id) = form.get("client_id")
                && body_id != id
            {
                return Err(ClientError::Malformed);
            }
            Ok(Some(Presented {
                client_id: id,
                secret: Some(secret),
                via: ClientAuth::SecretBasic,
            }))
        }
        None => match form.get("client_id") {
            None => Ok(None),
            Some(id) => Ok(Some(Presented {
                client_id: id.to_owned(),
                secret: posted_secret.map(str::to_owned),
                via: if posted_secret.is_some() {
                    ClientAuth::SecretPost
                } else {
                    ClientAuth::None
                },
            })),
        },
    }
}

impl Authenticator {
    /// The client `client_id` (cache, else store); `None` when there is no such client.
    pub(crate) async fn client(
        &self,
        client_id: &str,
    ) -> Result<Option<Arc<ClientRecord>>, ClientError> {
        if let Some(c) = self.cache.client(client_id) {
            return Ok(c);
        }
        let generation = self.cache.generation();
        let id = client_id.to_owned();
        let row = self
            .read_store(None, |store| async move { store.find_client(&id).await })
            .await
            .map_err(|_| ClientError::Unavailable)?;
        let record = row.and_then(ClientRecord::from_row);
        Ok(self.cache.insert_client(client_id, record, generation))
    }

    /// Authenticates the client of a token-endpoint request. `allow_public`: whether a
    /// public client (no secret) is acceptable here. Failures count toward the
    /// failed-attempt throttle, per address and per (client, address).
    pub(crate) async fn authenticate_client(
        &self,
        headers: &HeaderMap,
        form: &Params,
        ip: IpAddr,
        allow_public: bool,
        cert: Option<&PeerCert>,
    ) -> Result<Arc<ClientRecord>, ClientError> {
        let now_ms = now_millis();
        if let Verdict::Throttled { retry_after_secs } = self.throttle.check_ip(ip, now_ms) {
            return Err(ClientError::Throttled(retry_after_secs));
        }
        let Some(p) = presented(headers, form)? else {
            return Err(ClientError::Refused(Reason::NoCredential, None));
        };
        if let Verdict::Throttled { retry_after_secs } =
            self.throttle.check_subject(&p.client_id, ip, now_ms)
        {
            return Err(ClientError::Throttled(retry_after_secs));
        }
        if !self.feed_is_fresh() {
            return Err(ClientError::Unavailable);
        }
        let result = self.check_client(&p, allow_public, cert).await;
        if let Err(ClientError::Refused(..)) = &result {
            self.count_failure(ip, Some(&p.client_id), now_ms);
        }
        result
    }

    async fn check_client(
        &self,
        p: &Presented,
        allow_public: bool,
        cert: Option<&PeerCert>,
    ) -> Result<Arc<ClientRecord>, ClientError> {
        let refuse = |r: Reason| ClientError::Refused(r, Some(p.client_id.clone()));
        // Hash whatever was sent before looking the client up: unknown clients cost the
        // same as known ones.
        let presented_hash = p
            .secret
            .as_deref()
            .map(|s| self.hasher.hash(HashDomain::ClientSecret, s.as_bytes()));
        let Some(client) = self.client(&p.client_id).await? else {
            return Err(refuse(Reason::UnknownCredential));
        };
        if client.revoked {
            return Err(refuse(Reason::Revoked));
        }
        if client.auth.uses_certificate() {
            // RFC 8705 §2: the client_id in the form, the certificate in the handshake,
            // and nothing else.
            if p.via != ClientAuth::None {
                return Err(refuse(Reason::MethodNotAllowed));
            }
            return match cert {
                None => Err(refuse(Reason::NoCredential)),
                Some(c) if certificate_matches(&client, c, now_secs()) => Ok(client),
                Some(c) if client.auth == ClientAuth::Tls && !c.chain_verified => {
                    Err(refuse(Reason::UntrustedCertificate))
                }
                Some(_) => Err(refuse(Reason::CertificateMismatch)),
            };
        }
        if client.auth != p.via {
            return Err(refuse(Reason::MethodNotAllowed));
        }
        match (&client.secret_hash, presented_hash) {
            (Some(stored), Some(given)) if constant_time_eq(stored, &given) => Ok(client),
            (Some(_), _) => Err(refuse(Reason::BadPassword)),
            (None, None) if allow_public => Ok(client),
            (None, _) => Err(refuse(Reason::MethodNotAllowed)),
        }
    }
}

/// Whether `cert` authenticates `client` (RFC 8705 §2.1, §2.2).
fn certificate_matches(client: &ClientRecord, cert: &PeerCert, now: i64) -> bool {
    if !cert.identity.valid_at(now) {
        return false;
    }
    let pinned = client
        .cert_fingerprint
        .as_deref()
        .is_none_or(|f| f.eq_ignore_ascii_case(&cert.identity.fingerprint_hex()));
    match client.auth {
        ClientAuth::Tls => {
            cert.chain_verified
                && pinned
                && client
                    .tls_subject_dn
                    .as_deref()
                    .is_none_or(|dn| dn == cert.identity.subject_dn)
        }
        ClientAuth::SelfSignedTls => client.cert_fingerprint.is_some() && pinned,
        _ => false,
    }
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

    #[test]
    fn basic_and_post_credentials_are_read_and_mixed_ones_refused() {
        let form = Params::parse(b"grant_type=client_credentials").unwrap();
        let mut h = HeaderMap::new();
        // "my%3Aapp:s%2Bcret" — both halves form-urlencoded (RFC 6749 §2.3.1).
        let token = STANDARD.encode("my%3Aapp:s%2Bcret");
        h.insert(AUTHORIZATION, format!("Basic {token}").parse().unwrap());
        let p = presented(&h, &form).unwrap().unwrap();
        assert_eq!(
            (p.client_id.as_str(), p.secret.as_deref()),
            ("my:app", Some("s+cret"))
        );
        assert_eq!(p.via, ClientAuth::SecretBasic);
        let both = Params::parse(b"client_secret=x").unwrap();
        assert_eq!(presented(&h, &both).err(), Some(ClientError::Malformed));
        let post = Params::parse(b"client_id=a&client_secret=b").unwrap();
        let p = presented(&HeaderMap::new(), &post).unwrap().unwrap();
        assert_eq!(p.via, ClientAuth::SecretPost);
        let public = Params::parse(b"client_id=a").unwrap();
        let p = presented(&HeaderMap::new(), &public).unwrap().unwrap();
        assert_eq!(p.via, ClientAuth::None);
        assert!(presented(&HeaderMap::new(), &form).unwrap().is_none());
    }
}
