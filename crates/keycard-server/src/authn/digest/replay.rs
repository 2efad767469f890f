//! The Digest replay cache: for each nonce, the highest nonce count accepted. A (nonce, nc)
//! pair is accepted once, and nc must grow (RFC 7616 §3.4: "the server … SHOULD reject a
//! request with a nonce count it has already seen"). Entries live as long as their nonce.
//!
//! In-process, shared by all workers; bounded, and fail closed when full.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

const SHARDS: usize = 16;
/// Most nonces tracked at once (about 100 bytes each).
const MAX_NONCES: usize = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct Seen {
    nc: u32,
    expires_ms: i64,
}

/// Nonce counts seen.
#[derive(Debug)]
pub(super) struct NonceCounts {
    shards: Vec<Mutex<HashMap<Box<str>, Seen>>>,
    len: AtomicUsize,
    hasher: RandomState,
}

impl Default for NonceCounts {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            len: AtomicUsize::new(0),
            hasher: RandomState::new(),
        }
    }
}

impl NonceCounts {
    /// Accepts `nc` for `nonce` if it is higher than every count accepted before; the entry
    /// is kept until `expires_ms`. `false`: a replay (or the cache is full).
    pub(super) fn accept(&self, nonce: &str, nc: u32, expires_ms: i64, now_ms: i64) -> bool {
        if self.len.load(Ordering::Relaxed) >= MAX_NONCES {
            self.prune(now_ms);
        }
        let Some(shard) = self
            .shards
            .get((self.hasher.hash_one(nonce) as usize) % SHARDS)
        else {
            return false;
        };
        let Ok(mut map) = shard.lock() else {
            return false;
        };
        match map.get_mut(nonce) {
            Some(seen) => {
                if nc <= seen.nc {
                    return false;
                }
                seen.nc = nc;
                true
            }
            None => {
                if self.len.load(Ordering::Relaxed) >= MAX_NONCES {
                    return false;
                }
                map.insert(nonce.into(), Seen { nc, expires_ms });
                self.len.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    /// Drops entries of expired nonces (their requests are refused as stale anyway).
    pub(super) fn prune(&self, now_ms: i64) {
        for shard in &self.shards {
            if let Ok(mut map) = shard.lock() {
                let before = map.len();
                map.retain(|_, s| s.expires_ms > now_ms);
                self.len.fetch_sub(before - map.len(), Ordering::Relaxed);
            }
        }
    }

    /// How many nonces are tracked.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether none is.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_count_once_and_growing() {
        let c = NonceCounts::default();
        assert!(c.accept("n1", 1, 100, 0));
        assert!(!c.accept("n1", 1, 100, 0), "same pair replayed");
        assert!(c.accept("n1", 3, 100, 0));
        assert!(!c.accept("n1", 2, 100, 0), "nc went back");
        assert!(c.accept("n2", 1, 100, 0), "another nonce");
        assert_eq!(c.len(), 2);
        c.prune(100);
        assert!(c.is_empty());
    }
}
