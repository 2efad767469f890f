//! Authentication: the step every shape shares (gateway, forward-auth, the tower layer) —
//! the failed-attempt throttle, then the presented credential verified by its method's
//! verifier with material from the cache (the store on a miss), then the route's scopes —
//! and the per-route rate limits applied after it.
//!
//! One file or folder per method, each with the state it alone uses and a `verify` that
//! returns what it concluded; [`Authenticator`] holds them and picks one with a `match` over
//! the credential presented. What all of them read through (the cache, the store, the
//! throttle) is [`base::Base`].

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use keycard_core::credential::{self, Presented};
use keycard_core::digest::NonceKey;
use keycard_core::route::RoutePolicy;
use keycard_core::user::UserRecord;
use keycard_core::{KeyedHasher, MasterKey, Method, Principal, Reason, Refusal, Scopes};
use keycard_store::Store;
use tokio::sync::Semaphore;

use crate::clock::{now_millis, now_secs};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::state::cache::CredentialCache;
use crate::state::client::ClientRecord;
use crate::state::feed::FeedState;
use crate::state::keyring::{KeyState, Keyring};
use crate::upstream::client::UpstreamClient;

mod api_key;
mod base;
mod basic;
mod digest;
mod hmac;
mod jwt;
pub(crate) mod mtls;
mod oauth2;
pub(crate) mod ratelimit;
pub(crate) mod throttle;

pub(crate) use base::{MAX_USER_NAME, RequestFacts};
pub(crate) use jwt::{Issuers, JwksFileError};
pub(crate) use oauth2::check_binding;

use base::{Base, Checked};
use ratelimit::{RateLimits, Redis};
use throttle::{Throttle, Verdict};

/// The outcome of one authentication attempt.
#[derive(Debug)]
pub(crate) struct Attempt {
    /// `Ok(None)`: the route is public. `Ok(Some)`: verified and allowed.
    pub result: Result<Option<Principal>, Refusal>,
    /// Whether a bearer-style credential was presented (shapes the 401 challenge).
    pub token_presented: bool,
    /// The `Authentication-Info` value of a verified Digest request (RFC 7616 §3.5).
    pub authentication_info: Option<String>,
    /// When it was judged (Unix milliseconds; 0 on a public route): the audit event's time.
    pub at_ms: i64,
}

/// Verifies credentials against cached material. Cheap to clone: one shared allocation.
#[derive(Debug, Clone)]
pub(crate) struct Authenticator(Arc<Methods>);

/// The verifiers, one per method, and what they read through.
#[derive(Debug)]
struct Methods {
    base: Base,
    basic: basic::Basic,
    digest: digest::Digest,
    hmac: hmac::Hmac,
    mtls: mtls::Mtls,
    jwt: jwt::Jwt,
    oauth2: oauth2::OwnTokens,
    /// The routes' rate limits.
    limits: RateLimits,
}

/// How long an answer to "can the store be read" is reused (ms).
const STORE_CHECK_REUSE_MS: i64 = 250;

