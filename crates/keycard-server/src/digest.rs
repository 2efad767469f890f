//! HTTP Digest (RFC 7616) against users' sealed HA1 values: stateless nonces checked by
//! their MAC, `stale=true` for expired ones, each (nonce, nc) accepted once, `auth-int`
//! over the request body, `userhash`, and `rspauth` in `Authentication-Info`.

use std::collections::HashMap;
use std::sync::Arc;

use keycard_core::digest::{self, HashAlg, NonceState, Qop};
use keycard_core::{Method, Principal, Reason, Refusal};

use crate::authn::{Authenticator, RequestFacts};

impl Authenticator {
    /// Whether a Digest credential could verify, judged before the body it signs is read:
    /// this server's realm and opaque, an algorithm it takes, a nonce it minted, and a user
    /// with Digest secrets. `false` only where verification must fail. (A stale nonce
    /// passes: the client is owed `stale=true`, which needs the response checked.)
    pub(crate) async fn digest_may_verify(&self, params: &str, now_ms: i64) -> bool {
        let Some(r) = digest::parse(params) else {
            return false;
        };
        let ttl_ms = u64::try_from(self.digest.nonce_ttl.as_millis()).unwrap_or(u64::MAX);
        let now = u64::try_from(now_ms).unwrap_or(0);
        if !self.digest.algorithms.contains(&r.algorithm)
            || r.realm != self.digest.realm
            || r.opaque.as_deref() != Some(self.keys.opaque.as_str())
            || self.keys.nonce_key.check(&r.nonce, now, ttl_ms).0 == NonceState::Forged
        {
            return false;
        }
        let method = Some(Method::Digest);
        let name = if r.userhash {
            match self
                .userhash_name(r.algorithm.hash, &r.username, method)
                .await
            {
                Ok(Some(n)) => n.to_string(),
                _ => return false,
            }
        } else {
            r.username
        };
        matches!(self.user(&name, method).await, Ok(Some(u)) if u.digest.is_some())
    }

