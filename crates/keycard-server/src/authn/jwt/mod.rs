//! The `jwt` method: JWTs from the external issuers of `[[jwt.issuers]]`, verified against
//! each issuer's keys (a JWKS file or URL, refetched when its cache time passes and at most
//! every [`jwks::FORCED_REFETCH_EVERY`] when a token names a key it does not know).

use std::sync::Arc;

use keycard_core::jwt::{self, JwtError};
use keycard_core::{Method, Principal, Reason, Refusal};

use super::base::Base;
use crate::clock::{now_millis, now_secs};
use crate::tls::PeerCert;
use crate::upstream::client::UpstreamClient;

pub(crate) mod jwks;

pub(crate) use jwks::{Issuers, JwksFileError};

/// The `jwt` method's own state.
#[derive(Debug)]
pub(super) struct Jwt {
    /// The external issuers and their keys.
    issuers: Arc<Issuers>,
    /// The HTTP client that fetches JWKS URLs (on the main runtime).
    client: UpstreamClient,
}

impl Jwt {
    pub(super) fn new(issuers: Arc<Issuers>, client: UpstreamClient) -> Self {
        Jwt { issuers, client }
    }

    /// Verifies `token`, a JWT whose issuer is not keycard. `cert`: the client certificate,
    /// for a certificate-bound token.
    pub(super) async fn verify(
        &self,
        base: &Base,
        token: &str,
        cert: Option<&PeerCert>,
    ) -> Result<Principal, Refusal> {
        let method = Some(Method::Jwt);
        let refuse = |e: JwtError| Refusal::unauthorized(e.reason(), method);
        let iss = jwt::peek_issuer(token).map_err(refuse)?;
        let Some(issuer) = self.issuers.find(&iss) else {
            return Err(refuse(JwtError::WrongIssuer));
        };
        let now = now_secs();
        let verified = match jwt::verify(token, &issuer.keys(), &issuer.rules, now) {
            // Keys rotated at the issuer: refetch (at most once per 30 s), then try again.
            Err(JwtError::UnknownKid) if issuer.may_force_refetch(now_millis()) => {
                let (i, client) = (issuer.clone(), self.client.clone());
                let _ = base
                    .store_runtime
                    .spawn(async move { jwks::refresh(&i, &client).await })
                    .await;
                jwt::verify(token, &issuer.keys(), &issuer.rules, now)
            }
            other => other,
        };
        let verified = verified.map_err(refuse)?;
        // RFC 8705 §3: a certificate-bound token only over a connection with that certificate.
        if let Some(bound) = &verified.x5t_s256 {
            let presented = cert.map(|c| c.identity.x5t_s256()).unwrap_or_default();
            if !keycard_core::constant_time_eq(presented.as_bytes(), bound.as_bytes()) {
                return Err(Refusal::unauthorized(Reason::CertificateMismatch, method));
            }
        }
        Ok(verified.principal(&issuer.settings.issuer))
    }

    /// Refetches JWKS URLs whose cache time has passed (on a timer).
    pub(super) async fn refresh_due(&self) {
        if !self.issuers.is_empty() {
            self.issuers.refresh_due(&self.client).await;
        }
    }
}
