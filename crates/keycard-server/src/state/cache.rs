//! Verification material cached in memory, so the request path touches no disk: positive
//! and negative entries keyed by the credential's lookup handle, dropped by the change feed.
//!
//! A store read races with invalidation: a read that started before a change could insert
//! stale material after the change was applied. Every invalidation bumps a generation, and
//! an entry is inserted only if the generation did not move while it was read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use keycard_core::access_token::AccessToken;
use keycard_core::api_key::CredentialRecord;
use keycard_core::digest::HashAlg;
use keycard_core::user::UserRecord;

use crate::shard::Striped;
use crate::state::client::ClientRecord;

/// How many entries before the cache starts over (bounds memory under a flood of unknown keys).
const MAX_ENTRIES: usize = 200_000;
/// `last_used_at` is recorded at most this often per credential.
const LAST_USED_EVERY_SECS: i64 = 60;

/// A cached API key.
#[derive(Debug)]
pub(crate) struct KeyEntry {
    /// What the verifier needs.
    pub record: CredentialRecord,
    last_used: AtomicI64,
}

/// A cache answer.
#[derive(Debug, Clone)]
pub(crate) enum Cached {
    /// The key exists.
    Known(Arc<KeyEntry>),
    /// The store had no such key.
    Unknown,
}

/// A cached user.
#[derive(Debug, Clone)]
pub(crate) enum CachedUser {
    /// The user exists.
    Known(Arc<UserRecord>),
    /// The store had no such user.
    Unknown,
}

/// A (user, password) pair that argon2id verified, remembered under its keyed hash.
#[derive(Debug, Clone)]
struct VerifiedPair {
    user: Arc<UserRecord>,
    until_ms: i64,
}

/// userhash (per hash function) → user name, for Digest clients that send `userhash=true`,
/// as the store had them at `revision`.
#[derive(Debug, Default)]
pub(crate) struct UserhashIndex {
    pub(crate) names: HashMap<(HashAlg, String), Arc<str>>,
    /// The store's revision read before the names were.
    pub(crate) revision: i64,
}

/// How often, at most, a userhash the index does not know makes keycard ask the store
/// whether the index is behind.
const USERHASH_RECHECK_MS: i64 = 10;

/// A map keyed by handles: the keyed hashes ([`keycard_core::KeyedHasher`]) secrets are
/// looked up by. A handle is uniformly distributed and cannot be chosen by whoever picks the
/// secret (the hash key is keycard's), so its first eight bytes serve as the map's hash:
/// SipHash's flooding defence would only cost a few hundred instructions per request.
type HandleMap<V> = HashMap<[u8; 32], V, std::hash::BuildHasherDefault<HandleHasher>>;

/// The hasher of [`HandleMap`]: XORs in the first eight bytes of each write (the length
/// prefix of a `[u8; 32]` is the same for every key, so it changes no comparison).
#[derive(Debug, Default)]
struct HandleHasher(u64);

impl std::hash::Hasher for HandleHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    #[expect(
        clippy::indexing_slicing,
        reason = "n is at most 8 and at most bytes.len(): both slices are in bounds"
    )]
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(word);
    }
}

