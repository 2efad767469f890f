//! HTTP Digest (RFC 7616) against users' sealed HA1 values: stateless nonces checked by
//! their MAC, `stale=true` for expired ones, each (nonce, nc) accepted once, `auth-int`
//! over the request body, `userhash`, and `rspauth` in `Authentication-Info`.

use std::collections::HashMap;
use std::sync::Arc;

use keycard_core::digest::{self, HashAlg, NonceKey, NonceState, Qop};
use keycard_core::user::UserRecord;
use keycard_core::{Method, Reason, Refusal};

use super::base::{Base, Checked, RequestFacts, Verified};
use crate::config::DigestSettings;
use crate::state::cache::UserhashIndex;

mod replay;

use replay::NonceCounts;

/// The `digest` method's own state.
pub(super) struct Digest {
    settings: DigestSettings,
    nonce_key: NonceKey,
    /// The `opaque` of this server's challenges.
    opaque: String,
    /// A random HA1 per hash, for requests naming unknown users.
    dummy_ha1: [String; 3],
    /// The highest nonce count accepted per nonce (without Redis).
    nonce_counts: NonceCounts,
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Digest")
            .field("realm", &self.settings.realm)
            .finish_non_exhaustive()
    }
}

/// What the nonce of a response said.
#[derive(Debug, Clone, Copy)]
struct Nonce {
    /// Minted here but expired: the client is owed `stale=true`.
    stale: bool,
    /// When its counts may be forgotten (Unix milliseconds).
    expires_ms: i64,
}

impl Digest {
    /// `noise`: random, makes the dummy HA1 values unguessable.
    pub(super) fn new(settings: &DigestSettings, nonce_key: NonceKey, noise: &str) -> Self {
        let dummy_ha1 = HashAlg::ALL.map(|h| digest::ha1(h, "\u{0}", &settings.realm, noise));
        Digest {
            settings: settings.clone(),
            opaque: nonce_key.opaque(),
            nonce_key,
            dummy_ha1,
            nonce_counts: NonceCounts::default(),
        }
    }

    /// Forgets the counts of expired nonces (on a timer).
    pub(super) fn prune(&self, now_ms: i64) {
        self.nonce_counts.prune(now_ms);
    }

    /// Whether a Digest credential could verify, judged before the body it signs is read:
    /// this server's realm and opaque, an algorithm it takes, a nonce it minted, and a user
    /// with Digest secrets. `false` only where verification must fail. (A stale nonce
    /// passes: the client is owed `stale=true`, which needs the response checked.)
    pub(super) async fn may_verify(&self, base: &Base, params: &str, now_ms: i64) -> bool {
        let Some(r) = digest::parse(params) else {
            return false;
        };
        let ttl_ms = u64::try_from(self.settings.nonce_ttl.as_millis()).unwrap_or(u64::MAX);
        let now = u64::try_from(now_ms).unwrap_or(0);
        if !self.settings.algorithms.contains(&r.algorithm)
            || r.realm != self.settings.realm
            || r.opaque.as_deref() != Some(self.opaque.as_str())
            || self.nonce_key.check(&r.nonce, now, ttl_ms).0 == NonceState::Forged
        {
            return false;
        }
        let method = Some(Method::Digest);
        let name = if r.userhash {
            match self
                .userhash_name(base, r.algorithm.hash, &r.username, method)
                .await
            {
                Ok(Some(n)) => n.to_string(),
                _ => return false,
            }
        } else {
            r.username
        };
        matches!(base.user(&name, method).await, Ok(Some(u)) if u.digest.is_some())
    }

    /// Verifies a Digest credential; on success also the `Authentication-Info` value.
    pub(super) async fn verify(
        &self,
        base: &Base,
        params: &str,
        req: &RequestFacts<'_>,
        now_ms: i64,
    ) -> Checked {
        let method = Some(Method::Digest);
        let refuse = |reason| Checked::from(Err(Refusal::unauthorized(reason, method)));
        let Some(r) = digest::parse(params) else {
            return refuse(Reason::Malformed);
        };
        if !self.settings.algorithms.contains(&r.algorithm) {
            return refuse(Reason::Malformed);
        }
        // Realm and opaque are this server's; anything else answers someone else's challenge.
        if r.realm != self.settings.realm || r.opaque.as_deref() != Some(self.opaque.as_str()) {
            return refuse(Reason::BadNonce);
        }
        if r.uri != req.target {
            return refuse(Reason::UriMismatch);
        }
        let ttl_ms = u64::try_from(self.settings.nonce_ttl.as_millis()).unwrap_or(u64::MAX);
        let now = u64::try_from(now_ms).unwrap_or(0);
        let (state, issued) = self.nonce_key.check(&r.nonce, now, ttl_ms);
        if state == NonceState::Forged {
            return refuse(Reason::BadNonce);
        }
        if let Err(e) = base.require_fresh(method) {
            return Checked::from(Err(e));
        }
        let name = if r.userhash {
            match self
                .userhash_name(base, r.algorithm.hash, &r.username, method)
                .await
            {
                Ok(n) => n.map(|n| n.to_string()),
                Err(e) => return Checked::from(Err(e)),
            }
        } else {
            Some(r.username.clone())
        };
        // A userhash that names no Digest user is counted under itself (`:` is in no user
        // name), so that its account runs out like a real one and tells nothing.
        let claimed = name
            .clone()
            .or_else(|| r.userhash.then(|| format!("userhash:{}", r.username)));
        let nonce = Nonce {
            stale: state == NonceState::Stale,
            expires_ms: i64::try_from(issued.saturating_add(ttl_ms)).unwrap_or(i64::MAX),
        };
        let result = self
            .verify_named(
                base,
                &r,
                name.as_deref(),
                claimed.as_deref(),
                nonce,
                req,
                now_ms,
            )
            .await;
        Checked { result, claimed }
    }

