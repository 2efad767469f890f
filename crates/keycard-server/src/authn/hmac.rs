//! The `hmac` method: RFC 9421 signatures with keys made by `keycard hmac create`. The key
//! is found by the keyed hash of the signature's `keyid` (cache, else store), its secret
//! opened with the master key; the signature must cover the configured components, be
//! within `hmac.max_skew`, verify, and not have been seen before — a signature value (and a
//! `nonce`) is accepted once while it could still be fresh. With a body, `Content-Digest`
//! must match the bytes forwarded (the gateway reads the body, bounded, before verifying).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keycard_core::api_key::{self};
use keycard_core::httpsig::{self, Policy, RequestParts, SigError};
use keycard_core::{HashDomain, Method, Principal, Reason, Refusal};

use super::base::{Base, RequestFacts, stored_record};
use crate::config::HmacSettings;
use crate::state::cache::{HmacKey, KeyMaterial};

/// How many signatures are remembered at most (16 bytes of keyed hash and an expiry each,
/// about 40 bytes with the map: 160 MB at the most — 60 s of 65,000 signed requests a
/// second). Beyond, requests are answered 503 until old ones age out: never let through.
const MAX_SEEN: usize = 4_000_000;

/// The policy and the memory of signatures seen.
#[derive(Debug)]
pub(super) struct Hmac {
    policy: Policy,
    /// Keyed hash (first 16 bytes) of the nonce, else of the signature value → when it
    /// may be forgotten (ms): when the signature could no longer be fresh.
    seen: Mutex<HashMap<u128, i64>>,
}

impl Hmac {
    pub(super) fn new(settings: &HmacSettings) -> Self {
        Self {
            policy: Policy {
                required: settings.required_components.clone(),
                max_skew: i64::try_from(settings.max_skew.as_secs()).unwrap_or(60),
            },
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records `mark` as used until `until_ms`.
    fn first_use(&self, mark: u128, now_ms: i64, until_ms: i64) -> Seen {
        let Ok(mut seen) = self.seen.lock() else {
            return Seen::Full;
        };
        if seen.get(&mark).is_some_and(|t| *t > now_ms) {
            return Seen::Before;
        }
        if seen.len() >= MAX_SEEN {
            seen.retain(|_, t| *t > now_ms);
            if seen.len() >= MAX_SEEN {
                return Seen::Full;
            }
        }
        seen.insert(mark, until_ms);
        Seen::First
    }

    /// Forgets signatures that can no longer be fresh.
    pub(super) fn prune(&self, now_ms: i64) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.retain(|_, t| *t > now_ms);
        }
    }
}

/// The components of a request that RFC 9421 signs, from what keycard knows of it.
fn request_parts<'a>(req: &RequestFacts<'a>) -> RequestParts<'a> {
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.target, None),
    };
    RequestParts {
        method: req.method,
        scheme: req.scheme,
        authority: req.authority,
        path,
        query,
        headers: req.headers,
    }
}

/// Whether a signature was seen.
enum Seen {
    /// Not before: now remembered.
    First,
    /// Before: a replay.
    Before,
    /// The memory is full (or broken): nothing can be promised.
    Full,
}

