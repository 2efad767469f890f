//! The failed-attempt throttle (`limits.failed_auth`, reference §3): failures are counted per
//! client IP and per (subject, client IP) across all methods, in fixed windows that start
//! at the first failure. Once a key has used up its window, every attempt under it — right
//! password or not — is answered 429 until the window passes.
//!
//! Failed passwords and one-time codes are also counted per account (the name tried,
//! known or not, so that an account that ran out does not tell whether it exists)
//! (`limits.account_failed_auth`), whatever the address: guesses spread over many
//! addresses still run out. What an exhausted account refuses is the caller's choice
//! ([`Throttle::check_account`]).
//!
//! In-process and shared by all workers (sharded mutexes, never held across an await).
//! IPv6 clients are counted per /64: one host usually holds a whole /64.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use keycard_core::Rate;

const SHARDS: usize = 16;
/// Most keys tracked; beyond it, expired windows are pruned at once, and if that is not
/// enough, new keys are throttled outright (fail closed under a flood of addresses).
const MAX_KEYS: usize = 1_000_000;

/// A client address as the throttle counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    V4(u32),
    /// The /64 prefix.
    V6(u64),
}

impl From<IpAddr> for Client {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Client::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(u32::from(v4)),
                None => Client::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// A key of the table. The subject a client names is held as a keyed hash of it (the key
/// random per process): a client's choice of names neither grows entries nor can aim at
/// a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Ip(Client),
    SubjectIp(u64, Client),
    Account(u64),
    /// An address that sent a wrong password or code for an account (in the account's
    /// window): local to the instance, never shared.
    AccountIp(u64, Client),
}