    /// Verifies the response of `r`, whose user is `name` (`None`: a userhash that names
    /// nobody), counted by the throttle as `claimed`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, each argument named"
    )]
    async fn verify_named(
        &self,
        base: &Base,
        r: &digest::DigestResponse,
        name: Option<&str>,
        claimed: Option<&str>,
        nonce: Nonce,
        req: &RequestFacts<'_>,
        now_ms: i64,
    ) -> Result<Verified, Refusal> {
        let method = Some(Method::Digest);
        if let Some(n) = claimed {
            base.check_subject_throttle(n, req.ip, now_ms, method)?;
            base.check_account_throttle(n, req.ip, now_ms, method)?;
        }
        let user = match name {
            Some(n) => base.user(n, method).await?,
            None => None,
        };
        let hash = r.algorithm.hash;
        let secrets = user.as_ref().and_then(|u| u.digest.as_ref());
        let dummy = HashAlg::ALL
            .iter()
            .position(|h| *h == hash)
            .and_then(|i| self.dummy_ha1.get(i))
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
        let matches = digest::response_matches(r, ha1, facts);
        let refused = |reason, u: &UserRecord| Refusal::Unauthorized {
            reason,
            method,
            credential_id: Some(u.password_id.to_string()),
            subject: Some(u.name.to_string()),
        };
        let user = match &user {
            Some(u) if matches && secrets.is_some() => u,
            Some(u) if u.digest.is_some() => return Err(refused(Reason::BadPassword, u)),
            _ => return Err(Refusal::unauthorized(Reason::UnknownCredential, method)),
        };
        if nonce.stale {
            // Right credentials on an expired nonce: the client retries with a fresh one.
            return Err(refused(Reason::StaleNonce, user));
        }
        let fresh = match &base.redis {
            None => Ok(self
                .nonce_counts
                .accept(&r.nonce, r.nc, nonce.expires_ms, now_ms)),
            Some(redis) => {
                redis
                    .accept_nonce_count(&r.nonce, r.nc, nonce.expires_ms.saturating_sub(now_ms))
                    .await
            }
        };
        let Ok(fresh) = fresh else {
            // Replay protection cannot be promised: fail closed.
            tracing::warn!("Redis cannot be asked about a Digest nonce count; refusing");
            return Err(Refusal::Unavailable { method });
        };
        if !fresh {
            return Err(refused(Reason::Replay, user));
        }
        // With auth-int, rspauth would cover the response body, which is streamed: omitted.
        let authentication_info = match r.qop {
            Qop::Auth => digest::authentication_info(r, ha1, None),
            Qop::AuthInt => None,
        };
        Ok(Verified {
            principal: user.principal(Method::Digest)?,
            authentication_info,
        })
    }

    /// The user a `userhash` names, from an index of every Digest user's userhashes (built
    /// from the store on first use after a change). A userhash the index lacks may be a user
    /// added since the change feed was last read (by the CLI, or another instance): then
    /// keycard asks the store whether a user changed since the index was built, at most
    /// once per few milliseconds whoever asks (so a flood of unknown userhashes costs the
    /// store one small read per interval), and builds the index again only if one did.
    async fn userhash_name(
        &self,
        base: &Base,
        hash: HashAlg,
        userhash: &str,
        method: Option<Method>,
    ) -> Result<Option<Arc<str>>, Refusal> {
        let key = (hash, userhash.to_ascii_lowercase());
        let index = match base.cache.userhashes() {
            Some(i) => i,
            None => self.userhash_index(base, method).await?,
        };
        if let Some(name) = index.names.get(&key) {
            return Ok(Some(name.clone()));
        }
        if !base.cache.userhash_recheck_due(crate::clock::now_millis()) {
            return Ok(None);
        }
        let since = index.revision;
        let changed = base
            .read_store(method, |store| async move {
                store.subject_changed_since(since).await
            })
            .await?;
        if !changed {
            return Ok(None);
        }
        let index = self.userhash_index(base, method).await?;
        Ok(index.names.get(&key).cloned())
    }

    /// Builds the userhash index from the store (and keeps it, unless the cache was
    /// invalidated meanwhile).
    async fn userhash_index(
        &self,
        base: &Base,
        method: Option<Method>,
    ) -> Result<Arc<UserhashIndex>, Refusal> {
        let generation = base.cache.generation();
        let (revision, names) = base
            .read_store(method, |store| async move {
                // The revision first: a change that lands between the two reads is seen
                // again later, never missed.
                let revision = store.latest_revision().await?;
                Ok((revision, store.digest_user_names().await?))
            })
            .await?;
        let mut index = HashMap::with_capacity(names.len() * HashAlg::ALL.len());
        for name in names {
            let name: Arc<str> = name.into();
            for h in HashAlg::ALL {
                index.insert(
                    (h, digest::userhash(h, &name, &self.settings.realm)),
                    name.clone(),
                );
            }
        }
        Ok(base.cache.set_userhashes(
            UserhashIndex {
                names: index,
                revision,
            },
            generation,
        ))
    }
}