/// The credential cache.
#[derive(Debug, Default)]
pub(crate) struct CredentialCache {
    api_keys: RwLock<HandleMap<Cached>>,
    /// Users by keyed hash of the name ([`NameKeys`]), with when the entry lapses.
    users: RwLock<HashMap<u128, (CachedUser, i64)>>,
    verified: RwLock<HandleMap<VerifiedPair>>,
    userhashes: RwLock<Option<Arc<UserhashIndex>>>,
    /// When a userhash missing from the index last made keycard ask the store (ms).
    userhash_checked_ms: AtomicI64,
    generation: AtomicU64,
    pending_last_used: Mutex<Vec<(String, i64)>>,
    /// OAuth clients by keyed hash of the `client_id` (`None`: the store has no such
    /// client), with when the entry lapses.
    clients: RwLock<HashMap<u128, ClientEntry>>,
    /// Keys the names above: a client's choice of names cannot aim at a bucket, and an
    /// entry is as small whatever the name's length.
    names: NameKeys,
    /// Access tokens revoked before expiry: `jti` → `exp`. Not a cache: the feed adds to it
    /// and [`CredentialCache::replace_revoked`] reloads it whole; `clear` leaves it.
    revoked: RwLock<HashMap<Box<str>, i64>>,
    /// keycard's access tokens whose signature and claims were verified, by keyed hash of
    /// the token, until their `exp`: a token presented again costs an HMAC, not a signature
    /// check. Revocation, client and user are checked on every use all the same.
    verified_tokens: RwLock<HandleMap<Arc<AccessToken>>>,
    /// HMAC signing keys by keyed hash of their `keyid` (`None`: no such key).
    hmac_keys: RwLock<HandleMap<Option<Arc<HmacKey>>>>,
    /// Hits and misses per cache, for `/_keycard/metrics`.
    stats: CacheStats,
    /// Tells this cache's entries in a thread's [`LocalKeys`] from another's.
    id: CacheId,
    /// Bumped whenever a client may have changed (the feed named one, or the cache was
    /// cleared): what is derived from every client is read again.
    clients_changed: AtomicU64,
    /// Bumped whenever a subject may have changed: the disabled set is read again.
    subjects_changed: AtomicU64,
    /// Every disabled subject name, whatever made it (a user, a service, a name that only a
    /// certificate rule or an external issuer gives): checked on every principal.
    disabled: RwLock<std::collections::HashSet<Box<str>>>,
    /// How many names `disabled` holds: zero, the common case, skips its lock.
    disabled_count: std::sync::atomic::AtomicUsize,
}

/// A cached client (`None`: no such client) and when the entry lapses.
type ClientEntry = (Option<Arc<ClientRecord>>, i64);

/// How long "no such user" or "no such client" is remembered. The change feed drops such an
/// entry when the name is created; this bounds how long a name a client made up is kept.
const NEGATIVE_TTL_MS: i64 = 60_000;

/// A keyed 128-bit hash of a name that a client chose (two SipHash keys, random per
/// process). A known entry is also checked against the name it holds.
#[derive(Debug, Default)]
struct NameKeys(std::hash::RandomState, std::hash::RandomState);

impl NameKeys {
    fn of(&self, name: &str) -> u128 {
        use std::hash::BuildHasher;
        (u128::from(self.0.hash_one(name)) << 64) | u128::from(self.1.hash_one(name))
    }
}

/// When an entry lapses: never for a known one, soon for a negative one.
fn lapses(known: bool) -> i64 {
    if known {
        i64::MAX
    } else {
        crate::clock::now_millis().saturating_add(NEGATIVE_TTL_MS)
    }
}

/// A process-unique number per cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheId(u64);

impl Default for CacheId {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Entries per thread in its copy of the API-key cache; beyond it the copy starts over.
const LOCAL_MAX: usize = 4096;

/// A thread's copy of the API keys it verified: a hit reads memory only this thread writes —
/// no lock word, no reference count shared with the other workers (each costing a cache
/// line's trip between cores per request). Valid for one cache at one generation: any
/// invalidation empties every thread's copy at its next lookup.
#[derive(Default)]
struct LocalKeys {
    cache: Option<CacheId>,
    generation: u64,
    entries: HandleMap<LocalKey>,
}

struct LocalKey {
    /// Its own allocations ([`CredentialRecord::detached`]).
    record: CredentialRecord,
    /// The shared entry, for its `last_used` (read-mostly).
    shared: Arc<KeyEntry>,
}

thread_local! {
    static LOCAL_KEYS: std::cell::RefCell<LocalKeys> = std::cell::RefCell::new(LocalKeys::default());
}

/// What the cache knows of an API key.
#[derive(Debug)]
pub(crate) enum KeyLookup<T> {
    /// Not cached: the store must be asked.
    Miss,
    /// The store had no such key.
    Unknown,
    /// The key exists: what the verifier made of its record.
    Known(T),
}

/// The caches whose hit ratio is reported (the `cache` label).
#[derive(Debug, Clone, Copy)]
enum Kind {
    ApiKey,
    User,
    VerifiedPassword,
    HmacKey,
    Client,
    VerifiedToken,
}

const KINDS: [(Kind, &str); 6] = [
    (Kind::ApiKey, "api_key"),
    (Kind::User, "user"),
    (Kind::VerifiedPassword, "verified_password"),
    (Kind::HmacKey, "hmac_key"),
    (Kind::Client, "client"),
    (Kind::VerifiedToken, "verified_token"),
];

/// Hits and misses per cache (`[kind][hit, miss]`), each thread counting in its own shard.
#[derive(Debug)]
struct CacheStats(Striped);

impl Default for CacheStats {
    fn default() -> Self {
        Self(Striped::new(KINDS.len() * 2))
    }
}

impl CacheStats {
    fn count<T>(&self, kind: Kind, found: Option<T>) -> Option<T> {
        self.0
            .add(kind as usize * 2 + usize::from(found.is_none()), 1);
        found
    }

