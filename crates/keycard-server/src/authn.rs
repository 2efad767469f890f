//! The authentication step every shape shares (gateway, forward-auth, and later the tower
//! layer): the failed-attempt throttle, then the presented credential verified with material
//! from the cache (the store on a miss), then the route's scopes.
//!
//! Basic and Digest live in `basic.rs` and `digest.rs` as further `impl Authenticator` blocks.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use keycard_core::api_key::{self, ApiKeyRecord};
use keycard_core::credential::{self, Presented};
use keycard_core::digest::{HashAlg, NonceKey};
use keycard_core::jwt::{self, JwtError};
use keycard_core::route::RoutePolicy;
use keycard_core::user::{DigestSecrets, UserRecord};
use keycard_core::{KeyedHasher, MasterKey, Method, Principal, Reason, Refusal, Scopes, Sealer};
use keycard_store::{ApiKeyRow, Store, StoreError, UserRow};
use tokio::sync::Semaphore;

use crate::cache::{Cached, CachedUser, CredentialCache, KeyLookup};
use crate::clock::{now_millis, now_secs};
use crate::config::{DigestSettings, Settings};
use crate::feed::FeedState;
use crate::jwks::{self, Issuers};
use crate::proxy::UpstreamClient;
use crate::replay::NonceCounts;
use crate::throttle::{Throttle, Verdict};

/// The longest user name, in bytes: a longer one (Basic, Digest, the password grant) is
/// refused before any lookup.
pub const MAX_USER_NAME: usize = 256;

/// How long a cache miss may wait for the store before the request fails closed.
const STORE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// What the verifiers need to know about a request besides its headers.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The request method (for forward-auth: `X-Forwarded-Method`).
    pub method: &'a str,
    /// The request-target as the client sent it (path and query), for Digest's `uri`.
    pub target: &'a str,
    /// `http` or `https` as the client used it (behind a trusted proxy: its
    /// `X-Forwarded-Proto`), for RFC 9421's `@scheme`.
    pub scheme: &'a str,
    /// The authority the client addressed (`Host`, or a trusted proxy's `X-Forwarded-Host`),
    /// for RFC 9421's `@authority`.
    pub authority: &'a str,
    /// The request headers (the credential is read from them).
    pub headers: &'a HeaderMap,
    /// The client's address (after trusted proxies), for the throttle.
    pub ip: IpAddr,
    /// The request body, read only when a credential signs it (Digest `qop=auth-int`, an
    /// RFC 9421 signature).
    pub body: Option<&'a [u8]>,
    /// The credential signs a body that was not read (it could not verify, judged without
    /// the body): a verification that passes anyway (the key appeared meanwhile) is refused,
    /// since the body it would vouch for was never checked.
    pub body_unread: bool,
    /// The client certificate: the TLS connection's, or one a trusted proxy forwarded.
    pub cert: Option<&'a crate::tls::PeerCert>,
}

/// A verification that passed for a credential signing a body keycard did not read is
/// refused: nothing checked the body it would let through.
fn unread_body_refused(
    result: Result<Principal, Refusal>,
    req: &RequestFacts<'_>,
    method: Method,
) -> Result<Principal, Refusal> {
    match result {
        Ok(p) if req.body_unread => Err(Refusal::Unauthorized {
            reason: Reason::Malformed,
            method: Some(method),
            credential_id: Some(p.credential_id().to_owned()),
            subject: Some(p.subject().to_owned()),
        }),
        other => other,
    }
}

/// The outcome of one authentication attempt.
#[derive(Debug)]
pub struct Attempt {
    /// `Ok(None)`: the route is public. `Ok(Some)`: verified and allowed.
    pub result: Result<Option<Principal>, Refusal>,
    /// Whether a bearer-style credential was presented (shapes the 401 challenge).
    pub token_presented: bool,
    /// The `Authentication-Info` value of a verified Digest request (RFC 7616 §3.5).
    pub authentication_info: Option<String>,
    /// When it was judged (Unix milliseconds; 0 on a public route): the audit event's time.
    pub at_ms: i64,
}

