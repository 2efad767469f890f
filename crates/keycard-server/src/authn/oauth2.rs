//! The `oauth2` method: access tokens keycard issued (its own `iss`), verified against its
//! own signing keys with no store read on the common path, for keycard itself or for a
//! resource under it; refused once revoked, once their client is revoked or their user
//! disabled, and (RFC 8705 §3) over a connection without the certificate they are bound to.

use std::sync::Arc;

use keycard_core::access_token::{self, AccessToken};
use keycard_core::jwt::JwtError;
use keycard_core::{HashDomain, Method, Principal, Reason, Refusal};

use super::base::Base;
use crate::clock::now_secs;
use crate::state::keyring::Keyring;
use crate::tls::PeerCert;

/// The `oauth2` method's own state.
#[derive(Debug)]
pub(super) struct OwnTokens {
    /// keycard's own signing keys.
    pub(super) keyring: Arc<Keyring>,
    /// `server.public_url`: the `iss` of keycard's tokens.
    pub(super) issuer: Arc<str>,
}

impl OwnTokens {
    /// Verifies an access token keycard issued: signature against its own keys, claims,
    /// an audience `accept` takes, not revoked, its client not revoked, its user (when it
    /// has one) not disabled. Memory only, except on a cold cache.
    pub(super) async fn verify_token(
        &self,
        base: &Base,
        token: &str,
        accept: impl Fn(&str) -> bool,
    ) -> Result<Arc<AccessToken>, Refusal> {
        let method = Some(Method::Oauth2);
        let refuse = |e: JwtError| Refusal::unauthorized(e.reason(), method);
        let now = now_secs();
        let handle = base
            .hasher
            .hash(HashDomain::VerifiedToken, token.as_bytes());
        let t = match base.cache.verified_token(&handle, now) {
            Some(t) if accept(&t.audience) => t,
            Some(_) => return Err(refuse(JwtError::WrongAudience)),
            None => {
                let keys = self.keyring.current();
                let t = Arc::new(
                    access_token::verify_access_token(token, &keys.keys, &self.issuer, accept, now)
                        .map_err(refuse)?,
                );
                base.cache.insert_verified_token(handle, t.clone(), now);
                t
            }
        };
        base.require_fresh(method)?;
        let revoked = |subject: Option<String>| Refusal::Unauthorized {
            reason: Reason::Revoked,
            method,
            credential_id: Some(t.client_id.clone()),
            subject,
        };
        if base.cache.is_revoked(&t.jti) {
            return Err(revoked(Some(t.subject.clone())));
        }
        // Disabled by name: the gateway refuses it, and so do introspection and userinfo.
        if base.cache.is_disabled(&t.subject) {
            return Err(Refusal::Unauthorized {
                reason: Reason::Disabled,
                method,
                credential_id: Some(t.client_id.clone()),
                subject: Some(t.subject.clone()),
            });
        }
        match base.client(&t.client_id, method).await {
            Ok(Some(c)) if !c.revoked => {}
            Ok(_) => return Err(revoked(Some(t.subject.clone()))),
            Err(e) => return Err(e),
        }
        if t.subject != t.client_id {
            match base.user(&t.subject, method).await? {
                Some(u) if !u.disabled => {}
                _ => {
                    return Err(Refusal::Unauthorized {
                        reason: Reason::Disabled,
                        method,
                        credential_id: Some(t.client_id.clone()),
                        subject: Some(t.subject.clone()),
                    });
                }
            }
        }
        Ok(t)
    }

    /// The `oauth2` method of the gateway: a token keycard issued, for keycard itself or
    /// for a resource under it that `path` is in.
    pub(super) async fn verify(
        &self,
        base: &Base,
        token: &str,
        path: &str,
        cert: Option<&PeerCert>,
    ) -> Result<Principal, Refusal> {
        let issuer = self.issuer.clone();
        let accept = |aud: &str| {
            *aud == *issuer
                || aud.strip_prefix(&*issuer).is_some_and(|p| {
                    p.starts_with('/')
                        && path.strip_prefix(p).is_some_and(|rest| {
                            p.ends_with('/') || rest.is_empty() || rest.starts_with('/')
                        })
                })
        };
        let t = self.verify_token(base, token, accept).await?;
        check_binding(&t, cert)?;
        Ok(t.principal())
    }
}

/// RFC 8705 §3: a certificate-bound token is good only over a connection with the same
/// certificate.
pub(crate) fn check_binding(t: &AccessToken, cert: Option<&PeerCert>) -> Result<(), Refusal> {
    let Some(bound) = &t.x5t_s256 else {
        return Ok(());
    };
    let presented = cert.map(|c| c.identity.x5t_s256()).unwrap_or_default();
    if keycard_core::constant_time_eq(presented.as_bytes(), bound.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::Unauthorized {
            reason: Reason::CertificateMismatch,
            method: Some(Method::Oauth2),
            credential_id: Some(t.client_id.clone()),
            subject: Some(t.subject.clone()),
        })
    }
}