    fn hits(&self, kind: Kind) -> u64 {
        self.0.get(kind as usize * 2)
    }

    fn misses(&self, kind: Kind) -> u64 {
        self.0.get(kind as usize * 2 + 1)
    }
}

/// A cached HMAC signing key: the record the state checks need, and the opened secret.
#[derive(Debug)]
pub(crate) struct HmacKey {
    /// Id, subject, scopes, expiry, revocation, disabled subject.
    pub record: CredentialRecord,
    /// What signatures are verified with.
    pub key: KeyMaterial,
}

/// An RFC 9421 key's material.
#[derive(Debug)]
pub(crate) enum KeyMaterial {
    /// A shared secret, ready for HMAC (`hmac-sha256`).
    Hmac(Box<keycard_core::httpsig::SharedKey>),
    /// A registered Ed25519 public key (`ed25519`).
    Ed25519([u8; 32]),
}

impl KeyMaterial {
    /// The key as the verifier takes it.
    pub(crate) fn verifying_key(&self) -> keycard_core::httpsig::VerifyingKey<'_> {
        match self {
            KeyMaterial::Hmac(k) => keycard_core::httpsig::VerifyingKey::Hmac(k),
            KeyMaterial::Ed25519(pk) => keycard_core::httpsig::VerifyingKey::Ed25519(pk),
        }
    }
}

impl CredentialCache {
    /// A number that changes whenever a subject may have changed.
    pub(crate) fn subjects_changed(&self) -> u64 {
        self.subjects_changed.load(Ordering::Acquire)
    }

    /// Whether `subject` is disabled.
    pub(crate) fn is_disabled(&self, subject: &str) -> bool {
        self.disabled_count.load(Ordering::Acquire) != 0
            && self
                .disabled
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(subject)
    }

    /// Replaces the disabled set.
    pub(crate) fn set_disabled(&self, names: std::collections::HashSet<Box<str>>) {
        let mut set = self
            .disabled
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.disabled_count.store(names.len(), Ordering::Release);
        *set = names;
    }

    /// A number that changes whenever a client may have changed.
    pub(crate) fn clients_changed(&self) -> u64 {
        self.clients_changed.load(Ordering::Acquire)
    }

    /// The current generation; pass it back to [`CredentialCache::insert_api_key`].
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A cached answer for `handle`.
    pub(crate) fn api_key(&self, handle: &[u8; 32]) -> Option<Cached> {
        let found = self.api_keys.read().ok()?.get(handle).cloned();
        self.stats.count(Kind::ApiKey, found)
    }

    /// `(cache, hits, misses)` per cache since start.
    pub(crate) fn hit_counts(&self) -> Vec<(&'static str, u64, u64)> {
        KINDS
            .iter()
            .map(|(k, name)| (*name, self.stats.hits(*k), self.stats.misses(*k)))
            .collect()
    }

    /// Runs `verify` on the cached record of `handle` — this thread's own copy when it has
    /// one — and notes a use at `now` when it passes.
    pub(crate) fn api_key_local<T, E>(
        &self,
        handle: &[u8; 32],
        now: i64,
        verify: impl FnOnce(&CredentialRecord) -> Result<T, E>,
    ) -> KeyLookup<Result<T, E>> {
        let generation = self.generation();
        let mut verify = Some(verify);
        let hit = LOCAL_KEYS.with_borrow_mut(|local| {
            if local.cache != Some(self.id) || local.generation != generation {
                local.entries.clear();
                local.cache = Some(self.id);
                local.generation = generation;
            }
            let e = local.entries.get(handle)?;
            let verdict = verify.take()?(&e.record);
            if verdict.is_ok() {
                self.mark_used(&e.shared, now);
            }
            Some(verdict)
        });
        if let Some(verdict) = hit {
            self.stats.count(Kind::ApiKey, Some(()));
            return KeyLookup::Known(verdict);
        }
        let (Some(verify), Some(cached)) = (verify, self.api_key(handle)) else {
            return KeyLookup::Miss;
        };
        let Cached::Known(shared) = cached else {
            return KeyLookup::Unknown;
        };
        let verdict = self.verify_entry(&shared, now, verify);
        let record = shared.record.detached();
        LOCAL_KEYS.with_borrow_mut(|local| {
            // Tagged with the generation read before the shared lookup: had an invalidation
            // come between, the copy goes at the next lookup.
            if local.cache == Some(self.id) && local.generation == generation {
                if local.entries.len() >= LOCAL_MAX {
                    local.entries.clear();
                }
                local.entries.insert(*handle, LocalKey { record, shared });
            }
        });
        KeyLookup::Known(verdict)
    }