/// A key as it is named across instances (Redis keys and block messages).
#[derive(Debug)]
enum Named<'a> {
    Ip(Client),
    SubjectIp(&'a str, Client),
    Account(&'a str),
}

impl Named<'_> {
    fn name(&self) -> String {
        let client = |c: &Client| match c {
            Client::V4(v) => format!("4.{v:x}"),
            Client::V6(v) => format!("6.{v:x}"),
        };
        match self {
            Named::Ip(c) => format!("ip|{}", client(c)),
            Named::SubjectIp(s, c) => format!("sub|{}|{s}", client(c)),
            Named::Account(s) => format!("acct|{s}"),
        }
    }

    fn from_name(name: &str) -> Option<Named<'_>> {
        let client = |t: &str| -> Option<Client> {
            let (kind, hex) = t.split_once('.')?;
            match kind {
                "4" => u32::from_str_radix(hex, 16).ok().map(Client::V4),
                "6" => u64::from_str_radix(hex, 16).ok().map(Client::V6),
                _ => None,
            }
        };
        if let Some(account) = name.strip_prefix("acct|") {
            return Some(Named::Account(account));
        }
        let mut parts = name.splitn(3, '|');
        match (parts.next()?, parts.next()?, parts.next()) {
            ("ip", c, None) => Some(Named::Ip(client(c)?)),
            ("sub", c, Some(s)) => Some(Named::SubjectIp(s, client(c)?)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: i64,
    failures: u32,
}

/// Whether an attempt may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go ahead.
    Allow,
    /// Refuse with 429; retry after this many seconds (at least 1).
    Throttled {
        /// Seconds until the window passes.
        retry_after_secs: u64,
    },
}

/// The throttle.
#[derive(Debug)]
pub(crate) struct Throttle {
    rate: Rate,
    /// `limits.failed_auth = "off"`: nothing is counted, nobody is throttled.
    enabled: bool,
    shards: Vec<Mutex<HashMap<Key, Window>>>,
    keys: AtomicUsize,
    hasher: RandomState,
    /// Keys subject names ([`Key::SubjectIp`]).
    subjects: RandomState,
    /// [`MAX_KEYS`] (smaller in tests).
    max_keys: usize,
    /// `limits.account_failed_auth`; `None`: accounts are not counted.
    account: Option<Rate>,
}

impl Throttle {
    /// A throttle allowing `rate.count` failures per `rate.per`; `None`: switched off.
    pub(crate) fn new(rate: Option<Rate>) -> Self {
        Self {
            enabled: rate.is_some(),
            rate: rate.unwrap_or(Rate {
                count: u32::MAX,
                per: std::time::Duration::from_secs(1),
            }),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            keys: AtomicUsize::new(0),
            hasher: RandomState::new(),
            subjects: RandomState::new(),
            max_keys: MAX_KEYS,
            account: None,
        }
    }

    /// Also counts failures per account, `rate.count` per `rate.per`.
    #[must_use]
    pub(crate) fn with_account_limit(mut self, rate: Option<Rate>) -> Self {
        self.account = rate;
        self
    }

    fn key(&self, named: &Named<'_>) -> Key {
        match *named {
            Named::Ip(c) => Key::Ip(c),
            Named::SubjectIp(s, c) => Key::SubjectIp(self.subjects.hash_one(s), c),
            Named::Account(s) => Key::Account(self.subjects.hash_one(("account", s))),
        }
    }

    /// The rate that applies to `key`.
    fn rate_of(&self, key: &Key) -> Rate {
        match key {
            Key::Account(_) | Key::AccountIp(..) => self.account.unwrap_or(self.rate),
            _ => self.rate,
        }
    }

    fn window_of(&self, key: &Key) -> i64 {
        i64::try_from(self.rate_of(key).per.as_millis()).unwrap_or(i64::MAX)
    }

    /// Failures allowed per window.
    pub(crate) fn limit(&self) -> u32 {
        self.rate.count
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.rate.per.as_millis()).unwrap_or(i64::MAX)
    }

    fn shard(&self, key: &Key) -> Option<&Mutex<HashMap<Key, Window>>> {
        self.shards
            .get((self.hasher.hash_one(key) as usize) % SHARDS)
    }

    /// Whether the client at `ip` may attempt now (checked before any verification).
    pub(crate) fn check_ip(&self, ip: IpAddr, now_ms: i64) -> Verdict {
        // The common case — nobody is failing — costs one atomic load.
        if self.keys.load(Ordering::Relaxed) == 0 {
            return Verdict::Allow;
        }
        self.check(&Key::Ip(ip.into()), now_ms)
    }

    /// Whether the client at `ip` may attempt as `subject` now.
    pub(crate) fn check_subject(&self, subject: &str, ip: IpAddr, now_ms: i64) -> Verdict {
        if self.keys.load(Ordering::Relaxed) == 0 {
            return Verdict::Allow;
        }
        self.check(&self.key(&Named::SubjectIp(subject, ip.into())), now_ms)
    }

    /// Whether `subject` has failures left as an account (from any address) now.
    pub(crate) fn check_account(&self, subject: &str, now_ms: i64) -> Verdict {
        if self.account.is_none() || self.keys.load(Ordering::Relaxed) == 0 {
            return Verdict::Allow;
        }
        self.check(&self.key(&Named::Account(subject)), now_ms)
    }

    /// Whether the client at `ip` sent a wrong password or code for `subject` within the
    /// account's window.
    pub(crate) fn has_failed_as(&self, subject: &str, ip: IpAddr, now_ms: i64) -> bool {
        if self.account.is_none() || self.keys.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let key = self.account_ip(subject, ip);
        let Some(shard) = self.shard(&key) else {
            return true;
        };
        let Ok(map) = shard.lock() else {
            return true;
        };
        map.get(&key)
            .is_some_and(|w| w.start_ms.saturating_add(self.window_of(&key)) > now_ms)
    }

    fn account_ip(&self, subject: &str, ip: IpAddr) -> Key {
        Key::AccountIp(self.subjects.hash_one(("account", subject)), ip.into())
    }

    /// Counts a wrong password or one-time code for the name `subject` from `ip`
    /// against the account (and marks the address as one that failed for it); the
    /// account key's name (for the shared count in Redis), with the window and the limit.
    pub(crate) fn record_account_failure(
        &self,
        subject: &str,
        ip: IpAddr,
        now_ms: i64,
    ) -> Option<(String, i64, u32)> {
        let rate = self.account?;
        let named = Named::Account(subject);
        self.bump(self.key(&named), now_ms);
        self.bump(self.account_ip(subject, ip), now_ms);
        Some((
            named.name(),
            i64::try_from(rate.per.as_millis()).unwrap_or(i64::MAX),
            rate.count,
        ))
    }

    fn check(&self, key: &Key, now_ms: i64) -> Verdict {
        let rate = self.rate_of(key);
        let Some(shard) = self.shard(key) else {
            return Verdict::Allow;
        };
        let Ok(map) = shard.lock() else {
            return Verdict::Throttled {
                retry_after_secs: 1,
            };
        };
        match map.get(key) {
            // The table is full and this key is not in it: its failures could not be
            // counted, so it is not let through either.
            None if self.keys.load(Ordering::Relaxed) >= self.max_keys => Verdict::Throttled {
                retry_after_secs: rate.per.as_secs().max(1),
            },
            Some(w) if w.failures >= rate.count => {
                let ends = w.start_ms.saturating_add(self.window_of(key));
                if ends > now_ms {
                    let ms = u64::try_from(ends - now_ms).unwrap_or(1000);
                    Verdict::Throttled {
                        retry_after_secs: ms.div_ceil(1000).max(1),
                    }
                } else {
                    Verdict::Allow
                }
            }
            _ => Verdict::Allow,
        }
    }

    /// Counts a failed attempt from `ip` (and as `subject`, when one was named); returns
    /// the names of the keys counted (for the shared count in Redis).
    pub(crate) fn record_failure(
        &self,
        ip: IpAddr,
        subject: Option<&str>,
        now_ms: i64,
    ) -> Vec<String> {
        if !self.enabled {
            return Vec::new();
        }
        let client = Client::from(ip);
        let mut keys = vec![Named::Ip(client)];
        if let Some(s) = subject {
            keys.push(Named::SubjectIp(s, client));
        }
        keys.into_iter()
            .map(|k| {
                self.bump(self.key(&k), now_ms);
                k.name()
            })
            .collect()
    }

    /// Another instance found the key `name` out of attempts until `until_ms`: refuse it
    /// here too. Unknown names are ignored.
    pub(crate) fn block(&self, name: &str, until_ms: i64) {
        let Some(key) = Named::from_name(name).map(|n| self.key(&n)) else {
            return;
        };
        let enabled = match key {
            Key::Account(_) | Key::AccountIp(..) => self.account.is_some(),
            _ => self.enabled,
        };
        if !enabled {
            return;
        }
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let Ok(mut map) = shard.lock() else {
            return;
        };
        let window = Window {
            start_ms: until_ms.saturating_sub(self.window_of(&key)),
            failures: self.rate_of(&key).count,
        };
        if map.insert(key, window).is_none() {
            self.keys.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The window, in milliseconds (the shared count's time to live).
    pub(crate) fn window(&self) -> i64 {
        self.window_ms()
    }

    fn bump(&self, key: Key, now_ms: i64) {
        if self.keys.load(Ordering::Relaxed) >= self.max_keys {
            self.prune(now_ms);
        }
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let Ok(mut map) = shard.lock() else {
            return;
        };
        let window = self.window_of(&key);
        match map.get_mut(&key) {
            Some(w) if w.start_ms.saturating_add(window) > now_ms => {
                w.failures = w.failures.saturating_add(1);
            }
            Some(w) => {
                *w = Window {
                    start_ms: now_ms,
                    failures: 1,
                };
            }
            None => {
                if self.keys.load(Ordering::Relaxed) >= self.max_keys {
                    // Still full after pruning: nothing new is counted, and `check`
                    // refuses keys it does not hold until the table has room.
                    return;
                }
                map.insert(
                    key,
                    Window {
                        start_ms: now_ms,
                        failures: 1,
                    },
                );
                self.keys.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops windows that have passed (run on a timer, and when full).
    pub(crate) fn prune(&self, now_ms: i64) {
        for shard in &self.shards {
            if let Ok(mut map) = shard.lock() {
                let before = map.len();
                map.retain(|k, w| w.start_ms.saturating_add(self.window_of(k)) > now_ms);
                self.keys.fetch_sub(before - map.len(), Ordering::Relaxed);
            }
        }
    }

    /// How many keys are tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    /// Whether nothing is tracked.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t() -> Throttle {
        Throttle::new(Some(Rate {
            count: 10,
            per: Duration::from_secs(60),
        }))
    }

    #[test]
    fn off_counts_nothing_and_throttles_nobody() {
        let t = Throttle::new(None);
        for _ in 0..100 {
            assert!(
                t.record_failure(ip("192.0.2.1"), Some("alice"), 0)
                    .is_empty()
            );
        }
        assert!(matches!(t.check_ip(ip("192.0.2.1"), 1), Verdict::Allow));
        assert!(matches!(
            t.check_subject("alice", ip("192.0.2.1"), 1),
            Verdict::Allow
        ));
        assert!(t.is_empty());
    }

    #[test]
    fn accounts_run_out_whatever_the_address_and_name_their_keys_apart() {
        let t = t().with_account_limit(Some(Rate {
            count: 3,
            per: Duration::from_secs(900),
        }));
        for i in 0..3u8 {
            assert_eq!(t.check_account("alice", 10), Verdict::Allow);
            let (name, window, limit) = t
                .record_account_failure("alice", ip(&format!("203.0.113.{i}")), 10)
                .unwrap();
            assert_eq!((name.as_str(), window, limit), ("acct|alice", 900_000, 3));
        }
        assert_eq!(
            t.check_account("alice", 20),
            Verdict::Throttled {
                retry_after_secs: 900
            }
        );
        assert_eq!(t.check_account("bob", 20), Verdict::Allow);
        // The per-address counts are untouched by it: none of the three used up its own.
        assert_eq!(t.check_ip(ip("203.0.113.0"), 20), Verdict::Allow);
        assert!(t.has_failed_as("alice", ip("203.0.113.0"), 20));
        assert!(!t.has_failed_as("alice", ip("198.51.100.1"), 20));
        assert!(!t.has_failed_as("bob", ip("203.0.113.0"), 20));
        // Counted even with the per-address throttle off.
        let only_accounts = Throttle::new(None).with_account_limit(Some(Rate {
            count: 1,
            per: Duration::from_secs(60),
        }));
        only_accounts.record_account_failure("alice", ip("203.0.113.9"), 1);
        assert!(matches!(
            only_accounts.check_account("alice", 2),
            Verdict::Throttled { .. }
        ));
        assert!(only_accounts.has_failed_as("alice", ip("203.0.113.9"), 2));
        assert_eq!(
            t.check_account("alice", 900_010),
            Verdict::Allow,
            "the window passed"
        );
        // Blocks from other instances name the account; a user named like a key is not one.
        t.block("acct|bob", 5_000);
        assert!(matches!(
            t.check_account("bob", 20),
            Verdict::Throttled { .. }
        ));
        assert!(matches!(
            Named::from_name("acct|a|b"),
            Some(Named::Account("a|b"))
        ));
        // Off: nothing counted.
        let off = Throttle::new(None);
        assert!(
            off.record_account_failure("alice", ip("203.0.113.9"), 1)
                .is_none()
        );
        assert_eq!(off.check_account("alice", 1), Verdict::Allow);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_eleventh_attempt_waits_for_the_window() {
        let t = t();
        let a = ip("10.0.0.1");
        for i in 0..10 {
            assert_eq!(t.check_ip(a, 1000 + i), Verdict::Allow, "attempt {i}");
            t.record_failure(a, Some("alice"), 1000 + i);
        }
        assert_eq!(
            t.check_ip(a, 2000),
            Verdict::Throttled {
                retry_after_secs: 59
            }
        );
        assert!(matches!(
            t.check_subject("alice", a, 2000),
            Verdict::Throttled { .. }
        ));
        // Another address is unaffected; the window passes.
        assert_eq!(t.check_ip(ip("10.0.0.2"), 2000), Verdict::Allow);
        assert_eq!(t.check_ip(a, 61_000), Verdict::Allow);
        t.record_failure(a, None, 61_000);
        assert_eq!(t.check_ip(a, 61_001), Verdict::Allow, "a new window began");
    }

    #[test]
    fn per_subject_counts_only_that_subject() {
        let t = t();
        let a = ip("10.0.0.1");
        for i in 0..10 {
            t.record_failure(a, Some("alice"), i);
        }
        assert!(matches!(
            t.check_subject("alice", a, 20),
            Verdict::Throttled { .. }
        ));
        assert_eq!(t.check_subject("bob", ip("10.0.0.9"), 20), Verdict::Allow);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let t = t();
        for i in 0..10 {
            t.record_failure(ip(&format!("2001:db8::{i:x}")), None, 0);
        }
        assert!(matches!(
            t.check_ip(ip("2001:db8::ffff:1"), 1),
            Verdict::Throttled { .. }
        ));
        assert_eq!(t.check_ip(ip("2001:db8:0:1::1"), 1), Verdict::Allow);
        for _ in 0..10 {
            t.record_failure(ip("::ffff:10.1.1.1"), None, 0);
        }
        assert!(matches!(
            t.check_ip(ip("10.1.1.1"), 1),
            Verdict::Throttled { .. }
        ));
    }

    #[test]
    fn a_full_table_refuses_the_keys_it_cannot_count() {
        let mut t = t();
        t.max_keys = 4;
        let now = 1_000;
        // Two addresses, each with a subject: four keys, the table is full.
        t.record_failure(ip("192.0.2.1"), Some("alice"), now);
        t.record_failure(ip("192.0.2.2"), Some("bob"), now);
        assert_eq!(t.len(), 4);
        // Those it holds are judged as usual (one failure each: allowed).
        assert_eq!(t.check_ip(ip("192.0.2.1"), now), Verdict::Allow);
        assert_eq!(t.check_subject("bob", ip("192.0.2.2"), now), Verdict::Allow);
        // A newcomer's failures cannot be counted: it is refused, not waved through.
        t.record_failure(ip("198.51.100.7"), Some("carol"), now);
        assert_eq!(t.len(), 4);
        assert!(matches!(
            t.check_ip(ip("198.51.100.7"), now),
            Verdict::Throttled { .. }
        ));
        assert!(matches!(
            t.check_subject("alice", ip("198.51.100.7"), now),
            Verdict::Throttled { .. }
        ));
        // Once the windows pass, pruning makes room again.
        let later = now + 61_000;
        t.prune(later);
        assert_eq!(t.check_ip(ip("198.51.100.7"), later), Verdict::Allow);
    }

    #[test]
    fn prune_forgets_passed_windows() {
        let t = t();
        t.record_failure(ip("10.0.0.1"), Some("a"), 0);
        assert_eq!(t.len(), 2);
        t.prune(30_000);
        assert_eq!(t.len(), 2);
        t.prune(60_000);
        assert!(t.is_empty());
    }
}
