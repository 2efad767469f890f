//! Following the store's change feed: every few hundred milliseconds, read the changes since
//! the last revision seen and drop the cache entries they name. While the feed cannot be
//! read, cached material cannot be trusted (a revocation might be missed), so verification
//! fails closed: [`FeedState::is_fresh`] turns false after [`MAX_STALENESS_MS`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use keycard_store::{ChangeKind, Store};
use tokio::sync::watch;

use crate::clock::now_millis;
use crate::state::cache::CredentialCache;

/// How often the feed is read.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(200);
/// How long cached material stays usable without a successful read of the feed. Below the
/// 1 s promise for revocations (reference §8), minus one poll.
pub(crate) const MAX_STALENESS_MS: i64 = 800;
const BATCH: i64 = 1000;
/// The feed's own pool: two, so a connection being replaced never leaves it with none.
const FEED_CONNECTIONS: u32 = 2;
/// How long one read of the feed may take before it is abandoned. Freshness does not wait
/// for it ([`MAX_STALENESS_MS`] turns requests away first); abandoning a slow read early
/// would only drop its connection and make the next read slower still.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether the feed is being followed.
#[derive(Debug)]
pub(crate) struct FeedState {
    last_ok_ms: AtomicI64,
    revision: AtomicI64,
    errors: std::sync::atomic::AtomicU64,
}

impl FeedState {
    /// A feed last read now, at `revision`.
    pub(crate) fn new(revision: i64) -> Self {
        Self {
            last_ok_ms: AtomicI64::new(now_millis()),
            revision: AtomicI64::new(revision),
            errors: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Reads of the feed that failed or timed out, since start.
    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the feed was read recently enough to trust the cache.
    pub(crate) fn is_fresh(&self, now_ms: i64) -> bool {
        now_ms - self.last_ok_ms.load(Ordering::Acquire) <= MAX_STALENESS_MS
    }

    /// The last revision applied.
    pub(crate) fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }
}

/// Follows the feed on a thread of its own, with its own runtime and a small pool of its
/// own: under overload the request workers and the audit writer cannot delay it, so
/// the cache does not go stale (and every request fail closed) because the machine is busy.
pub(crate) fn spawn_follower(
    store_url: &str,
    cache: Arc<CredentialCache>,
    state: Arc<FeedState>,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, crate::own_runtime::SpawnError> {
    crate::own_runtime::spawn_with_store(
        "keycard-feed",
        store_url,
        FEED_CONNECTIONS,
        move |store| async move {
            match store {
                Ok(store) => {
                    // Connect now, before requests arrive (a failure is retried by `follow`).
                    let _ = store.ping().await;
                    follow(store.clone(), cache, state, shutdown).await;
                    store.close().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the change feed cannot be followed; requests are refused")
                }
            }
        },
    )
}

/// Follows the feed until `shutdown` turns true.
pub(crate) async fn follow(
    store: Store,
    cache: Arc<CredentialCache>,
    state: Arc<FeedState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut lost_track = false;
    let mut ticker = tokio::time::interval(POLL_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        loop {
            let since = state.revision();
            let read = tokio::time::timeout(READ_TIMEOUT, store.changes_since(since, BATCH)).await;
            let changes = match read {
                Ok(Ok(changes)) => changes,
                Ok(Err(e)) => {
                    state.count_error();
                    if !lost_track {
                        tracing::warn!(error = %e, "change feed unreadable: refusing requests until the store answers");
                    }
                    lost_track = true;
                    break;
                }
                Err(_) => {
                    state.count_error();
                    if !lost_track {
                        tracing::warn!(
                            "change feed read timed out: refusing requests until the store answers"
                        );
                    }
                    lost_track = true;
                    break;
                }
            };
            // Revisions are contiguous; a hole means rows were pruned while we were away.
            let gap = changes.first().is_some_and(|c| c.revision != since + 1);
            // After an outage the changes since the last revision are all still there: apply
            // them and the cache is honest again (clearing it would send every request to a
            // store that just struggled). Only a gap (rows pruned meanwhile) loses track.
            if gap {
                // The revoked-token set is not a cache: reload it whole, or stay lost.
                match store.revoked_tokens(crate::clock::now_secs()).await {
                    Ok(rows) => cache.replace_revoked(rows),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reload revoked tokens; still refusing");
                        lost_track = true;
                        break;
                    }
                }
                cache.clear();
                tracing::info!("change feed had a gap (rows pruned while away); cache cleared");
            }
            if lost_track {
                tracing::info!("change feed readable again");
                lost_track = false;
            }
            for c in &changes {
                match c.kind {
                    ChangeKind::Credential => match parse_hex32(&c.reference) {
                        Some(h) => cache.invalidate_handle(&h),
                        None => cache.clear(),
                    },
                    ChangeKind::Subject => cache.invalidate_subject(&c.reference),
                    ChangeKind::Client => cache.invalidate_client(&c.reference),
                    ChangeKind::Token => match parse_revoked(&c.reference) {
                        Some((jti, exp)) => cache.add_revoked(jti, exp),
                        None => {
                            tracing::error!(reference = %c.reference, "unreadable token revocation in the change feed")
                        }
                    },
                }
            }
            if let Some(last) = changes.last() {
                state.revision.store(last.revision, Ordering::Release);
            }
            state.last_ok_ms.store(now_millis(), Ordering::Release);
            if (changes.len() as i64) < BATCH {
                break;
            }
        }
    }
}

/// `"{jti} {exp}"`.
fn parse_revoked(s: &str) -> Option<(&str, i64)> {
    let (jti, exp) = s.rsplit_once(' ')?;
    Some((jti, exp.parse().ok()?))
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_handles() {
        assert_eq!(parse_hex32(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_hex32("ab"), None);
        assert_eq!(parse_hex32(&"zz".repeat(32)), None);
    }

    #[test]
    fn revocation_references() {
        assert_eq!(
            parse_revoked("at_1 1800000000"),
            Some(("at_1", 1_800_000_000))
        );
        assert_eq!(parse_revoked("at_1"), None);
        assert_eq!(parse_revoked("at_1 x"), None);
    }

    #[test]
    fn freshness() {
        let f = FeedState::new(0);
        let now = now_millis();
        assert!(f.is_fresh(now));
        assert!(!f.is_fresh(now + MAX_STALENESS_MS + 1));
    }
}