    /// Runs `verify` on a shared entry's record and notes a use at `now` when it passes.
    pub(crate) fn verify_entry<T, E>(
        &self,
        entry: &KeyEntry,
        now: i64,
        verify: impl FnOnce(&CredentialRecord) -> Result<T, E>,
    ) -> Result<T, E> {
        let verdict = verify(&entry.record);
        if verdict.is_ok() {
            self.mark_used(entry, now);
        }
        verdict
    }

    /// Caches what the store said, unless an invalidation happened since `generation`.
    pub(crate) fn insert_api_key(
        &self,
        handle: [u8; 32],
        record: Option<CredentialRecord>,
        generation: u64,
    ) -> Cached {
        let value = match record {
            Some(record) => Cached::Known(Arc::new(KeyEntry {
                record,
                last_used: AtomicI64::new(0),
            })),
            None => Cached::Unknown,
        };
        if let Ok(mut map) = self.api_keys.write() {
            // Checked under the write lock: invalidations also take it.
            if self.generation.load(Ordering::Acquire) == generation {
                if map.len() >= MAX_ENTRIES {
                    map.clear();
                }
                map.insert(handle, value.clone());
            }
        }
        value
    }

    /// A cached answer for user `name`.
    pub(crate) fn user(&self, name: &str) -> Option<CachedUser> {
        let found = self
            .users
            .read()
            .ok()?
            .get(&self.names.of(name))
            .filter(|(u, until)| match u {
                CachedUser::Known(u) => &*u.name == name,
                CachedUser::Unknown => *until > crate::clock::now_millis(),
            })
            .map(|(u, _)| u.clone());
        self.stats.count(Kind::User, found)
    }

    /// Caches what the store said about user `name`, unless an invalidation happened since
    /// `generation`.
    pub(crate) fn insert_user(
        &self,
        name: &str,
        record: Option<UserRecord>,
        generation: u64,
    ) -> CachedUser {
        let value = match record {
            Some(r) => CachedUser::Known(Arc::new(r)),
            None => CachedUser::Unknown,
        };
        if let Ok(mut map) = self.users.write()
            && self.generation.load(Ordering::Acquire) == generation
        {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            let until = lapses(matches!(value, CachedUser::Known(_)));
            map.insert(self.names.of(name), (value.clone(), until));
        }
        value
    }

    /// The user a recently verified (user, password) pair belongs to.
    pub(crate) fn verified_pair(&self, pair: &[u8; 32], now_ms: i64) -> Option<Arc<UserRecord>> {
        let map = self.verified.read().ok()?;
        let found = map
            .get(pair)
            .filter(|v| v.until_ms > now_ms)
            .map(|v| v.user.clone());
        self.stats.count(Kind::VerifiedPassword, found)
    }

    /// Remembers a verified pair until `until_ms`, unless an invalidation happened since
    /// `generation`.
    pub(crate) fn insert_verified_pair(
        &self,
        pair: [u8; 32],
        user: Arc<UserRecord>,
        until_ms: i64,
        generation: u64,
    ) {
        if let Ok(mut map) = self.verified.write()
            && self.generation.load(Ordering::Acquire) == generation
        {
            if map.len() >= MAX_ENTRIES {
                map.retain(|_, v| v.until_ms > until_ms - 1);
                if map.len() >= MAX_ENTRIES {
                    map.clear();
                }
            }
            map.insert(pair, VerifiedPair { user, until_ms });
        }
    }

    /// The userhash index, if built since the last change.
    pub(crate) fn userhashes(&self) -> Option<Arc<UserhashIndex>> {
        self.userhashes.read().ok()?.clone()
    }

