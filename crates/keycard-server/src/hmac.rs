//! The `hmac` method: RFC 9421 signatures with keys made by `keycard hmac create`. The key
//! is found by the keyed hash of the signature's `keyid` (cache, else store), its secret
//! opened with the master key; the signature must cover the configured components, be
//! within `hmac.max_skew`, verify, and not have been seen before — a signature value (and a
//! `nonce`) is accepted once while it could still be fresh. With a body, `Content-Digest`
//! must match the bytes forwarded (the gateway reads the body, bounded, before verifying).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keycard_core::api_key::{self, ApiKeyRecord};
use keycard_core::httpsig::{self, Policy, RequestParts, SigError};
use keycard_core::{HashDomain, Method, Principal, Reason, Refusal, Scopes};

use crate::authn::{Authenticator, RequestFacts};
use crate::cache::HmacKey;
use crate::config::HmacSettings;

/// How many signatures are remembered at most; beyond, new ones are refused (fail closed)
/// until old ones age out.
const MAX_SEEN: usize = 1_000_000;

/// The policy and the memory of signatures seen.
#[derive(Debug)]
pub(crate) struct HmacState {
    policy: Policy,
    /// Keyed hash of (signature value or nonce) → when it may be forgotten (ms).
    seen: Mutex<HashMap<[u8; 32], i64>>,
}

impl HmacState {
    pub(crate) fn new(settings: &HmacSettings) -> Self {
        Self {
            policy: Policy {
                required: settings.required_components.clone(),
                max_skew: i64::try_from(settings.max_skew.as_secs()).unwrap_or(60),
            },
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records every one of `marks` as used until `until_ms`; `false` (nothing recorded)
    /// when one was used already or the memory is full.
    fn first_use(&self, marks: &[[u8; 32]], now_ms: i64, until_ms: i64) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if marks
            .iter()
            .any(|m| seen.get(m).is_some_and(|t| *t > now_ms))
        {
            return false;
        }
        if seen.len() + marks.len() > MAX_SEEN {
            seen.retain(|_, t| *t > now_ms);
            if seen.len() + marks.len() > MAX_SEEN {
                return false;
            }
        }
        for m in marks {
            seen.insert(*m, until_ms);
        }
        true
    }

    /// Forgets signatures that can no longer be fresh.
    pub(crate) fn prune(&self, now_ms: i64) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.retain(|_, t| *t > now_ms);
        }
    }
}

impl Authenticator {
    pub(crate) async fn verify_signature(
        &self,
        input: &str,
        signature: &str,
        req: &RequestFacts<'_>,
        now_ms: i64,
    ) -> Result<Principal, Refusal> {
        let method = Some(Method::Hmac);
        let refuse = |e: SigError| Refusal::unauthorized(e.reason(), method);
        let sigs = httpsig::parse(input, signature).map_err(refuse)?;
        self.require_fresh(method)?;
        let (path, query) = match req.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (req.target, None),
        };
        let parts = RequestParts {
            method: req.method,
            scheme: req.scheme,
            authority: req.authority,
            path,
            query,
            headers: req.headers,
        };
        let body = req.body.filter(|b| !b.is_empty());
        let now = now_ms / 1000;
        // The first signature whose keyid keycard knows is the one that counts.
        for sig in &sigs {
            let Some(keyid) = sig.keyid.as_deref() else {
                continue;
            };
            let handle = self.hasher.hash(HashDomain::HmacKeyId, keyid.as_bytes());
            let Some(key) = self.hmac_key(handle).await? else {
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
                key.secret.expose_secret(),
                &parts,
                body.is_some(),
                &self.hmac.policy,
                now,
            )
            .map_err(|e| with_key(e.reason()))?;
            if let Some(b) = body {
                let digest = req
                    .headers
                    .get("content-digest")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| with_key(Reason::MissingComponent))?;
                httpsig::check_content_digest(digest, b).map_err(|e| with_key(e.reason()))?;
            }
            let mut marks = vec![self.hasher.hash(HashDomain::VerifiedToken, &sig.value)];
            if let Some(n) = &sig.nonce {
                marks.push(self.hasher.hash(
                    HashDomain::VerifiedToken,
                    format!("nonce\0{keyid}\0{n}").as_bytes(),
                ));
            }
            let until_ms = now_ms + 2 * self.hmac.policy.max_skew * 1000 + 1000;
            if !self.hmac.first_use(&marks, now_ms, until_ms) {
                return Err(with_key(Reason::Replay));
            }
            return Ok(principal);
        }
        Err(refuse(SigError::UnknownKey))
    }

    /// The HMAC key with lookup handle `handle` (cache, else store); `None` when unknown.
    async fn hmac_key(&self, handle: [u8; 32]) -> Result<Option<Arc<HmacKey>>, Refusal> {
        if let Some(k) = self.cache.hmac_key(&handle) {
            return Ok(k);
        }
        let generation = self.cache.generation();
        let row = self
            .read_store(Some(Method::Hmac), move |store| async move {
                store.find_hmac_key(&handle).await
            })
            .await?;
        let key = row.and_then(|r| {
            let secret = match httpsig::open_secret(&self.keys.sealer, &r.key_id, &r.sealed) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(credential = %r.id, error = %e, "cannot open an HMAC secret (another master key?); key refused");
                    return None;
                }
            };
            let scopes = match Scopes::parse(&r.scopes) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(credential = %r.id, error = %e, "stored scopes are invalid; key refused");
                    return None;
                }
            };
            Some(HmacKey {
                record: ApiKeyRecord {
                    id: r.id.into(),
                    subject: r.subject.into(),
                    scopes,
                    expires_at: r.expires_at,
                    revoked_at: r.revoked_at,
                    subject_disabled: r.subject_disabled,
                },
                secret,
            })
        });
        Ok(self.cache.insert_hmac_key(handle, key, generation))
    }
}
