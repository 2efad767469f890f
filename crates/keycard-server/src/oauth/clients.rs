//! Registered clients, as the token endpoint sees them, and client authentication
//! (RFC 6749 §2.3.1): `client_secret_basic` or `client_secret_post` for confidential
//! clients, exactly the registered one; public clients send only their `client_id`.
//! Secrets are random, so a keyed hash checks them in microseconds (no password hash).

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::Response;
use http::header::AUTHORIZATION;
use hyper::body::Incoming;
use keycard_core::{HashDomain, Reason, constant_time_eq};

use super::form::Params;
use super::form::{FormError, invalid_request, method_not_allowed, read_form};
use super::{Caller, OAuth};
use crate::authn::Authenticator;
use crate::authn::throttle::Verdict;
use crate::clock::{now_millis, now_secs};
pub(crate) use crate::state::client::{ClientAuth, ClientRecord};
use crate::tls::PeerCert;
use crate::upstream::body::Body;

/// Why client authentication failed (each an `invalid_client` or `invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientError {
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
        if let Verdict::Throttled { retry_after_secs } = self.throttle().check_ip(ip, now_ms) {
            return Err(ClientError::Throttled(retry_after_secs));
        }
        let Some(p) = presented(headers, form)? else {
            return Err(ClientError::Refused(Reason::NoCredential, None));
        };
        if let Verdict::Throttled { retry_after_secs } =
            self.throttle().check_subject(&p.client_id, ip, now_ms)
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
            .map(|s| self.hasher().hash(HashDomain::ClientSecret, s.as_bytes()));
        let Some(client) = self
            .client(&p.client_id)
            .await
            .map_err(|_| ClientError::Unavailable)?
        else {
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

impl OAuth {
    /// The form of a request to an endpoint where the client authenticates (`token`,
    /// `introspect`, `revoke`): read once, bounded, each parameter at most once; any other
    /// method than POST is 405.
    pub(super) async fn client_form(
        &self,
        req: http::Request<Incoming>,
    ) -> Result<(http::request::Parts, Params), Response<Body>> {
        match read_form(req).await {
            Ok(f) => Ok(f),
            Err(FormError::Method) => Err(method_not_allowed("POST")),
            Err(FormError::Invalid) => Err(invalid_request(
                "the body must be a form without repeated parameters",
            )),
        }
    }

    /// The client that sent `form` (RFC 6749 §2.3: HTTP Basic, the form, or RFC 8705 a
    /// certificate), or the answer refusing it. `allow_public`: a client without a secret
    /// may call here.
    pub(super) async fn client_of(
        &self,
        parts: &http::request::Parts,
        form: &Params,
        caller: &Caller,
        allow_public: bool,
    ) -> Result<Arc<ClientRecord>, Response<Body>> {
        self.authn
            .authenticate_client(
                &parts.headers,
                form,
                caller.ip,
                allow_public,
                caller.cert.as_deref(),
            )
            .await
            .map_err(|e| self.client_error(e, caller.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