    /// Whether a userhash the index does not know may ask the store now: once per
    /// [`USERHASH_RECHECK_MS`] at most, whoever sends them.
    pub(crate) fn userhash_recheck_due(&self, now_ms: i64) -> bool {
        let last = self.userhash_checked_ms.load(Ordering::Acquire);
        now_ms.saturating_sub(last) >= USERHASH_RECHECK_MS
            && self
                .userhash_checked_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Keeps a freshly built userhash index, unless an invalidation happened since `generation`.
    pub(crate) fn set_userhashes(
        &self,
        index: UserhashIndex,
        generation: u64,
    ) -> Arc<UserhashIndex> {
        let index = Arc::new(index);
        if let Ok(mut slot) = self.userhashes.write()
            && self.generation.load(Ordering::Acquire) == generation
        {
            *slot = Some(index.clone());
        }
        index
    }

    /// Drops expired verified pairs (on a timer).
    pub(crate) fn prune_verified(&self, now_ms: i64) {
        if let Ok(mut map) = self.verified.write() {
            map.retain(|_, v| v.until_ms > now_ms);
        }
    }

    /// Drops the entry of one credential.
    pub(crate) fn invalidate_handle(&self, handle: &[u8; 32]) {
        // Locks in the order every invalidation takes them: api_keys first.
        let keys = self.api_keys.write();
        let hmac = self.hmac_keys.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut map) = keys {
            map.remove(handle);
        }
        if let Ok(mut map) = hmac {
            map.remove(handle);
        }
    }

    /// A cached HMAC key: `Some(None)` when the store has no such key.
    pub(crate) fn hmac_key(&self, handle: &[u8; 32]) -> Option<Option<Arc<HmacKey>>> {
        let found = self.hmac_keys.read().ok()?.get(handle).cloned();
        self.stats.count(Kind::HmacKey, found)
    }

    /// Caches what the store said about an HMAC key, unless an invalidation happened since
    /// `generation`.
    pub(crate) fn insert_hmac_key(
        &self,
        handle: [u8; 32],
        key: Option<HmacKey>,
        generation: u64,
    ) -> Option<Arc<HmacKey>> {
        let value = key.map(Arc::new);
        if let Ok(mut map) = self.hmac_keys.write()
            && self.generation.load(Ordering::Acquire) == generation
        {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(handle, value.clone());
        }
        value
    }