/// Why the authenticator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthnSetupError {
    /// The dummy password hash could not be made.
    #[error("cannot prepare password verification: {0}")]
    DummyHash(#[source] keycard_core::password::HashError),
    /// No randomness for the dummy Digest secrets.
    #[error("cannot prepare Digest verification: {0}")]
    Random(#[source] keycard_core::MasterKeyError),
    /// `limits.redis_url` cannot be used.
    #[error("cannot use limits.redis_url: {0}")]
    Redis(#[source] ratelimit::LimitError),
}

impl Authenticator {
    /// An authenticator over `store`, with the cache that the feed follower keeps honest.
    /// Store reads and password hashing run on the runtime current here (the main one),
    /// whichever worker asks. Call from within a Tokio runtime.
    pub(crate) fn new(
        master: &MasterKey,
        settings: &Settings,
        store: Store,
        cache: Arc<CredentialCache>,
        feed: Arc<FeedState>,
        issuers: Arc<Issuers>,
        jwks_client: UpstreamClient,
    ) -> Result<Self, AuthnSetupError> {
        let dummy_hash =
            keycard_core::password::dummy_hash().map_err(AuthnSetupError::DummyHash)?;
        let noise = keycard_core::random_base62(32).map_err(AuthnSetupError::Random)?;
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let redis = match &settings.redis_url {
            Some(u) => Some(Arc::new(
                Redis::new(u.as_str(), &settings.redis_prefix).map_err(AuthnSetupError::Redis)?,
            )),
            None => None,
        };
        let limits = match &redis {
            Some(r) => RateLimits::redis(r.clone(), settings.rate_limit_fail_open),
            None => RateLimits::local(),
        };
        let metrics = Arc::new(Metrics::new(
            settings
                .routes
                .iter()
                .map(|r| r.policy.prefix.to_string())
                .collect(),
        ));
        let base = Base {
            hasher: master.keyed_hasher(),
            sealer: master.sealer(),
            store,
            cache,
            feed,
            store_runtime: tokio::runtime::Handle::current(),
            realm: settings.digest.realm.as_str().into(),
            throttle: Arc::new(
                Throttle::new(settings.failed_auth)
                    .with_account_limit(settings.account_failed_auth),
            ),
            hash_permits: Semaphore::new(cores.max(2)),
            store_check: base::StoreCheck::new(),
            metrics,
            redis,
        };
        Ok(Self(Arc::new(Methods {
            basic: basic::Basic::new(dummy_hash),
            digest: digest::Digest::new(
                &settings.digest,
                NonceKey::new(master.nonce_key()),
                &noise,
            ),
            hmac: hmac::Hmac::new(&settings.hmac),
            mtls: mtls::Mtls::new(&settings.mtls.rules),
            jwt: jwt::Jwt::new(issuers, jwks_client),
            oauth2: oauth2::OwnTokens {
                keyring: Arc::new(Keyring::new(master.sealer())),
                issuer: settings.public_url.as_str().into(),
            },
            limits,
            base,
        })))
    }

    fn base(&self) -> &Base {
        &self.0.base
    }

    /// Authenticates a request against `policy`.
    pub(crate) async fn authenticate(
        &self,
        policy: &RoutePolicy,
        req: &RequestFacts<'_>,
    ) -> Attempt {
        let mut attempt = Attempt {
            result: Ok(None),
            token_presented: false,
            authentication_info: None,
            at_ms: 0,
        };
        if policy.public {
            return attempt;
        }
        let base = self.base();
        let presented = credential::presented(req.headers);
        attempt.token_presented = presented.is_token();
        let now_ms = now_millis();
        attempt.at_ms = now_ms;
        if let Verdict::Throttled { retry_after_secs } = base.throttle.check_ip(req.ip, now_ms) {
            attempt.result = Err(base.throttled(presented.method(), retry_after_secs));
            return attempt;
        }
        let Checked { result, claimed } = self.verify(policy, presented, req, now_ms).await;
        if let Err(Refusal::Unauthorized { reason, .. }) = &result
            && counts_as_failure(*reason)
        {
            base.count_failure(req.ip, claimed.as_deref(), now_ms);
            // Unknown names too: an account that ran out must look the same whether it
            // exists or not.
            if let (Reason::BadPassword | Reason::BadTotp | Reason::UnknownCredential, Some(user)) =
                (reason, claimed.as_deref())
            {
                base.count_account_failure(user, req.ip, now_ms);
            }
        }
        attempt.result = match result {
            Ok(v) => {
                attempt.authentication_info = v.authentication_info;
                self.not_disabled(v.principal)
                    .and_then(|p| check_scopes(p, &policy.scopes))
                    .map(Some)
            }
            Err(e) => Err(e),
        };
        attempt
    }

    /// Refuses a principal whose subject is disabled, whatever proved it: a certificate
    /// rule's or an external issuer's names included, which have no credential of their own
    /// to carry the state.
    fn not_disabled(&self, p: Principal) -> Result<Principal, Refusal> {
        if self.base().cache.is_disabled(p.subject()) {
            return Err(Refusal::Unauthorized {
                reason: Reason::Disabled,
                method: Some(p.method()),
                credential_id: Some(p.credential_id().to_owned()),
                subject: Some(p.subject().to_owned()),
            });
        }
        Ok(p)
    }

    /// The method's verifier for the credential `presented`.
    async fn verify(
        &self,
        policy: &RoutePolicy,
        presented: Presented<'_>,
        req: &RequestFacts<'_>,
        now_ms: i64,
    ) -> Checked {
        let m = &*self.0;
        let base = &m.base;
        if let Some(method) = presented.method()
            && !policy.methods.contains(method)
        {
            return Checked::from(Err(Refusal::unauthorized(
                Reason::MethodNotAllowed,
                Some(method),
            )));
        }
        let allowed = |method| {
            if policy.methods.contains(method) {
                Ok(())
            } else {
                Err(Refusal::unauthorized(
                    Reason::MethodNotAllowed,
                    Some(method),
                ))
            }
        };
        // Each method's future is boxed but the API key's: the future of every request
        // (moved as it is polled) is then the size of the common path, not of the largest
        // method (a password hash on the blocking pool, a JWKS fetch).
        match presented {
            Presented::Nothing => match req.cert {
                Some(cert) if policy.methods.contains(Method::Mtls) => {
                    Box::pin(m.mtls.verify(base, cert)).await.into()
                }
                _ => Checked::from(Err(Refusal::unauthorized(Reason::NoCredential, None))),
            },
            Presented::Malformed(method) => {
                Checked::from(Err(Refusal::unauthorized(Reason::Malformed, method)))
            }
            // keycard's own access tokens (`iss` is its public URL) are the `oauth2` method;
            // other JWTs come from configured external issuers.
            Presented::BearerToken(t)
                if keycard_core::jwt::looks_like_jwt(t)
                    && keycard_core::jwt::peek_issuer(t).is_ok_and(|i| *i == *m.oauth2.issuer) =>
            {
                if let Err(e) = allowed(Method::Oauth2) {
                    return Checked::from(Err(e));
                }
                let path = req.target.split('?').next().unwrap_or("/");
                Box::pin(m.oauth2.verify(base, t, path, req.cert))
                    .await
                    .into()
            }
            Presented::BearerToken(t) if keycard_core::jwt::looks_like_jwt(t) => {
                if let Err(e) = allowed(Method::Jwt) {
                    return Checked::from(Err(e));
                }
                Box::pin(m.jwt.verify(base, t, req.cert)).await.into()
            }
            Presented::BearerToken(_) => {
                Checked::from(Err(Refusal::unauthorized(Reason::UnknownCredential, None)))
            }
            Presented::ApiKey(key) => api_key::verify(base, key, now_ms).await.into(),
            Presented::Basic(token) => Box::pin(m.basic.verify(base, token, req, now_ms)).await,
            Presented::Signature { input, signature } => {
                let result = Box::pin(m.hmac.verify(base, input, signature, req, now_ms)).await;
                unread_body_refused(result.into(), req, Method::Hmac)
            }
            Presented::Digest(params) => {
                let checked = Box::pin(m.digest.verify(base, params, req, now_ms)).await;
                unread_body_refused(checked, req, Method::Digest)
            }
        }
    }

    /// Whether a credential that signs the body could verify at all, judged without the body
    /// (`req.body` is `None`): an RFC 9421 signature that verifies but for the body's digest,
    /// a Digest user behind a nonce keycard minted. Only then is the body read. Anyone else
    /// gets the refusal without holding one of the few body-reading permits (and the body
    /// left unread is marked so, [`RequestFacts::body_unread`]: no verification passes over
    /// it). `false` for a credential that signs no body.
    pub(crate) async fn may_verify(&self, req: &RequestFacts<'_>) -> bool {
        let m = &*self.0;
        let now_ms = now_millis();
        match credential::presented(req.headers) {
            Presented::Digest(params) => m.digest.may_verify(&m.base, params, now_ms).await,
            Presented::Signature { input, signature } => {
                m.hmac
                    .may_verify(&m.base, input, signature, req, now_ms)
                    .await
            }
            _ => false,
        }
    }

    /// Verifies an access token keycard issued: signature against its own keys, claims,
    /// an audience `accept` takes, not revoked, its client not revoked, its user (when it
    /// has one) not disabled.
    pub(crate) async fn verify_own_token(
        &self,
        token: &str,
        accept: impl Fn(&str) -> bool,
    ) -> Result<Arc<keycard_core::access_token::AccessToken>, Refusal> {
        self.0.oauth2.verify_token(self.base(), token, accept).await
    }

    /// Runs a store read on the main runtime with a deadline; any failure fails closed.
    pub(crate) async fn read_store<T, F, Fut>(
        &self,
        method: Option<Method>,
        read: F,
    ) -> Result<T, Refusal>
    where
        F: FnOnce(Store) -> Fut,
        Fut: std::future::Future<Output = Result<T, keycard_store::StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        self.base().read_store(method, read).await
    }

    /// The user `name` (cache, else store); `None` when there is no such user.
    pub(crate) async fn user(
        &self,
        name: &str,
        method: Option<Method>,
    ) -> Result<Option<Arc<UserRecord>>, Refusal> {
        self.base().user(name, method).await
    }

    /// The OAuth client `client_id` (cache, else store); `None` when there is no such
    /// client.
    pub(crate) async fn client(
        &self,
        client_id: &str,
    ) -> Result<Option<Arc<ClientRecord>>, Refusal> {
        self.base().client(client_id, None).await
    }

    /// Counts a failed attempt from `ip` (and of `subject` at `ip`) in the throttle.
    pub(crate) fn count_failure(&self, ip: IpAddr, subject: Option<&str>, now_ms: i64) {
        self.base().count_failure(ip, subject, now_ms);
    }

    /// Counts a failed password or one-time code for the name `subject` against its
    /// account.
    pub(crate) fn count_account_failure(&self, subject: &str, ip: IpAddr, now_ms: i64) {
        self.base().count_account_failure(subject, ip, now_ms);
    }

    /// The failed-attempt throttle.
    pub(crate) fn throttle(&self) -> &Throttle {
        &self.base().throttle
    }

    /// The keyed hasher (lookup handles of credentials).
    pub(crate) fn hasher(&self) -> &KeyedHasher {
        &self.base().hasher
    }

    /// The argon2id hash unknown users are verified against.
    pub(crate) fn dummy_password_hash(&self) -> &str {
        self.0.basic.dummy_hash()
    }

    /// Runs slow work (argon2id) on the main runtime's blocking pool, a few at a time.
    pub(crate) async fn run_slow<T, F>(&self, method: Option<Method>, work: F) -> Result<T, Refusal>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.base().run_slow(method, work).await
    }

    /// keycard's own signing keys.
    pub(crate) fn keyring(&self) -> &Arc<Keyring> {
        &self.0.oauth2.keyring
    }

    /// keycard's own published signing keys (for `/.well-known/jwks.json`).
    pub(crate) async fn published_signing_keys(
        &self,
    ) -> Result<Vec<keycard_store::SigningKeyRow>, Refusal> {
        let now = now_secs();
        self.base()
            .read_store(None, move |store| async move {
                store.published_signing_keys(now).await
            })
            .await
    }

    /// Re-reads keycard's signing keys from the store (on a timer, and when the JWKS
    /// document is asked for and stale).
    pub(crate) async fn refresh_keys(&self) -> Result<Arc<KeyState>, Refusal> {
        let rows = self.published_signing_keys().await?;
        Ok(self.keyring().rebuild(&rows))
    }

    /// Refetches JWKS URLs whose cache time has passed (on a timer).
    pub(crate) async fn refresh_jwks(&self) {
        self.0.jwt.refresh_due().await;
    }

    /// Whether the store reads its own tables within `within` (a damaged SQLite file does
    /// not). Runs on the main runtime, like every store call: a pooled connection must never
    /// belong to a worker's runtime, which ends first at shutdown. `/_keycard/ready` is open
    /// to anyone and a check opens a connection, so one check runs per
    /// [`STORE_CHECK_REUSE_MS`] at most: callers meanwhile get the last answer.
    pub(crate) async fn store_answers(&self, within: Duration) -> bool {
        let check = &self.base().store_check;
        let now = now_millis();
        let at = check.at_ms.load(Ordering::Acquire);
        if now.saturating_sub(at) < STORE_CHECK_REUSE_MS
            || check
                .at_ms
                .compare_exchange(at, now, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return check.ok.load(Ordering::Acquire);
        }
        let store = self.base().store.clone();
        let ping = self
            .base()
            .store_runtime
            .spawn(async move { store.readable().await });
        let ok = matches!(tokio::time::timeout(within, ping).await, Ok(Ok(Ok(()))));
        check.ok.store(ok, Ordering::Release);
        ok
    }

    /// The cache (for the last-used flusher).
    pub(crate) fn cache(&self) -> &Arc<CredentialCache> {
        &self.base().cache
    }

    /// Follows the throttle blocks of other instances (when Redis is configured).
    pub(crate) fn follow_throttle_blocks(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let redis = self.base().redis.clone()?;
        Some(tokio::spawn(
            redis.follow_blocks(self.base().throttle.clone(), shutdown),
        ))
    }

    /// Whether Redis answers, when it is configured (`None`: not configured).
    pub(crate) async fn redis_answers(&self) -> Option<bool> {
        match &self.base().redis {
            Some(r) => Some(r.ping().await),
            None => None,
        }
    }

    /// Applies `policy`'s rate limit to a request that passed authentication (`key`: the
    /// subject, or the client address on a public route). `Ok(None)`: no limit here.
    pub(crate) async fn rate_limit(
        &self,
        policy: &RoutePolicy,
        key: &str,
        principal: Option<&Principal>,
    ) -> Result<Option<keycard_core::rate::Decision>, Refusal> {
        let Some(limit) = &policy.rate_limit else {
            return Ok(None);
        };
        let limits = &self.0.limits;
        match limits.check(&policy.prefix, key, limit).await {
            Ok(d) if d.allowed => Ok(Some(d)),
            Ok(d) => Err(Refusal::RateLimited {
                principal: principal.cloned(),
                limit: limit.limit,
                retry_after_secs: keycard_core::rate::ceil_secs(d.retry_after_us).max(1),
                reset_secs: keycard_core::rate::ceil_secs(d.reset_us),
            }),
            Err(e) if limits.fail_open => {
                tracing::warn!(route = %policy.prefix, error = %e, "rate limit unknown; letting the request through (limits.rate_limit_fail_open)");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(route = %policy.prefix, error = %e, "rate limit unknown; refusing (fail closed)");
                Err(Refusal::Unavailable {
                    method: principal.map(Principal::method),
                })
            }
        }
    }

    /// The store.
    pub(crate) fn store(&self) -> &Store {
        &self.base().store
    }

    /// The metrics this authenticator (and everything built on it) counts into.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.base().metrics
    }

    /// Change-feed reads that failed since start.
    pub(crate) fn feed_errors(&self) -> u64 {
        self.base().feed.errors()
    }

    /// Redis operations that failed since start (0 without Redis).
    pub(crate) fn redis_errors(&self) -> u64 {
        self.base()
            .redis
            .as_ref()
            .map_or(0, |r| r.errors.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Whether cached material can be trusted now.
    pub(crate) fn feed_is_fresh(&self) -> bool {
        self.base().feed.is_fresh(now_millis())
    }

    /// Drops expired throttle windows, nonce counts and verified passwords (on a timer).
    pub(crate) fn prune(&self) {
        let m = &*self.0;
        let now = now_millis();
        m.base.throttle.prune(now);
        m.digest.prune(now);
        m.base.cache.prune_verified(now);
        m.base.cache.prune_revoked(now / 1000);
        m.hmac.prune(now);
        m.basic.sweep();
        m.limits.prune();
    }
}

/// A verification that passed for a credential signing a body keycard did not read is
/// refused: nothing checked the body it would let through.
fn unread_body_refused(checked: Checked, req: &RequestFacts<'_>, method: Method) -> Checked {
    match checked.result {
        Ok(v) if req.body_unread => Checked {
            result: Err(Refusal::Unauthorized {
                reason: Reason::Malformed,
                method: Some(method),
                credential_id: Some(v.principal.credential_id().to_owned()),
                subject: Some(v.principal.subject().to_owned()),
            }),
            claimed: checked.claimed,
        },
        _ => checked,
    }
}

/// Failures that the throttle counts: a credential was presented and was wrong. A request
/// without one (the first leg of Digest), an expired nonce (Digest's normal retry) and
/// a method the route does not take are not guesses.
fn counts_as_failure(reason: Reason) -> bool {
    !matches!(
        reason,
        Reason::NoCredential
            | Reason::StaleNonce
            | Reason::MethodNotAllowed
            | Reason::StoreUnavailable
            | Reason::TooManyFailures
    )
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

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    /// A credential over a body keycard did not read never passes, whatever its
    /// verification said; it is refused in the name of who it named.
    #[test]
    fn a_verification_over_an_unread_body_is_refused() {
        let headers = HeaderMap::new();
        let facts = |body_unread| RequestFacts {
            method: "POST",
            target: "/api/x",
            scheme: "http",
            authority: "k",
            headers: &headers,
            ip: IpAddr::from([127, 0, 0, 1]),
            body: None,
            body_unread,
            cert: None,
        };
        let verified = || {
            keycard_core::api_key::verify(
                &keycard_core::api_key::CredentialRecord {
                    id: "hmac_1".into(),
                    subject: "signer".into(),
                    scopes: Scopes::default(),
                    expires_at: None,
                    revoked_at: None,
                    subject_disabled: false,
                    identity: None,
                    principal: Default::default(),
                },
                0,
            )
        };
        assert!(
            unread_body_refused(verified().into(), &facts(false), Method::Hmac)
                .result
                .is_ok()
        );
        match unread_body_refused(verified().into(), &facts(true), Method::Digest).result {
            Err(Refusal::Unauthorized {
                reason: Reason::Malformed,
                method: Some(Method::Digest),
                subject: Some(s),
                ..
            }) => assert_eq!(s, "signer"),
            other => panic!("{other:?}"),
        }
        // A refusal stays the refusal it was.
        let refused: Checked = Err(Refusal::unauthorized(
            Reason::UnknownCredential,
            Some(Method::Hmac),
        ))
        .into();
        assert!(matches!(
            unread_body_refused(refused, &facts(true), Method::Hmac).result,
            Err(Refusal::Unauthorized {
                reason: Reason::UnknownCredential,
                ..
            })
        ));
    }
}
