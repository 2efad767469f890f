//! What every verifier reads through: the cached material and the store behind it (read on
//! the main runtime, with a deadline, failing closed), the feed that says whether the cache
//! can be trusted, the keyed hasher, the failed-attempt throttle, and the values a verifier
//! hands back.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::time::Duration;

use http::HeaderMap;
use keycard_core::api_key::CredentialRecord;
use keycard_core::user::{DigestSecrets, UserRecord};
use keycard_core::{KeyedHasher, Method, Principal, Refusal, Scopes, Sealer};
use keycard_store::{Store, StoreError, UserRow};
use tokio::sync::Semaphore;

use super::ratelimit::Redis;
use super::throttle::{Throttle, Verdict};
use crate::clock::now_millis;
use crate::metrics::Metrics;
use crate::state::cache::{CachedUser, CredentialCache};
use crate::state::client::ClientRecord;
use crate::state::feed::FeedState;
use crate::tls::PeerCert;

/// The longest user name, in bytes: a longer one (Basic, Digest, the password grant) is
/// refused before any lookup.
pub(crate) const MAX_USER_NAME: usize = 256;

/// How long a cache miss may wait for the store before the request fails closed.
const STORE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// What the verifiers need to know about a request besides its headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestFacts<'a> {
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
    pub cert: Option<&'a PeerCert>,
}

/// A credential that verified.
#[derive(Debug)]
pub(crate) struct Verified {
    /// Who it proved.
    pub(crate) principal: Principal,
    /// The `Authentication-Info` value owed to the client (Digest's `rspauth`, RFC 7616
    /// §3.5).
    pub(crate) authentication_info: Option<String>,
}

impl From<Principal> for Verified {
    fn from(principal: Principal) -> Self {
        Verified {
            principal,
            authentication_info: None,
        }
    }
}

/// What one method's verifier concluded.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The credential verified, or why not.
    pub(crate) result: Result<Verified, Refusal>,
    /// The user name the credential claimed (Basic, Digest), read before anything was
    /// verified: a wrong password counts against that account too, known or not.
    pub(crate) claimed: Option<String>,
}

impl From<Result<Principal, Refusal>> for Checked {
    fn from(result: Result<Principal, Refusal>) -> Self {
        Checked {
            result: result.map(Verified::from),
            claimed: None,
        }
    }
}

/// The last answer to "can the store be read", and when it was asked for.
#[derive(Debug)]
pub(crate) struct StoreCheck {
    pub(super) at_ms: AtomicI64,
    pub(super) ok: AtomicBool,
}

impl StoreCheck {
    /// Before the first check: the store was just opened.
    pub(super) fn new() -> Self {
        Self {
            at_ms: AtomicI64::new(i64::MIN),
            ok: AtomicBool::new(true),
        }
    }
}

/// The material and the store every verifier reads through.
#[derive(Debug)]
pub(crate) struct Base {
    pub(crate) hasher: KeyedHasher,
    pub(crate) sealer: Sealer,
    pub(crate) store: Store,
    pub(crate) cache: Arc<CredentialCache>,
    pub(crate) feed: Arc<FeedState>,
    /// The main runtime: store reads and password hashing run there, whichever worker asks.
    pub(crate) store_runtime: tokio::runtime::Handle,
    /// `digest.realm`: a user's Digest secrets are for one realm.
    pub(crate) realm: Box<str>,
    pub(crate) throttle: Arc<Throttle>,
    /// Bounds concurrent argon2id verifications (each takes 19 MiB).
    pub(crate) hash_permits: Semaphore,
    /// `/_keycard/ready`'s last store check.
    pub(crate) store_check: StoreCheck,
    /// `/_keycard/metrics`.
    pub(crate) metrics: Arc<Metrics>,
    /// Redis (`limits.redis_url`), shared by the rate limits, the throttle and the replay
    /// caches.
    pub(crate) redis: Option<Arc<Redis>>,
}