    /// Drops every entry of a subject (and every negative entry: cheap to refill): its
    /// keys, its user record, its verified passwords, and the userhash index.
    pub(crate) fn invalidate_subject(&self, subject: &str) {
        self.subjects_changed.fetch_add(1, Ordering::AcqRel);
        // The generation moves first and the write locks are held while entries go, so a
        // read that began before this cannot insert what it read afterwards.
        let keys = self.api_keys.write();
        let users = self.users.write();
        let verified = self.verified.write();
        let hashes = self.userhashes.write();
        let hmac = self.hmac_keys.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut map) = keys {
            map.retain(|_, v| matches!(v, Cached::Known(e) if &*e.record.subject != subject));
        }
        if let Ok(mut map) = hmac {
            map.retain(|_, v| matches!(v, Some(k) if &*k.record.subject != subject));
        }
        if let Ok(mut map) = users {
            map.retain(|_, (v, _)| matches!(v, CachedUser::Known(u) if &*u.name != subject));
        }
        if let Ok(mut map) = verified {
            map.retain(|_, v| &*v.user.name != subject);
        }
        if let Ok(mut slot) = hashes {
            *slot = None;
        }
    }

    /// A cached client: `Some(None)` when the store has no such client.
    pub(crate) fn client(&self, client_id: &str) -> Option<Option<Arc<ClientRecord>>> {
        let found = self
            .clients
            .read()
            .ok()?
            .get(&self.names.of(client_id))
            .filter(|(c, until)| match c {
                Some(c) => &*c.client_id == client_id,
                None => *until > crate::clock::now_millis(),
            })
            .map(|(c, _)| c.clone());
        self.stats.count(Kind::Client, found)
    }

    /// Caches what the store said about a client, unless an invalidation happened since
    /// `generation`.
    pub(crate) fn insert_client(
        &self,
        client_id: &str,
        record: Option<ClientRecord>,
        generation: u64,
    ) -> Option<Arc<ClientRecord>> {
        let value = record.map(Arc::new);
        if let Ok(mut map) = self.clients.write()
            && self.generation.load(Ordering::Acquire) == generation
        {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            let until = lapses(value.is_some());
            map.insert(self.names.of(client_id), (value.clone(), until));
        }
        value
    }

    /// Drops a client's entry.
    pub(crate) fn invalidate_client(&self, client_id: &str) {
        self.clients_changed.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut map) = self.clients.write() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            map.remove(&self.names.of(client_id));
        }
    }

    /// A verified access token, if remembered and not expired at `now`.
    pub(crate) fn verified_token(&self, handle: &[u8; 32], now: i64) -> Option<Arc<AccessToken>> {
        let map = self.verified_tokens.read().ok()?;
        let found = map.get(handle).filter(|t| t.exp > now).cloned();
        self.stats.count(Kind::VerifiedToken, found)
    }

    /// Remembers a verified access token until its `exp`.
    pub(crate) fn insert_verified_token(
        &self,
        handle: [u8; 32],
        token: Arc<AccessToken>,
        now: i64,
    ) {
        if let Ok(mut map) = self.verified_tokens.write() {
            if map.len() >= MAX_ENTRIES {
                map.retain(|_, t| t.exp > now);
                if map.len() >= MAX_ENTRIES {
                    map.clear();
                }
            }
            map.insert(handle, token);
        }
    }

    /// Whether the access token `jti` was revoked.
    pub(crate) fn is_revoked(&self, jti: &str) -> bool {
        // A poisoned lock cannot say "not revoked".
        self.revoked.read().map_or(true, |m| m.contains_key(jti))
    }

    /// Notes a revoked access token until its `exp`.
    pub(crate) fn add_revoked(&self, jti: &str, exp: i64) {
        if let Ok(mut m) = self.revoked.write() {
            m.insert(jti.into(), exp);
        }
    }

    /// Replaces the revoked set with what the store holds.
    pub(crate) fn replace_revoked(&self, rows: Vec<(String, i64)>) {
        if let Ok(mut m) = self.revoked.write() {
            *m = rows
                .into_iter()
                .map(|(j, e)| (j.into_boxed_str(), e))
                .collect();
        }
    }

    /// Forgets revoked and verified tokens past their expiry (they fail on `exp` anyway).
    pub(crate) fn prune_revoked(&self, now: i64) {
        if let Ok(mut m) = self.revoked.write() {
            m.retain(|_, exp| *exp >= now);
        }
        if let Ok(mut m) = self.verified_tokens.write() {
            m.retain(|_, t| t.exp > now);
        }
    }

    /// Drops everything (after the change feed lost track).
    pub(crate) fn clear(&self) {
        self.clients_changed.fetch_add(1, Ordering::AcqRel);
        self.subjects_changed.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut map) = self.clients.write() {
            map.clear();
        }
        if let Ok(mut map) = self.hmac_keys.write() {
            map.clear();
        }
        let keys = self.api_keys.write();
        let users = self.users.write();
        let verified = self.verified.write();
        let hashes = self.userhashes.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut map) = keys {
            map.clear();
        }
        if let Ok(mut map) = users {
            map.clear();
        }
        if let Ok(mut map) = verified {
            map.clear();
        }
        if let Ok(mut slot) = hashes {
            *slot = None;
        }
    }

    /// Notes a successful use; queues a `last_used_at` write at most once a minute per key.
    pub(crate) fn mark_used(&self, entry: &KeyEntry, now: i64) {
        let last = entry.last_used.load(Ordering::Relaxed);
        if now - last >= LAST_USED_EVERY_SECS
            && entry
                .last_used
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            && let Ok(mut pending) = self.pending_last_used.lock()
        {
            pending.push((entry.record.id.to_string(), now));
        }
    }

    /// Takes the queued `last_used_at` writes.
    pub(crate) fn take_last_used(&self) -> Vec<(String, i64)> {
        self.pending_last_used
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycard_core::Scopes;

    fn rec(subject: &str) -> CredentialRecord {
        CredentialRecord {
            id: "key_1".into(),
            subject: subject.into(),
            scopes: Scopes::empty(),
            expires_at: None,
            revoked_at: None,
            subject_disabled: false,
            identity: None,
            principal: Default::default(),
        }
    }

    /// Handles hash by their first eight bytes; handles alike there still stay apart.
    #[test]
    fn handle_maps_tell_every_handle_apart() {
        use std::hash::BuildHasher;
        let build = std::hash::BuildHasherDefault::<HandleHasher>::default();
        let mut a = [7u8; 32];
        let b = [7u8; 32];
        assert_eq!(build.hash_one(a), build.hash_one(b));
        a[0] = 8;
        assert_ne!(build.hash_one(a), build.hash_one(b));
        let mut map = HandleMap::default();
        for i in 0..=255u8 {
            let mut h = [0u8; 32];
            h[31] = i;
            map.insert(h, i);
        }
        assert_eq!(map.len(), 256);
        for i in 0..=255u8 {
            let mut h = [0u8; 32];
            h[31] = i;
            assert_eq!(map.get(&h), Some(&i));
        }
    }

    #[test]
    fn verified_tokens_are_forgotten_at_their_expiry() {
        let c = CredentialCache::default();
        let t = Arc::new(AccessToken {
            subject: "svc".into(),
            client_id: "svc".into(),
            scopes: Scopes::empty(),
            jti: "at_1".into(),
            exp: 100,
            iat: 0,
            audience: "http://kc".into(),
            x5t_s256: None,
            client_credentials: false,
        });
        c.insert_verified_token([1; 32], t, 50);
        assert!(c.verified_token(&[1; 32], 99).is_some());
        assert!(c.verified_token(&[1; 32], 100).is_none(), "expired");
        assert!(c.verified_token(&[2; 32], 50).is_none());
        c.prune_revoked(100);
        assert!(c.verified_token(&[1; 32], 0).is_none(), "pruned");
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let c = CredentialCache::default();
        let g = c.generation();
        c.invalidate_handle(&[1; 32]);
        c.insert_api_key([1; 32], Some(rec("a")), g);
        assert!(c.api_key(&[1; 32]).is_none());
        c.insert_api_key([1; 32], Some(rec("a")), c.generation());
        assert!(matches!(c.api_key(&[1; 32]), Some(Cached::Known(_))));
    }

    #[test]
    fn names_a_client_chose_are_hashed_and_forgotten() {
        let c = CredentialCache::default();
        let long = "x".repeat(256);
        c.insert_user(&long, None, c.generation());
        assert!(matches!(c.user(&long), Some(CachedUser::Unknown)));
        // Held under a 128-bit keyed hash, never the name itself.
        let key = c.names.of(&long);
        assert!(c.users.read().unwrap().contains_key(&key));
        // A negative entry lapses.
        c.users.write().unwrap().get_mut(&key).unwrap().1 = crate::clock::now_millis() - 1;
        assert!(c.user(&long).is_none());
        // A known entry is given only for the name it holds (a hash collision finds
        // nothing, never another user).
        c.insert_user("alice", Some(user("alice")), c.generation());
        let alice = c.users.read().unwrap()[&c.names.of("alice")].clone();
        c.users
            .write()
            .unwrap()
            .insert(c.names.of("mallory"), alice);
        assert!(c.user("mallory").is_none());
        assert!(matches!(c.user("alice"), Some(CachedUser::Known(_))));
        c.insert_client("ghost", None, c.generation());
        assert!(matches!(c.client("ghost"), Some(None)));
        c.clients
            .write()
            .unwrap()
            .get_mut(&c.names.of("ghost"))
            .unwrap()
            .1 = 0;
        assert!(c.client("ghost").is_none());
    }

    #[test]
    fn subject_invalidation_drops_its_keys_and_negatives() {
        let c = CredentialCache::default();
        c.insert_api_key([1; 32], Some(rec("a")), c.generation());
        c.insert_api_key([2; 32], Some(rec("b")), c.generation());
        c.insert_api_key([3; 32], None, c.generation());
        c.invalidate_subject("a");
        assert!(c.api_key(&[1; 32]).is_none() && c.api_key(&[3; 32]).is_none());
        assert!(c.api_key(&[2; 32]).is_some());
    }

    /// The subject `verify` saw for `handle`, or what the lookup said instead.
    fn local(c: &CredentialCache, handle: u8, now: i64) -> String {
        match c.api_key_local(&[handle; 32], now, |r| {
            if r.revoked_at.is_some() {
                Err(())
            } else {
                Ok(r.subject.to_string())
            }
        }) {
            KeyLookup::Known(Ok(s)) => s,
            KeyLookup::Known(Err(())) => "refused".into(),
            KeyLookup::Unknown => "unknown".into(),
            KeyLookup::Miss => "miss".into(),
        }
    }

    #[test]
    fn a_threads_copy_of_a_key_goes_with_any_invalidation() {
        let c = CredentialCache::default();
        assert_eq!(local(&c, 1, 100), "miss");
        c.insert_api_key([1; 32], Some(rec("a")), c.generation());
        c.insert_api_key([2; 32], None, c.generation());
        assert_eq!(local(&c, 1, 100), "a", "from the shared map");
        assert_eq!(local(&c, 1, 101), "a", "from this thread's copy");
        assert_eq!(local(&c, 2, 101), "unknown");
        // Revoked: the shared entry goes, and this thread's copy with it.
        c.invalidate_handle(&[1; 32]);
        assert_eq!(local(&c, 1, 102), "miss");
        let mut revoked = rec("a");
        revoked.revoked_at = Some(90);
        c.insert_api_key([1; 32], Some(revoked), c.generation());
        assert_eq!(local(&c, 1, 103), "refused");
        assert_eq!(
            local(&c, 1, 104),
            "refused",
            "the copy is of the new record"
        );
        c.clear();
        assert_eq!(local(&c, 1, 105), "miss");
        // Another cache on the same thread (at the same generation) never sees this one's
        // copies.
        let (first, second) = (CredentialCache::default(), CredentialCache::default());
        first.insert_api_key([1; 32], Some(rec("a")), first.generation());
        assert_eq!(local(&first, 1, 106), "a");
        assert_eq!(first.generation(), second.generation());
        assert_eq!(local(&second, 1, 106), "miss");
        c.insert_api_key([1; 32], Some(rec("a")), c.generation());
        // Other threads keep their own copies and see the same invalidations.
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(local(&c, 1, 107), "a"));
        });
        c.invalidate_subject("a");
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(local(&c, 1, 108), "miss"));
        });
        assert_eq!(local(&c, 1, 108), "miss");
    }

    #[test]
    fn a_use_is_noted_only_when_the_key_passes() {
        let c = CredentialCache::default();
        let mut revoked = rec("a");
        revoked.id = "key_r".into();
        revoked.revoked_at = Some(1);
        c.insert_api_key([1; 32], Some(revoked), c.generation());
        c.insert_api_key([2; 32], Some(rec("b")), c.generation());
        for now in [100, 200] {
            assert_eq!(local(&c, 1, now), "refused");
            assert_eq!(local(&c, 2, now), "b");
        }
        let used = c.take_last_used();
        assert_eq!(
            used,
            vec![("key_1".to_owned(), 100), ("key_1".to_owned(), 200)]
        );
    }

    fn user(name: &str) -> UserRecord {
        UserRecord {
            name: name.into(),
            password_id: "pwd_1".into(),
            password_hash: String::new(),
            scopes: Scopes::empty(),
            disabled: false,
            digest: None,
            totp_seed: None,
            totp_sealed: None,
        }
    }

    #[test]
    fn verified_pairs_expire_and_go_with_their_user() {
        let c = CredentialCache::default();
        let g = c.generation();
        c.insert_verified_pair([1; 32], Arc::new(user("alice")), 1_000, g);
        c.insert_verified_pair([2; 32], Arc::new(user("bob")), 1_000, g);
        c.insert_user("alice", Some(user("alice")), g);
        assert!(c.verified_pair(&[1; 32], 999).is_some());
        assert!(c.verified_pair(&[1; 32], 1_000).is_none(), "expired");
        c.invalidate_subject("alice");
        assert!(c.verified_pair(&[1; 32], 0).is_none());
        assert!(c.user("alice").is_none());
        assert!(c.verified_pair(&[2; 32], 0).is_some());
        // A verification that raced the change is not remembered.
        c.insert_verified_pair([1; 32], Arc::new(user("alice")), 1_000, g);
        assert!(c.verified_pair(&[1; 32], 0).is_none());
        c.clear();
        assert!(c.verified_pair(&[2; 32], 0).is_none());
    }

    #[test]
    fn last_used_is_queued_once_a_minute() {
        let c = CredentialCache::default();
        let Cached::Known(e) = c.insert_api_key([1; 32], Some(rec("a")), 0) else {
            panic!()
        };
        c.mark_used(&e, 1_000);
        c.mark_used(&e, 1_030);
        c.mark_used(&e, 1_060);
        assert_eq!(
            c.take_last_used(),
            vec![("key_1".into(), 1_000), ("key_1".into(), 1_060)]
        );
        assert!(c.take_last_used().is_empty());
    }
}