/// Key material for the password methods.
pub(crate) struct PasswordKeys {
    pub(crate) sealer: Sealer,
    pub(crate) nonce_key: NonceKey,
    pub(crate) opaque: String,
    /// An argon2id hash of a random password: unknown users are verified against it, so
    /// they cost the same time as known ones.
    pub(crate) dummy_hash: String,
    /// A random HA1 per hash, for Digest requests naming unknown users.
    pub(crate) dummy_ha1: [String; 3],
}

impl std::fmt::Debug for PasswordKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordKeys([redacted])")
    }
}

/// Verifies credentials against cached material.
#[derive(Debug, Clone)]
pub struct Authenticator {
    pub(crate) hasher: KeyedHasher,
    store: Store,
    pub(crate) cache: Arc<CredentialCache>,
    feed: Arc<FeedState>,
    store_runtime: tokio::runtime::Handle,
    pub(crate) keys: Arc<PasswordKeys>,
    pub(crate) digest: Arc<DigestSettings>,
    pub(crate) throttle: Arc<Throttle>,
    pub(crate) nonce_counts: Arc<NonceCounts>,
    /// Bounds concurrent argon2id verifications (each takes 19 MiB).
    hash_permits: Arc<Semaphore>,
    /// Single-flight gates for Basic verifications of the same pair.
    pub(crate) pair_gates: Arc<crate::basic::PairGates>,
    /// External JWT issuers and their keys.
    issuers: Arc<Issuers>,
    /// The HTTP client that fetches JWKS URLs (on the main runtime).
    jwks_client: UpstreamClient,
    /// RFC 9421 policy and the seen-signature memory.
    pub(crate) hmac: Arc<crate::hmac::HmacState>,
    /// keycard's own signing keys (to mint and verify its tokens).
    pub(crate) keyring: Arc<crate::own_keys::Keyring>,
    /// `server.public_url`: the `iss` of keycard's tokens.
    pub(crate) issuer: Arc<str>,
    /// `[[mtls.rules]]`.
    pub(crate) mtls_rules: Arc<[crate::mtls::Rule]>,
    /// Redis (`limits.redis_url`), shared by the rate limits and the replay caches.
    pub(crate) redis: Option<Arc<crate::ratelimit::Redis>>,
    /// The routes' rate limits.
    pub(crate) limits: Arc<crate::ratelimit::RateLimits>,
    /// `/_keycard/metrics`.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

/// Why the authenticator could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare password verification: {0}")]
pub struct AuthnSetupError(String);

impl Authenticator {
    /// An authenticator over `store`, with the cache that the feed follower keeps honest.
    /// Store reads and password hashing run on the runtime current here (the main one),
    /// whichever worker asks. Call from within a Tokio runtime.
    pub fn new(
        master: &MasterKey,
        settings: &Settings,
        store: Store,
        cache: Arc<CredentialCache>,
        feed: Arc<FeedState>,
        issuers: Arc<Issuers>,
        jwks_client: UpstreamClient,
    ) -> Result<Self, AuthnSetupError> {
        let nonce_key = NonceKey::new(master.nonce_key());
        let dummy_hash =
            keycard_core::password::dummy_hash().map_err(|e| AuthnSetupError(e.to_string()))?;
        let noise = keycard_core::random_base62(32).map_err(|e| AuthnSetupError(e.to_string()))?;
        let dummy_ha1 = HashAlg::ALL
            .map(|h| keycard_core::digest::ha1(h, "\u{0}", &settings.digest.realm, &noise));
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let redis = match &settings.redis_url {
            Some(u) => Some(Arc::new(
                crate::ratelimit::Redis::new(u.as_str(), &settings.redis_prefix)
                    .map_err(|e| AuthnSetupError(e.to_string()))?,
            )),
            None => None,
        };
        let limits = Arc::new(match &redis {
            Some(r) => {
                crate::ratelimit::RateLimits::redis(r.clone(), settings.rate_limit_fail_open)
            }
            None => crate::ratelimit::RateLimits::local(),
        });
        let metrics = Arc::new(crate::metrics::Metrics::new(
            settings
                .routes
                .iter()
                .map(|r| r.policy.prefix.to_string())
                .collect(),
        ));
        Ok(Self {
            metrics,
            redis,
            limits,
            hasher: master.keyed_hasher(),
            store,
            cache,
            feed,
            store_runtime: tokio::runtime::Handle::current(),
            keys: Arc::new(PasswordKeys {
                sealer: master.sealer(),
                opaque: nonce_key.opaque(),
                nonce_key,
                dummy_hash,
                dummy_ha1,
            }),
            digest: Arc::new(settings.digest.clone()),
            throttle: Arc::new(
                Throttle::new(settings.failed_auth)
                    .with_account_limit(settings.account_failed_auth),
            ),
            nonce_counts: Arc::new(NonceCounts::default()),
            hash_permits: Arc::new(Semaphore::new(cores.max(2))),
            hmac: Arc::new(crate::hmac::HmacState::new(&settings.hmac)),
            pair_gates: Arc::default(),
            issuers,
            jwks_client,
            keyring: Arc::new(crate::own_keys::Keyring::new(master.sealer())),
            issuer: settings.public_url.as_str().into(),
            mtls_rules: crate::mtls::Rule::load(&settings.mtls.rules).into(),
        })
    }