impl Base {
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
            Some(sealed) => match DigestSecrets::open(&self.sealer, &r.name, sealed) {
                Ok(s) if s.realm() == &*self.realm => Some(s),
                Ok(s) => {
                    tracing::warn!(user = %r.name, stored_realm = s.realm(), realm = %self.realm,
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
            Some(sealed) => match keycard_core::user::open_totp_seed(&self.sealer, &r.name, sealed)
            {
                Ok(s) => Some(s),
                Err(e) => {
                    // Fail closed: a user whose second factor cannot be read cannot log in
                    // to the pages (Basic and Digest never asked for it).
                    tracing::error!(user = %r.name, error = %e, "cannot open the user's TOTP seed (another master key?)");
                    Some(keycard_core::SecretBytes::new(Vec::new()))
                }
            },
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

    /// The OAuth client `client_id` (cache, else store); `None` when there is no such
    /// client.
    pub(crate) async fn client(
        &self,
        client_id: &str,
        method: Option<Method>,
    ) -> Result<Option<Arc<ClientRecord>>, Refusal> {
        if let Some(c) = self.cache.client(client_id) {
            return Ok(c);
        }
        let generation = self.cache.generation();
        let id = client_id.to_owned();
        let row = self
            .read_store(method, |store| async move { store.find_client(&id).await })
            .await?;
        let record = row.and_then(ClientRecord::from_row);
        Ok(self.cache.insert_client(client_id, record, generation))
    }

    /// The refusal of an address or name that used up its failed attempts.
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
    /// and the client at `ip` has sent a wrong password or code for it. An address that
    /// never failed may still try: a service account's right password keeps working while
    /// others guess at it, and each guessing address gets one failure before it is refused
    /// (docs/methods.md, on the failed-attempt throttle, tells operators the trade-off).
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

    /// Counts a failed attempt from `ip` (and of `subject` at `ip`) in the throttle: here at
    /// once, and in Redis (when configured) in the background, which tells every instance
    /// once the key is spent.
    pub(crate) fn count_failure(&self, ip: IpAddr, subject: Option<&str>, now_ms: i64) {
        let names = self.throttle.record_failure(ip, subject, now_ms);
        self.count_in_redis(names, self.throttle.window(), self.throttle.limit());
    }

    /// Counts a failed password or one-time code for the name `subject` against its
    /// account (here, and in Redis when configured).
    pub(crate) fn count_account_failure(&self, subject: &str, ip: IpAddr, now_ms: i64) {
        if let Some((name, window, limit)) =
            self.throttle.record_account_failure(subject, ip, now_ms)
        {
            self.count_in_redis(vec![name], window, limit);
        }
    }

    /// Counts the failures of `names` in Redis (when configured), in the background: every
    /// instance is told once a key is spent.
    fn count_in_redis(&self, names: Vec<String>, window: i64, limit: u32) {
        let Some(redis) = &self.redis else {
            return;
        };
        let redis = redis.clone();
        self.store_runtime.spawn(async move {
            for name in names {
                if let Err(e) = redis.count_failure(&name, window, limit).await {
                    tracing::warn!(error = %e, "cannot count a failed attempt in Redis; counted here only");
                }
            }
        });
    }
}

/// The record of a stored credential (an API key, an HMAC key, a certificate binding) from
/// its row's fields; `None` (treated as unknown) when its scopes no longer parse.
pub(crate) fn stored_record(
    id: String,
    subject: String,
    scopes: &str,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    subject_disabled: bool,
) -> Option<CredentialRecord> {
    Some(CredentialRecord {
        scopes: stored_scopes(&id, scopes)?,
        id: id.into(),
        subject: subject.into(),
        expires_at,
        revoked_at,
        subject_disabled,
        identity: None,
        principal: Default::default(),
    })
}

/// A credential's stored scopes. They were validated when stored; a row that no longer
/// parses is treated as unknown (`None`), and said so in the log.
fn stored_scopes(credential: &str, scopes: &str) -> Option<Scopes> {
    match Scopes::parse(scopes) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(credential, error = %e, "stored scopes are invalid; key refused");
            None
        }
    }
}
