//! HTTP Basic (RFC 7617) against users' argon2id hashes. argon2id is slow on purpose, so a
//! verified (user, password) pair is remembered under its keyed hash for [`PAIR_TTL_MS`]
//! and forgotten at once when the user changes (the change feed drops it on every instance).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keycard_core::{HashDomain, Method, Principal, Reason, Refusal, SecretString, basic};

use crate::authn::{Authenticator, RequestFacts};

/// How long a verified (user, password) pair is remembered.
pub const PAIR_TTL_MS: i64 = 60_000;

impl Authenticator {
    pub(crate) async fn verify_basic(
        &self,
        token: &str,
        req: &RequestFacts<'_>,
        now_ms: i64,
        claimed: &mut Option<String>,
    ) -> Result<Principal, Refusal> {
        let method = Some(Method::Basic);
        let creds =
            basic::decode(token).ok_or_else(|| Refusal::unauthorized(Reason::Malformed, method))?;
        *claimed = Some(creds.user.clone());
        self.check_subject_throttle(&creds.user, req.ip, now_ms, method)?;
        self.check_account_throttle(&creds.user, req.ip, now_ms, method)?;
        self.require_fresh(method)?;

        let pair = self.pair_handle(&creds.user, &creds.password);
        if let Some(user) = self.cache.verified_pair(&pair, now_ms) {
            return user.principal(Method::Basic);
        }
        // One argon2id run per pair at a time: when a remembered pair expires under load,
        // the other requests with it wait for that run instead of each hashing again.
        let gate = self.pair_gates.gate(pair);
        let held = gate.lock().await;
        let result = self.verify_pair(pair, creds, method).await;
        drop(held);
        self.pair_gates.release(&pair, gate);
        result
    }

    async fn verify_pair(
        &self,
        pair: [u8; 32],
        creds: basic::BasicCredentials,
        method: Option<Method>,
    ) -> Result<Principal, Refusal> {
        let now_ms = crate::clock::now_millis();
        if let Some(user) = self.cache.verified_pair(&pair, now_ms) {
            return user.principal(Method::Basic);
        }
        let generation = self.cache.generation();
        let user = self.user(&creds.user, method).await?;
        // Unknown users are checked against a dummy hash: the same work, the same time.
        let hash = match &user {
            Some(u) => u.password_hash.clone(),
            None => self.keys.dummy_hash.clone(),
        };
        let password = creds.password;
        let matches = self
            .run_slow(method, move || {
                keycard_core::password::verify(&hash, password.expose_secret().as_bytes())
            })
            .await?;
        match user {
            Some(u) if matches => {
                self.cache
                    .insert_verified_pair(pair, u.clone(), now_ms + PAIR_TTL_MS, generation);
                u.principal(Method::Basic)
            }
            Some(u) => Err(Refusal::Unauthorized {
                reason: Reason::BadPassword,
                method,
                credential_id: Some(u.password_id.to_string()),
                subject: Some(u.name.to_string()),
            }),
            None => Err(Refusal::unauthorized(Reason::UnknownCredential, method)),
        }
    }

    /// The keyed hash of a (user, password) pair; a NUL cannot occur in either (control
    /// characters are refused), so it separates them unambiguously.
    fn pair_handle(&self, user: &str, password: &SecretString) -> [u8; 32] {
        // Zeroized when dropped, like the password itself.
        let buf = SecretString::new(format!("{user}\u{0}{}", password.expose_secret()));
        self.hasher
            .hash(HashDomain::BasicPair, buf.expose_secret().as_bytes())
    }
}

/// Per-pair gates for single-flight verification (one argon2id run per pair at a time).
#[derive(Debug, Default)]
pub(crate) struct PairGates(Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>);

impl PairGates {
    fn gate(&self, pair: [u8; 32]) -> Arc<tokio::sync::Mutex<()>> {
        match self.0.lock() {
            Ok(mut map) => map.entry(pair).or_default().clone(),
            // A poisoned map only loses the single-flight, never a check.
            Err(_) => Arc::default(),
        }
    }

    fn release(&self, pair: &[u8; 32], gate: Arc<tokio::sync::Mutex<()>>) {
        if let Ok(mut map) = self.0.lock() {
            // Ours and the map's: nobody else waits on it.
            if Arc::strong_count(&gate) <= 2 {
                map.remove(pair);
            }
        }
    }

    /// Drops gates nobody holds (a request cancelled mid-verification skips `release`).
    pub(crate) fn sweep(&self) {
        if let Ok(mut map) = self.0.lock() {
            map.retain(|_, g| Arc::strong_count(g) > 1);
        }
    }

    /// How many gates exist.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gates_of_cancelled_verifications_are_swept() {
        let gates = PairGates::default();
        let g = gates.gate([1; 32]);
        let waiter = gates.gate([1; 32]);
        gates.release(&[1; 32], waiter);
        assert_eq!(gates.len(), 1, "still held by the first");
        // The first is cancelled: it never calls release.
        drop(g);
        gates.sweep();
        assert_eq!(gates.len(), 0);
        let kept = gates.gate([2; 32]);
        gates.sweep();
        assert_eq!(gates.len(), 1, "a held gate stays");
        drop(kept);
    }
}