    /// Authenticates a request against `policy`.
    pub async fn authenticate(&self, policy: &RoutePolicy, req: &RequestFacts<'_>) -> Attempt {
        let mut attempt = Attempt {
            result: Ok(None),
            token_presented: false,
            authentication_info: None,
            at_ms: 0,
        };
        if policy.public {
            return attempt;
        }
        let presented = credential::presented(req.headers);
        attempt.token_presented = presented.is_token();
        let now_ms = now_millis();
        attempt.at_ms = now_ms;
        if let Verdict::Throttled { retry_after_secs } = self.throttle.check_ip(req.ip, now_ms) {
            attempt.result = Err(self.throttled(presented.method(), retry_after_secs));
            return attempt;
        }
        let mut claimed = None;
        let verified = self
            .verify(policy, presented, req, now_ms, &mut claimed, &mut attempt)
            .await;
        if let Err(Refusal::Unauthorized { reason, .. }) = &verified
            && counts_as_failure(*reason)
        {
            self.count_failure(req.ip, claimed.as_deref(), now_ms);
            // Unknown names too: an account that ran out must look the same whether it
            // exists or not.
            if let (Reason::BadPassword | Reason::BadTotp | Reason::UnknownCredential, Some(user)) =
                (reason, claimed.as_deref())
            {
                self.count_account_failure(user, req.ip, now_ms);
            }
        }
        attempt.result = verified
            .and_then(|p| self.not_disabled(p))
            .and_then(|p| check_scopes(p, &policy.scopes))
            .map(Some);
        attempt
    }

    /// Refuses a principal whose subject is disabled, whatever proved it: a certificate
    /// rule's or an external issuer's names included, which have no credential of their own
    /// to carry the state.
    fn not_disabled(&self, p: Principal) -> Result<Principal, Refusal> {
        if self.cache.is_disabled(p.subject()) {
            return Err(Refusal::Unauthorized {
                reason: Reason::Disabled,
                method: Some(p.method()),
                credential_id: Some(p.credential_id().to_owned()),
                subject: Some(p.subject().to_owned()),
            });
        }
        Ok(p)
    }