impl Hmac {
    /// Verifies the RFC 9421 signatures `signature` over `input`.
    pub(super) async fn verify(
        &self,
        base: &Base,
        input: &str,
        signature: &str,
        req: &RequestFacts<'_>,
        now_ms: i64,
    ) -> Result<Principal, Refusal> {
        let method = Some(Method::Hmac);
        let refuse = |e: SigError| Refusal::unauthorized(e.reason(), method);
        let sigs = httpsig::parse(input, signature).map_err(refuse)?;
        base.require_fresh(method)?;
        let parts = request_parts(req);
        let body = req.body.filter(|b| !b.is_empty());
        let now = now_ms / 1000;
        // The first signature whose keyid keycard knows is the one that counts.
        for sig in &sigs {
            let Some(keyid) = sig.keyid.as_deref() else {
                continue;
            };
            let handle = base.hasher.hash(HashDomain::HmacKeyId, keyid.as_bytes());
            let Some(key) = self.key(base, handle).await? else {
                continue;
            };
            let principal = api_key::verify_as(&key.record, Method::Hmac, now)?;
            let with_key = |reason: Reason| Refusal::Unauthorized {
                reason,
                method,
                credential_id: Some(key.record.id.to_string()),
                subject: Some(key.record.subject.to_string()),
            };
            httpsig::verify(
                sig,
                key.key.verifying_key(),
                &parts,
                body.is_some(),
                &self.policy,
                now,
            )
            .map_err(|e| with_key(e.reason()))?;
            // Two `Content-Digest` lines: the signature covers them joined, a dictionary
            // parser would keep one member of each name; neither reading is safe to take.
            let mut digests = req.headers.get_all("content-digest").iter();
            let first = digests.next();
            if digests.next().is_some() {
                return Err(with_key(Reason::Malformed));
            }
            if let Some(b) = body {
                let digest = first
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| with_key(Reason::MissingComponent))?;
                httpsig::check_content_digest(digest, b).map_err(|e| with_key(e.reason()))?;
            }
            // One mark per signature: its nonce when it has one (a nonce is single-use
            // whatever is signed with it), else the signature value itself.
            // A verified HMAC value is already unpredictable and unique to what was signed:
            // its first 16 bytes serve as they are.
            let mut mark = [0u8; 16];
            match &sig.nonce {
                Some(n) => {
                    let h = base.hasher.hash_parts(
                        HashDomain::VerifiedToken,
                        &[b"nonce\0", keyid.as_bytes(), b"\0", n.as_bytes()],
                    );
                    mark.copy_from_slice(h.get(..16).unwrap_or(&[0; 16]));
                }
                None => mark.copy_from_slice(sig.value.get(..16).unwrap_or(&[0; 16])),
            }
            // Remembered while the signature could still be accepted.
            let created = sig.created.unwrap_or(now);
            let last_fresh = sig.expires.map_or(created + self.policy.max_skew, |e| {
                e.min(created + self.policy.max_skew)
            });
            let until_ms = last_fresh.saturating_mul(1000) + 1000;
            let seen = match &base.redis {
                None => self.first_use(u128::from_be_bytes(mark), now_ms, until_ms),
                Some(redis) => {
                    let hex = keycard_core::cert::hex(&mark);
                    match redis.first_use("hs", &hex, until_ms - now_ms).await {
                        Ok(true) => Seen::First,
                        Ok(false) => Seen::Before,
                        Err(e) => {
                            tracing::warn!(error = %e, "Redis cannot be asked about a signature; refusing");
                            return Err(Refusal::Unavailable { method });
                        }
                    }
                }
            };
            match seen {
                Seen::First => {}
                Seen::Before => return Err(with_key(Reason::Replay)),
                Seen::Full => {
                    tracing::warn!(
                        "the replay memory of HMAC signatures is full; refusing signed requests"
                    );
                    return Err(Refusal::Unavailable { method });
                }
            }
            return Ok(principal);
        }
        Err(refuse(SigError::UnknownKey))
    }

    /// Whether a signed request could verify, judged before its body is read (which ties
    /// up one of few permits): the first signature whose `keyid` keycard knows — the one
    /// [`Hmac::verify`] judges — is of a live key, fresh, and verifies
    /// over everything it covers (`Content-Digest` as a header: the body is checked against
    /// it once read). So only the key's holder can make keycard read a body. `false` only
    /// where verification must fail.
    pub(super) async fn may_verify(
        &self,
        base: &Base,
        input: &str,
        signature: &str,
        req: &RequestFacts<'_>,
        now_ms: i64,
    ) -> bool {
        let Ok(sigs) = httpsig::parse(input, signature) else {
            return false;
        };
        let parts = request_parts(req);
        let now = now_ms / 1000;
        for sig in &sigs {
            let Some(keyid) = sig.keyid.as_deref() else {
                continue;
            };
            let handle = base.hasher.hash(HashDomain::HmacKeyId, keyid.as_bytes());
            let key = match self.key(base, handle).await {
                Ok(Some(k)) => k,
                Ok(None) => continue,
                Err(_) => return false,
            };
            return api_key::verify_as(&key.record, Method::Hmac, now).is_ok()
                && httpsig::verify(
                    sig,
                    key.key.verifying_key(),
                    &parts,
                    true,
                    &self.policy,
                    now,
                )
                .is_ok();
        }
        false
    }

    /// The HMAC key with lookup handle `handle` (cache, else store); `None` when unknown.
    async fn key(&self, base: &Base, handle: [u8; 32]) -> Result<Option<Arc<HmacKey>>, Refusal> {
        if let Some(k) = base.cache.hmac_key(&handle) {
            return Ok(k);
        }
        let generation = base.cache.generation();
        let row = base
            .read_store(Some(Method::Hmac), move |store| async move {
                store.find_hmac_key(&handle).await
            })
            .await?;
        let key = row.and_then(|r| {
            let material = match r.alg.as_deref() {
                None => match httpsig::open_secret(&base.sealer, &r.key_id, &r.sealed) {
                    Ok(s) => KeyMaterial::Hmac(Box::new(httpsig::SharedKey::new(s.expose_secret()))),
                    Err(e) => {
                        tracing::error!(credential = %r.id, error = %e, "cannot open an HMAC secret (another master key?); key refused");
                        return None;
                    }
                },
                Some(httpsig::ED25519) => match <[u8; 32]>::try_from(r.sealed.as_slice()) {
                    Ok(pk) => KeyMaterial::Ed25519(pk),
                    Err(_) => {
                        tracing::error!(credential = %r.id, "a stored Ed25519 public key is not 32 bytes; key refused");
                        return None;
                    }
                },
                Some(other) => {
                    tracing::error!(credential = %r.id, alg = other, "unknown algorithm of a stored signing key; key refused");
                    return None;
                }
            };
            let record = stored_record(
                r.id,
                r.subject,
                &r.scopes,
                r.expires_at,
                r.revoked_at,
                r.subject_disabled,
            )?;
            Some(HmacKey {
                record,
                key: material,
            })
        });
        Ok(base.cache.insert_hmac_key(handle, key, generation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_once_while_it_could_be_fresh() {
        let s = Hmac::new(&HmacSettings {
            max_skew: std::time::Duration::from_secs(60),
            required_components: Vec::new(),
        });
        assert!(matches!(s.first_use(7, 1_000, 61_000), Seen::First));
        assert!(matches!(s.first_use(7, 30_000, 91_000), Seen::Before));
        assert!(matches!(s.first_use(8, 30_000, 91_000), Seen::First));
        // Once it could no longer be fresh, it is forgotten.
        s.prune(61_001);
        assert!(matches!(s.first_use(7, 61_001, 121_000), Seen::First));
        assert!(matches!(s.first_use(8, 61_001, 121_000), Seen::Before));
    }
}
