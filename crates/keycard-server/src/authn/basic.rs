//! HTTP Basic (RFC 7617) against users' argon2id hashes. argon2id is slow on purpose, so a
//! verified (user, password) pair is remembered under its keyed hash for [`PAIR_TTL_MS`]
//! and forgotten at once when the user changes (the change feed drops it on every instance).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keycard_core::{HashDomain, Method, Principal, Reason, Refusal, SecretString, basic};

use super::base::{Base, Checked, RequestFacts};

/// How long a verified (user, password) pair is remembered.
pub(super) const PAIR_TTL_MS: i64 = 60_000;

/// The `basic` method's own state.
pub(super) struct Basic {
    /// Single-flight gates for verifications of the same pair.
    gates: PairGates,
    /// An argon2id hash of a random password: unknown users are verified against it, so
    /// they cost the same time as known ones.
    dummy_hash: String,
}

impl std::fmt::Debug for Basic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Basic([redacted])")
    }
}

impl Basic {
    pub(super) fn new(dummy_hash: String) -> Self {
        Basic {
            gates: PairGates::default(),
            dummy_hash,
        }
    }

    /// The hash unknown users are checked against (the login page shares it).
    pub(super) fn dummy_hash(&self) -> &str {
        &self.dummy_hash
    }

    /// Drops the gates of cancelled verifications (on a timer).
    pub(super) fn sweep(&self) {
        self.gates.sweep();
    }

    /// Verifies the `Authorization: Basic` credential `token`.
    pub(super) async fn verify(
        &self,
        base: &Base,
        token: &str,
        req: &RequestFacts<'_>,
        now_ms: i64,
    ) -> Checked {
        let Some(creds) = basic::decode(token) else {
            return Checked::from(Err(Refusal::unauthorized(
                Reason::Malformed,
                Some(Method::Basic),
            )));
        };
        let claimed = Some(creds.user.clone());
        let result = self.verify_decoded(base, creds, req, now_ms).await;
        Checked {
            result: result.map(Into::into),
            claimed,
        }
    }

    async fn verify_decoded(
        &self,
        base: &Base,
        creds: basic::BasicCredentials,
        req: &RequestFacts<'_>,
        now_ms: i64,
    ) -> Result<Principal, Refusal> {
        let method = Some(Method::Basic);
        base.check_subject_throttle(&creds.user, req.ip, now_ms, method)?;
        base.check_account_throttle(&creds.user, req.ip, now_ms, method)?;
        base.require_fresh(method)?;

        let pair = pair_handle(base, &creds.user, &creds.password);
        if let Some(user) = base.cache.verified_pair(&pair, now_ms) {
            return user.principal(Method::Basic);
        }
        // One argon2id run per pair at a time: when a remembered pair expires under load,
        // the other requests with it wait for that run instead of each hashing again.
        let gate = self.gates.gate(pair);
        let held = gate.lock().await;
        let result = self.verify_pair(base, pair, creds, method).await;
        drop(held);
        self.gates.release(&pair, gate);
        result
    }

    async fn verify_pair(
        &self,
        base: &Base,
        pair: [u8; 32],
        creds: basic::BasicCredentials,
        method: Option<Method>,
    ) -> Result<Principal, Refusal> {
        let now_ms = crate::clock::now_millis();
        if let Some(user) = base.cache.verified_pair(&pair, now_ms) {
            return user.principal(Method::Basic);
        }
        let generation = base.cache.generation();
        let user = base.user(&creds.user, method).await?;
        // Unknown users are checked against a dummy hash: the same work, the same time.
        let hash = match &user {
            Some(u) => u.password_hash.clone(),
            None => self.dummy_hash.clone(),
        };
        let password = creds.password;
        let matches = base
            .run_slow(method, move || {
                keycard_core::password::verify(&hash, password.expose_secret().as_bytes())
            })
            .await?;
        match user {
            Some(u) if matches => {
                base.cache
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
}

/// The keyed hash of a (user, password) pair; a NUL cannot occur in either (control
/// characters are refused), so it separates them unambiguously.
fn pair_handle(base: &Base, user: &str, password: &SecretString) -> [u8; 32] {
    // Zeroized when dropped, like the password itself.
    let buf = SecretString::new(format!("{user}\u{0}{}", password.expose_secret()));
    base.hasher
        .hash(HashDomain::BasicPair, buf.expose_secret().as_bytes())
}

/// Per-pair gates for single-flight verification (one argon2id run per pair at a time).
#[derive(Debug, Default)]
struct PairGates(Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>);

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
    fn sweep(&self) {
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