    /// Verifies a Digest credential; on success also the `Authentication-Info` value.
    pub(crate) async fn verify_digest(
        &self,
        params: &str,
        req: &RequestFacts<'_>,
        now_ms: i64,
        claimed: &mut Option<String>,
    ) -> (Result<Principal, Refusal>, Option<String>) {
        let method = Some(Method::Digest);
        let refuse = |reason| Refusal::unauthorized(reason, method);
        let Some(r) = digest::parse(params) else {
            return (Err(refuse(Reason::Malformed)), None);
        };
        if !self.digest.algorithms.contains(&r.algorithm) {
            return (Err(refuse(Reason::Malformed)), None);
        }
        // Realm and opaque are this server's; anything else answers someone else's challenge.
        if r.realm != self.digest.realm || r.opaque.as_deref() != Some(self.keys.opaque.as_str()) {
            return (Err(refuse(Reason::BadNonce)), None);
        }
        if r.uri != req.target {
            return (Err(refuse(Reason::UriMismatch)), None);
        }
        let ttl_ms = u64::try_from(self.digest.nonce_ttl.as_millis()).unwrap_or(u64::MAX);
        let now = u64::try_from(now_ms).unwrap_or(0);
        let (state, issued) = self.keys.nonce_key.check(&r.nonce, now, ttl_ms);
        if state == NonceState::Forged {
            return (Err(refuse(Reason::BadNonce)), None);
        }
        if let Err(e) = self.require_fresh(method) {
            return (Err(e), None);
        }
        let hash = r.algorithm.hash;
        let name = if r.userhash {
            match self.userhash_name(hash, &r.username, method).await {
                Ok(n) => n.map(|n| n.to_string()),
                Err(e) => return (Err(e), None),
            }
        } else {
            Some(r.username.clone())
        };
        // A userhash that names no Digest user is counted under itself (`:` is in no user
        // name), so that its account runs out like a real one and tells nothing.
        let counted = name
            .clone()
            .or_else(|| r.userhash.then(|| format!("userhash:{}", r.username)));
        if let Some(n) = &counted {
            *claimed = Some(n.clone());
            if let Err(e) = self
                .check_subject_throttle(n, req.ip, now_ms, method)
                .and_then(|()| self.check_account_throttle(n, req.ip, now_ms, method))
            {
                return (Err(e), None);
            }
        }
        let user = match &name {
            Some(n) => match self.user(n, method).await {
                Ok(u) => u,
                Err(e) => return (Err(e), None),
            },
            None => None,
        };
        let secrets = user.as_ref().and_then(|u| u.digest.as_ref());
        let dummy = HashAlg::ALL
            .iter()
            .position(|h| *h == hash)
            .and_then(|i| self.keys.dummy_ha1.get(i))
            .map(String::as_str)
            .unwrap_or("");
        // Unknown users (or users without Digest) are checked against a dummy: same work.
        let ha1 = secrets.map_or(dummy, |s| s.ha1(hash));
        let body_hash = match r.qop {
            Qop::Auth => None,
            Qop::AuthInt => Some(digest::body_hash(hash, req.body.unwrap_or_default())),
        };
        let facts = digest::RequestFacts {
            method: req.method,
            body_hash: body_hash.as_deref(),
        };
        let matches = digest::response_matches(&r, ha1, facts);
        let user = match &user {
            Some(u) if matches && secrets.is_some() => u,
            Some(u) if u.digest.is_some() => {
                return (
                    Err(Refusal::Unauthorized {
                        reason: Reason::BadPassword,
                        method,
                        credential_id: Some(u.password_id.to_string()),
                        subject: Some(u.name.to_string()),
                    }),
                    None,
                );
            }
            _ => return (Err(refuse(Reason::UnknownCredential)), None),
        };
        if state == NonceState::Stale {
            // Right credentials on an expired nonce: the client retries with a fresh one.
            return (
                Err(Refusal::Unauthorized {
                    reason: Reason::StaleNonce,
                    method,
                    credential_id: Some(user.password_id.to_string()),
                    subject: Some(user.name.to_string()),
                }),
                None,
            );
        }
        let expires_ms = i64::try_from(issued.saturating_add(ttl_ms)).unwrap_or(i64::MAX);
        let fresh = match &self.redis {
            None => Ok(self.nonce_counts.accept(&r.nonce, r.nc, expires_ms, now_ms)),
            Some(redis) => {
                redis
                    .accept_nonce_count(&r.nonce, r.nc, expires_ms.saturating_sub(now_ms))
                    .await
            }
        };
        let Ok(fresh) = fresh else {
            // Replay protection cannot be promised: fail closed.
            tracing::warn!("Redis cannot be asked about a Digest nonce count; refusing");
            return (Err(Refusal::Unavailable { method }), None);
        };
        if !fresh {
            return (
                Err(Refusal::Unauthorized {
                    reason: Reason::Replay,
                    method,
                    credential_id: Some(user.password_id.to_string()),
                    subject: Some(user.name.to_string()),
                }),
                None,
            );
        }
        // With auth-int, rspauth would cover the response body, which is streamed: omitted.
        let info = match r.qop {
            Qop::Auth => digest::authentication_info(&r, ha1, None),
            Qop::AuthInt => None,
        };
        (user.principal(Method::Digest), info)
    }

    /// The user a `userhash` names (an index built from the store on first use after a change).
    async fn userhash_name(
        &self,
        hash: HashAlg,
        userhash: &str,
        method: Option<Method>,
    ) -> Result<Option<Arc<str>>, Refusal> {
        let index = match self.cache.userhashes() {
            Some(i) => i,
            None => {
                let generation = self.cache.generation();
                let names = self
                    .read_store(
                        method,
                        |store| async move { store.digest_user_names().await },
                    )
                    .await?;
                let mut index = HashMap::with_capacity(names.len() * HashAlg::ALL.len());
                for name in names {
                    let name: Arc<str> = name.into();
                    for h in HashAlg::ALL {
                        index.insert(
                            (h, digest::userhash(h, &name, &self.digest.realm)),
                            name.clone(),
                        );
                    }
                }
                self.cache.set_userhashes(index, generation)
            }
        };
        Ok(index.get(&(hash, userhash.to_ascii_lowercase())).cloned())
    }
}