    async fn verify(
        &self,
        policy: &RoutePolicy,
        presented: Presented<'_>,
        req: &RequestFacts<'_>,
        now_ms: i64,
        claimed: &mut Option<String>,
        attempt: &mut Attempt,
    ) -> Result<Principal, Refusal> {
        if let Some(m) = presented.method()
            && !policy.methods.contains(m)
        {
            return Err(Refusal::unauthorized(Reason::MethodNotAllowed, Some(m)));
        }
        // Each method's future is boxed but the API key's: the future of every request
        // (moved as it is polled) is then the size of the common path, not of the largest
        // method (a password hash on the blocking pool, a JWKS fetch).
        match presented {
            Presented::Nothing => match req.cert {
                Some(cert) if policy.methods.contains(Method::Mtls) => {
                    Box::pin(self.verify_mtls(cert)).await
                }
                _ => Err(Refusal::unauthorized(Reason::NoCredential, None)),
            },
            Presented::Malformed(m) => Err(Refusal::unauthorized(Reason::Malformed, m)),
            // keycard's own access tokens (`iss` is its public URL) are the `oauth2` method;
            // other JWTs come from configured external issuers.
            Presented::BearerToken(t)
                if jwt::looks_like_jwt(t)
                    && jwt::peek_issuer(t).is_ok_and(|i| *i == *self.issuer) =>
            {
                if !policy.methods.contains(Method::Oauth2) {
                    return Err(Refusal::unauthorized(
                        Reason::MethodNotAllowed,
                        Some(Method::Oauth2),
                    ));
                }
                let path = req.target.split('?').next().unwrap_or("/");
                Box::pin(self.verify_oauth2(t, path, req.cert)).await
            }
            Presented::BearerToken(t) if jwt::looks_like_jwt(t) => {
                if !policy.methods.contains(Method::Jwt) {
                    return Err(Refusal::unauthorized(
                        Reason::MethodNotAllowed,
                        Some(Method::Jwt),
                    ));
                }
                Box::pin(self.verify_jwt(t, req.cert)).await
            }
            Presented::BearerToken(_) => {
                Err(Refusal::unauthorized(Reason::UnknownCredential, None))
            }
            Presented::ApiKey(key) => self.verify_api_key(key, now_ms).await,
            Presented::Basic(token) => {
                Box::pin(self.verify_basic(token, req, now_ms, claimed)).await
            }
            Presented::Signature { input, signature } => {
                let result = Box::pin(self.verify_signature(input, signature, req, now_ms)).await;
                unread_body_refused(result, req, Method::Hmac)
            }
            Presented::Digest(params) => {
                let (result, info) =
                    Box::pin(self.verify_digest(params, req, now_ms, claimed)).await;
                let result = unread_body_refused(result, req, Method::Digest);
                if result.is_ok() {
                    attempt.authentication_info = info;
                }
                result
            }
        }
    }

    pub(crate) fn throttled(&self, method: Option<Method>, retry_after_secs: u64) -> Refusal {
        Refusal::Throttled {
            method,
            subject: None,
            limit: self.throttle.limit(),
            retry_after_secs,
            account: false,
        }
    }

    /// Refuses a password attempt for `subject` when its account has used up its failures
    /// and the client at `ip` has sent a wrong password or code for it. An address that never failed may still try:
    /// a service account's right password keeps working while others guess at it, and each
    /// guessing address gets one failure before it is refused (docs/methods.md, on the
    /// failed-attempt throttle, tells operators the trade-off).
    pub(crate) fn check_account_throttle(
        &self,
        subject: &str,
        ip: IpAddr,
        now_ms: i64,
        method: Option<Method>,
    ) -> Result<(), Refusal> {
        match self.throttle.check_account(subject, now_ms) {
            Verdict::Throttled { retry_after_secs }
                if self.throttle.has_failed_as(subject, ip, now_ms) =>
            {
                Err(Refusal::Throttled {
                    method,
                    subject: Some(subject.to_owned()),
                    limit: self.throttle.limit(),
                    retry_after_secs,
                    account: true,
                })
            }
            _ => Ok(()),
        }
    }

    /// Refuses when `subject` at `ip` has used up its failed attempts.
    pub(crate) fn check_subject_throttle(
        &self,
        subject: &str,
        ip: IpAddr,
        now_ms: i64,
        method: Option<Method>,
    ) -> Result<(), Refusal> {
        match self.throttle.check_subject(subject, ip, now_ms) {
            Verdict::Allow => Ok(()),
            Verdict::Throttled { retry_after_secs } => {
                Err(self.throttled(method, retry_after_secs))
            }
        }
    }

    /// Cached material is only as good as the feed that keeps it honest.
    pub(crate) fn require_fresh(&self, method: Option<Method>) -> Result<(), Refusal> {
        if self.feed.is_fresh(now_millis()) {
            Ok(())
        } else {
            Err(Refusal::Unavailable { method })
        }
    }

