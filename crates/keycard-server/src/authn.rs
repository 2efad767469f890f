//! The authentication step every shape shares (gateway, forward-auth, and later the tower
//! layer): find the presented credential, verify it with material from the cache (the store
//! on a miss), then check the route's scopes.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use keycard_core::api_key::{self, ApiKeyRecord};
use keycard_core::credential::{self, Presented};
use keycard_core::route::RoutePolicy;
use keycard_core::{KeyedHasher, Method, Principal, Reason, Refusal, Scopes};
use keycard_store::{ApiKeyRow, Store};

use crate::cache::{Cached, CredentialCache};
use crate::clock::{now_millis, now_secs};
use crate::feed::FeedState;

/// How long a cache miss may wait for the store before the request fails closed.
const STORE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The outcome of one authentication attempt.
#[derive(Debug)]
pub struct Attempt {
    /// `Ok(None)`: the route is public. `Ok(Some)`: verified and allowed.
    pub result: Result<Option<Principal>, Refusal>,
    /// Whether a bearer-style credential was presented (shapes the 401 challenge).
    pub token_presented: bool,
}

/// Verifies credentials against cached material.
#[derive(Debug, Clone)]
pub struct Authenticator {
    hasher: KeyedHasher,
    store: Store,
    cache: Arc<CredentialCache>,
    feed: Arc<FeedState>,
    store_runtime: tokio::runtime::Handle,
}

impl Authenticator {
    /// An authenticator over `store`, with the cache that the feed follower keeps honest.
    /// Store reads run on the runtime current here (the main one), whichever worker asks.
    /// Call from within a Tokio runtime.
    pub fn new(
        hasher: KeyedHasher,
        store: Store,
        cache: Arc<CredentialCache>,
        feed: Arc<FeedState>,
    ) -> Self {
        Self {
            hasher,
            store,
            cache,
            feed,
            store_runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Authenticates a request with `headers` against `policy`.
    pub async fn authenticate(&self, policy: &RoutePolicy, headers: &HeaderMap) -> Attempt {
        if policy.public {
            return Attempt {
                result: Ok(None),
                token_presented: false,
            };
        }
        let presented = credential::presented(headers);
        let token_presented = presented.is_token();
        let result = self
            .verify(policy, presented)
            .await
            .and_then(|p| check_scopes(p, &policy.scopes))
            .map(Some);
        Attempt {
            result,
            token_presented,
        }
    }

    async fn verify(
        &self,
        policy: &RoutePolicy,
        presented: Presented<'_>,
    ) -> Result<Principal, Refusal> {
        if let Some(m) = presented.method()
            && !policy.methods.contains(m)
        {
            return Err(Refusal::unauthorized(Reason::MethodNotAllowed, Some(m)));
        }
        match presented {
            Presented::Nothing => Err(Refusal::unauthorized(Reason::NoCredential, None)),
            Presented::Malformed(m) => Err(Refusal::unauthorized(Reason::Malformed, m)),
            // Tokens keycard issues and external JWTs are verified by later features; until
            // then a bearer token that is not an API key is unknown.
            Presented::BearerToken(_) => {
                Err(Refusal::unauthorized(Reason::UnknownCredential, None))
            }
            Presented::ApiKey(key) => self.verify_api_key(key).await,
        }
    }

    async fn verify_api_key(&self, key: &str) -> Result<Principal, Refusal> {
        let method = Some(Method::ApiKey);
        api_key::check_format(key).map_err(|r| Refusal::unauthorized(r, method))?;
        // Cached material is only as good as the feed that keeps it honest.
        if !self.feed.is_fresh(now_millis()) {
            return Err(Refusal::Unavailable { method });
        }
        let handle = api_key::lookup_handle(&self.hasher, key);
        let cached = match self.cache.api_key(&handle) {
            Some(c) => c,
            None => {
                let generation = self.cache.generation();
                let store = self.store.clone();
                let read = self
                    .store_runtime
                    .spawn(async move { store.find_api_key(&handle).await });
                let row = match tokio::time::timeout(STORE_READ_TIMEOUT, read).await {
                    Ok(Ok(Ok(row))) => row,
                    Ok(Ok(Err(e))) => {
                        tracing::warn!(error = %e, "store read failed during verification");
                        return Err(Refusal::Unavailable { method });
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "store read task failed during verification");
                        return Err(Refusal::Unavailable { method });
                    }
                    Err(_) => {
                        tracing::warn!("store read timed out during verification");
                        return Err(Refusal::Unavailable { method });
                    }
                };
                let record = row.and_then(record_from_row);
                self.cache.insert_api_key(handle, record, generation)
            }
        };
        match cached {
            Cached::Unknown => Err(Refusal::unauthorized(Reason::UnknownCredential, method)),
            Cached::Known(entry) => {
                let now = now_secs();
                let principal = api_key::verify(&entry.record, now)?;
                self.cache.mark_used(&entry, now);
                Ok(principal)
            }
        }
    }

    /// Whether the store answers within `within`. Runs on the main runtime, like every store
    /// call: a pooled connection must never belong to a worker's runtime, which ends first
    /// at shutdown.
    pub async fn store_answers(&self, within: Duration) -> bool {
        let store = self.store.clone();
        let ping = self.store_runtime.spawn(async move { store.ping().await });
        matches!(tokio::time::timeout(within, ping).await, Ok(Ok(Ok(()))))
    }

    /// The cache (for the last-used flusher).
    pub fn cache(&self) -> &Arc<CredentialCache> {
        &self.cache
    }

    /// Whether cached material can be trusted now.
    pub fn feed_is_fresh(&self) -> bool {
        self.feed.is_fresh(now_millis())
    }
}

fn check_scopes(p: Principal, required: &Scopes) -> Result<Principal, Refusal> {
    match p.scopes().first_missing(required) {
        None => Ok(p),
        Some(missing) => Err(Refusal::Forbidden {
            missing: missing.to_owned(),
            principal: p,
        }),
    }
}

fn record_from_row(r: ApiKeyRow) -> Option<ApiKeyRecord> {
    // Scopes were validated when stored; a row that no longer parses is treated as unknown.
    let scopes = match Scopes::parse(&r.scopes) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(credential = %r.id, error = %e, "stored scopes are invalid; key refused");
            return None;
        }
    };
    Some(ApiKeyRecord {
        id: r.id.into(),
        subject: r.subject.into(),
        scopes,
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
        subject_disabled: r.subject_disabled,
    })
}