    /// Runs a store read on the main runtime with a deadline; any failure fails closed.
    pub(crate) async fn read_store<T, F, Fut>(
        &self,
        method: Option<Method>,
        read: F,
    ) -> Result<T, Refusal>
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let task = self.store_runtime.spawn(read(self.store.clone()));
        match tokio::time::timeout(STORE_READ_TIMEOUT, task).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => {
                self.metrics.store_error();
                tracing::warn!(error = %e, "store read failed during verification");
                Err(Refusal::Unavailable { method })
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "store read task failed during verification");
                Err(Refusal::Unavailable { method })
            }
            Err(_) => {
                self.metrics.store_error();
                tracing::warn!("store read timed out during verification");
                Err(Refusal::Unavailable { method })
            }
        }
    }

    /// Runs slow work (argon2id) on the main runtime's blocking pool, a few at a time.
    pub(crate) async fn run_slow<T, F>(&self, method: Option<Method>, work: F) -> Result<T, Refusal>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let Ok(_permit) = self.hash_permits.acquire().await else {
            return Err(Refusal::Unavailable { method });
        };
        self.store_runtime
            .spawn_blocking(work)
            .await
            .map_err(|_| Refusal::Unavailable { method })
    }

    /// The user `name` (cache, else store); `None` when there is no such user.
    pub(crate) async fn user(
        &self,
        name: &str,
        method: Option<Method>,
    ) -> Result<Option<Arc<UserRecord>>, Refusal> {
        // No such user can exist (`check_subject`): not worth a cache entry or a store read.
        if name.len() > MAX_USER_NAME {
            return Ok(None);
        }
        match self.cache.user(name) {
            Some(CachedUser::Known(u)) => return Ok(Some(u)),
            Some(CachedUser::Unknown) => return Ok(None),
            None => {}
        }
        let generation = self.cache.generation();
        let owned = name.to_owned();
        let row = self
            .read_store(method, |store| async move { store.find_user(&owned).await })
            .await?;
        let record = row.and_then(|r| self.user_record(r));
        Ok(match self.cache.insert_user(name, record, generation) {
            CachedUser::Known(u) => Some(u),
            CachedUser::Unknown => None,
        })
    }

    fn user_record(&self, r: UserRow) -> Option<UserRecord> {
        let scopes = match Scopes::parse(&r.scopes) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(user = %r.name, error = %e, "stored scopes are invalid; user refused");
                return None;
            }
        };
        let digest = match r.digest_sealed.as_deref() {
            None => None,
            Some(sealed) => match DigestSecrets::open(&self.keys.sealer, &r.name, sealed) {
                Ok(s) if s.realm() == self.digest.realm => Some(s),
                Ok(s) => {
                    tracing::warn!(user = %r.name, stored_realm = s.realm(), realm = %self.digest.realm,
                        "the user's Digest hash is for another realm; set the password again to use Digest");
                    None
                }
                Err(e) => {
                    tracing::error!(user = %r.name, error = %e, "cannot open the user's Digest hash (another master key?)");
                    None
                }
            },
        };
        let totp_seed = match r.totp_sealed.as_deref() {
            None => None,
            Some(sealed) => {
                match keycard_core::user::open_totp_seed(&self.keys.sealer, &r.name, sealed) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        // Fail closed: a user whose second factor cannot be read cannot log in
                        // to the pages (Basic and Digest never asked for it).
                        tracing::error!(user = %r.name, error = %e, "cannot open the user's TOTP seed (another master key?)");
                        Some(keycard_core::SecretBytes::new(Vec::new()))
                    }
                }
            }
        };
        Some(UserRecord {
            totp_seed,
            totp_sealed: r.totp_sealed.as_deref().map(Arc::from),
            name: r.name.into(),
            password_id: r.password_id.into(),
            password_hash: r.password_hash,
            scopes,
            disabled: r.disabled_at.is_some(),
            digest,
        })
    }

    async fn verify_jwt(
        &self,
        token: &str,
        cert: Option<&crate::tls::PeerCert>,
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
                let (i, client) = (issuer.clone(), self.jwks_client.clone());
                let _ = self
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

    /// keycard's own published signing keys (for `/.well-known/jwks.json`).
    pub(crate) async fn published_signing_keys(
        &self,
    ) -> Result<Vec<keycard_store::SigningKeyRow>, Refusal> {
        let now = now_secs();
        self.read_store(None, move |store| async move {
            store.published_signing_keys(now).await
        })
        .await
    }

    /// Re-reads keycard's signing keys from the store (on a timer, and when the JWKS
    /// document is asked for and stale).
    pub async fn refresh_keys(&self) -> Result<Arc<crate::own_keys::KeyState>, Refusal> {
        let rows = self.published_signing_keys().await?;
        Ok(self.keyring.rebuild(&rows))
    }

    /// Refetches JWKS URLs whose cache time has passed (on a timer).
    pub async fn refresh_jwks(&self) {
        if !self.issuers.is_empty() {
            self.issuers.refresh_due(&self.jwks_client).await;
        }
    }

    async fn verify_api_key(&self, key: &str, now_ms: i64) -> Result<Principal, Refusal> {
        let method = Some(Method::ApiKey);
        let now = now_ms.div_euclid(1000);
        let malformed = |r| Refusal::unauthorized(r, method);
        // Length and prefix first: nothing else is hashed.
        api_key::check_shape(key).map_err(malformed)?;
        let handle = api_key::lookup_handle(&self.hasher, key);
        // Fails closed (503) when the cache may be stale (judged at the request's time, read
        // once); a use is noted only when it passes.
        let verify = |record: &ApiKeyRecord| {
            if !self.feed.is_fresh(now_ms) {
                return Err(Refusal::Unavailable { method });
            }
            api_key::verify(record, now)
        };
        match self.cache.api_key_local(&handle, now, verify) {
            // A cached key was issued by keycard, so its checksum holds: checked only on the
            // way to the store, which a mistyped or truncated key never reaches.
            KeyLookup::Known(verdict) => verdict,
            KeyLookup::Unknown => {
                self.require_fresh(method)?;
                Err(Refusal::unauthorized(Reason::UnknownCredential, method))
            }
            KeyLookup::Miss => {
                api_key::check_format(key).map_err(malformed)?;
                self.require_fresh(method)?;
                let generation = self.cache.generation();
                let row = self
                    .read_store(
                        method,
                        |store| async move { store.find_api_key(&handle).await },
                    )
                    .await?;
                let record = row.and_then(record_from_row);
                match self.cache.insert_api_key(handle, record, generation) {
                    Cached::Known(entry) => self.cache.verify_entry(&entry, now, verify),
                    Cached::Unknown => {
                        Err(Refusal::unauthorized(Reason::UnknownCredential, method))
                    }
                }
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

    /// Counts a failed attempt in the throttle: here at once, and in Redis (when
    /// configured) in the background, which tells every instance once the key is spent.
    /// Counts a failed password or one-time code for the name `subject` against its
    /// account (here, and in Redis when configured).
    pub(crate) fn count_account_failure(&self, subject: &str, ip: IpAddr, now_ms: i64) {
        let Some((name, window, limit)) = self.throttle.record_account_failure(subject, ip, now_ms)
        else {
            return;
        };
        if let Some(redis) = &self.redis {
            let redis = redis.clone();
            self.store_runtime.spawn(async move {
                if let Err(e) = redis.count_failure(&name, window, limit).await {
                    tracing::warn!(error = %e, "cannot count a failed attempt in Redis; counted here only");
                }
            });
        }
    }

    pub(crate) fn count_failure(&self, ip: IpAddr, subject: Option<&str>, now_ms: i64) {
        let names = self.throttle.record_failure(ip, subject, now_ms);
        if let Some(redis) = &self.redis {
            let (redis, window, limit) =
                (redis.clone(), self.throttle.window(), self.throttle.limit());
            self.store_runtime.spawn(async move {
                for name in names {
                    if let Err(e) = redis.count_failure(&name, window, limit).await {
                        tracing::warn!(error = %e, "cannot count a failed attempt in Redis; counted here only");
                    }
                }
            });
        }
    }

    /// Follows the throttle blocks of other instances (when Redis is configured).
    pub fn follow_throttle_blocks(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let redis = self.redis.clone()?;
        Some(tokio::spawn(
            redis.follow_blocks(self.throttle.clone(), shutdown),
        ))
    }

    /// Whether Redis answers, when it is configured (`None`: not configured).
    pub async fn redis_answers(&self) -> Option<bool> {
        match &self.redis {
            Some(r) => Some(r.ping().await),
            None => None,
        }
    }

    /// Applies `policy`'s rate limit to a request that passed authentication (`key`: the
    /// subject, or the client address on a public route). `Ok(None)`: no limit here.
    pub async fn rate_limit(
        &self,
        policy: &RoutePolicy,
        key: &str,
        principal: Option<&Principal>,
    ) -> Result<Option<keycard_core::rate::Decision>, Refusal> {
        let Some(limit) = &policy.rate_limit else {
            return Ok(None);
        };
        match self.limits.check(&policy.prefix, key, limit).await {
            Ok(d) if d.allowed => Ok(Some(d)),
            Ok(d) => Err(Refusal::RateLimited {
                principal: principal.cloned(),
                limit: limit.limit,
                retry_after_secs: keycard_core::rate::ceil_secs(d.retry_after_us).max(1),
                reset_secs: keycard_core::rate::ceil_secs(d.reset_us),
            }),
            Err(e) if self.limits.fail_open => {
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
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The metrics this authenticator (and everything built on it) counts into.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// Change-feed reads that failed since start.
    pub fn feed_errors(&self) -> u64 {
        self.feed.errors()
    }

    /// Redis operations that failed since start (0 without Redis).
    pub fn redis_errors(&self) -> u64 {
        self.redis
            .as_ref()
            .map_or(0, |r| r.errors.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Whether cached material can be trusted now.
    pub fn feed_is_fresh(&self) -> bool {
        self.feed.is_fresh(now_millis())
    }

    /// Drops expired throttle windows, nonce counts and verified passwords (on a timer).
    pub fn prune(&self) {
        let now = now_millis();
        self.throttle.prune(now);
        self.nonce_counts.prune(now);
        self.cache.prune_verified(now);
        self.cache.prune_revoked(now / 1000);
        self.hmac.prune(now);
        self.pair_gates.sweep();
        self.limits.prune();
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

/// A credential's stored scopes. They were validated when stored; a row that no longer
/// parses is treated as unknown (`None`), and said so in the log.
pub(crate) fn stored_scopes(credential: &str, scopes: &str) -> Option<Scopes> {
    match Scopes::parse(scopes) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(credential, error = %e, "stored scopes are invalid; key refused");
            None
        }
    }
}

fn record_from_row(r: ApiKeyRow) -> Option<ApiKeyRecord> {
    let scopes = stored_scopes(&r.id, &r.scopes)?;
    Some(ApiKeyRecord {
        id: r.id.into(),
        subject: r.subject.into(),
        scopes,
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
        subject_disabled: r.subject_disabled,
        identity: None,
        principal: Default::default(),
    })
}

#[cfg(test)]
mod tests {
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
                &keycard_core::api_key::ApiKeyRecord {
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
        assert!(unread_body_refused(verified(), &facts(false), Method::Hmac).is_ok());
        match unread_body_refused(verified(), &facts(true), Method::Digest) {
            Err(Refusal::Unauthorized {
                reason: Reason::Malformed,
                method: Some(Method::Digest),
                subject: Some(s),
                ..
            }) => assert_eq!(s, "signer"),
            other => panic!("{other:?}"),
        }
        // A refusal stays the refusal it was.
        let refused = Err(Refusal::unauthorized(
            Reason::UnknownCredential,
            Some(Method::Hmac),
        ));
        assert!(matches!(
            unread_body_refused(refused, &facts(true), Method::Hmac),
            Err(Refusal::Unauthorized {
                reason: Reason::UnknownCredential,
                ..
            })
        ));
    }
}
