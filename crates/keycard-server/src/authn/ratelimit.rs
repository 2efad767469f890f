//! Per-route rate limits (`routes.rate_limit`), GCRA (`keycard_core::rate`), per subject
//! (per client address on a public route).
//!
//! Two backends: in-process (one instance; sharded maps, never locked across an await) and
//! Redis (`limits.redis_url`; every instance shares the count). In Redis a decision is one
//! `EVALSHA` of a Lua script that reads Redis's own clock, so instances with skewed clocks
//! still count as one, and there is no read-modify-write race. The connection is
//! multiplexed: concurrent decisions are pipelined on it.
//!
//! When Redis cannot be asked (down, slow), the decision fails: 503 — or, with
//! `limits.rate_limit_fail_open`, the request goes ahead, logged and counted.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keycard_core::rate::{Decision, Gcra};

const SHARDS: usize = 16;
/// Most keys kept in-process; beyond it, keys whose budget is whole again are dropped, and
/// if that is not enough, new keys are refused (fail closed under a flood of subjects).
const MAX_KEYS: usize = 1_000_000;
/// After a failed connect, how long calls fail at once before the next attempt (ms).
const RECONNECT_PAUSE_MS: i64 = 250;
/// How long one Redis decision may take.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// The GCRA decision in Redis; mirrors `Gcra::decide`. KEYS[1]: the key; ARGV: interval
/// and tolerance (µs). Returns {allowed, remaining, reset_us, retry_after_us}.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local nxt = tat + interval
if nxt - now > tolerance then
  return {0, 0, tat - now, nxt - now - tolerance}
end
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.floor((nxt - now) / 1000) + 1)
return {1, math.floor((tolerance - (nxt - now)) / interval), nxt - now, 0}
";

/// Digest nonce counts: KEYS[1] the nonce's key; ARGV: nc, time to live (ms). 1 when nc
/// is higher than any seen for the nonce (and now recorded), else 0.
const NONCE_COUNT_LUA: &str = r"
local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
local nc = tonumber(ARGV[1])
if nc <= seen then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// The failed-attempt throttle's shared count: KEYS[1] the count; ARGV: window (ms),
/// limit, the key's name, the channel. The first failure starts the window; from the limit on, every
/// instance is told (`PUBLISH`) to refuse the key until the window ends.
const FAILURE_LUA: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n >= tonumber(ARGV[2]) then
  local ttl = redis.call('PTTL', KEYS[1])
  redis.call('PUBLISH', ARGV[4], ttl .. ' ' .. ARGV[3])
end
return n
";

/// The channel instances tell each other about throttled keys on.
const THROTTLE_CHANNEL: &str = "throttle";

/// Why a decision could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LimitError {
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[source] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis: timed out")]
    Timeout,
    /// Redis was unreachable a moment ago: not asked again until the pause is over.
    #[error("redis: unreachable (retrying shortly)")]
    Down,
    /// The in-process map is full.
    #[error("too many rate-limit keys")]
    Full,
}

static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    /// This thread's connections, by client id.
    static CONNECTIONS: std::cell::RefCell<Vec<(usize, redis::aio::ConnectionManager)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A Redis client: one connection per thread that uses it, made on first use there, made
/// again after it fails.
pub(crate) struct Redis {
    client: redis::Client,
    /// Put before every key and the channel (`limits.redis_prefix`).
    prefix: String,
    nonce_count: redis::Script,
    failure: redis::Script,
    /// Which of the thread-local connections are this client's.
    id: usize,
    /// After a failed connect, calls fail at once until then (ms): no connection storm,
    /// and no request waits on a Redis that is known to be away.
    down_until_ms: std::sync::atomic::AtomicI64,
    /// Operations that failed (`keycard_redis_errors_total` in the metrics).
    pub errors: AtomicU64,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("errors", &self.errors.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A client of `url` (`redis://…`); connections are opened when first needed.
    pub(crate) fn new(url: &str, prefix: &str) -> Result<Self, LimitError> {
        Ok(Self {
            client: redis::Client::open(url).map_err(LimitError::Redis)?,
            prefix: prefix.to_owned(),
            nonce_count: redis::Script::new(NONCE_COUNT_LUA),
            failure: redis::Script::new(FAILURE_LUA),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            down_until_ms: std::sync::atomic::AtomicI64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// This thread's connection, opening it when there is none. Each worker thread has its
    /// own multiplexed connection, driven by its own runtime: a decision never crosses
    /// threads (on two cores the cross-thread wake-ups cost more than Redis itself).
    pub(crate) async fn connection(&self) -> Result<redis::aio::ConnectionManager, LimitError> {
        let cached = CONNECTIONS.with(|c| {
            c.borrow()
                .iter()
                .find(|(id, _)| *id == self.id)
                .map(|(_, conn)| conn.clone())
        });
        if let Some(c) = cached {
            return Ok(c);
        }
        if crate::now_millis() < self.down_until_ms.load(Ordering::Relaxed) {
            return Err(self.failed(LimitError::Down));
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let made = tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            self.client.get_connection_manager_with_config(config),
        )
        .await;
        let conn = match made {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(self.unreachable(LimitError::Redis(e))),
            Err(_) => return Err(self.unreachable(LimitError::Timeout)),
        };
        CONNECTIONS.with(|c| c.borrow_mut().push((self.id, conn.clone())));
        Ok(conn)
    }

    fn unreachable(&self, why: LimitError) -> LimitError {
        self.down_until_ms
            .store(crate::now_millis() + RECONNECT_PAUSE_MS, Ordering::Relaxed);
        self.failed(why)
    }

    fn failed(&self, why: LimitError) -> LimitError {
        self.errors.fetch_add(1, Ordering::Relaxed);
        why
    }

    /// Runs `f` on the connection with a deadline; a failure drops the connection so the
    /// next call makes a new one.
    pub(crate) async fn run<T, F, Fut>(&self, f: F) -> Result<T, LimitError>
    where
        F: FnOnce(redis::aio::ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        match tokio::time::timeout(REDIS_TIMEOUT, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.forget();
                }
                Err(self.failed(LimitError::Redis(e)))
            }
            Err(_) => {
                self.forget();
                Err(self.failed(LimitError::Timeout))
            }
        }
    }

    fn forget(&self) {
        CONNECTIONS.with(|c| c.borrow_mut().retain(|(id, _)| *id != self.id));
    }

    /// Digest: whether `nc` is higher than every count seen for `nonce` (then recorded,
    /// for `ttl_ms`), across every instance.
    pub(crate) async fn accept_nonce_count(
        &self,
        nonce: &str,
        nc: u32,
        ttl_ms: i64,
    ) -> Result<bool, LimitError> {
        let key = format!("{}dn:{nonce}", self.prefix);
        let script = &self.nonce_count;
        let ttl = ttl_ms.max(1);
        self.run(|mut c| async move {
            script
                .key(key)
                .arg(nc)
                .arg(ttl)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|v| v == 1)
    }

    /// Whether `mark` is used for the first time (then recorded for `ttl_ms`), across every
    /// instance: one `SET NX PX`.
    pub(crate) async fn first_use(
        &self,
        kind: &str,
        mark: &str,
        ttl_ms: i64,
    ) -> Result<bool, LimitError> {
        let key = format!("{}{kind}:{mark}", self.prefix);
        let ttl = ttl_ms.max(1);
        self.run(|mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .query_async::<Option<String>>(&mut c)
                .await
        })
        .await
        .map(|v| v.is_some())
    }

    /// Counts one failed attempt under the throttle key `name` across every instance.
    pub(crate) async fn count_failure(
        &self,
        name: &str,
        window_ms: i64,
        limit: u32,
    ) -> Result<i64, LimitError> {
        let key = format!("{}tf:{name}", self.prefix);
        let script = &self.failure;
        self.run(|mut c| async move {
            script
                .key(key)
                .arg(window_ms.max(1))
                .arg(limit)
                .arg(name)
                .arg(format!("{}{THROTTLE_CHANNEL}", self.prefix))
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
    }

    /// Applies the throttle blocks other instances publish, until `shutdown`; reconnects
    /// after a failure.
    pub(crate) async fn follow_blocks(
        self: Arc<Self>,
        throttle: Arc<crate::authn::throttle::Throttle>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        use futures_util::StreamExt;
        loop {
            let follow = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub
                    .subscribe(format!("{}{THROTTLE_CHANNEL}", self.prefix))
                    .await?;
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(text) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if let Some((ttl, name)) = text.split_once(' ')
                        && let Ok(ttl) = ttl.parse::<i64>()
                        && ttl > 0
                    {
                        throttle.block(name, crate::now_millis() + ttl);
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                r = follow => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "the throttle channel in Redis is unavailable; retrying");
                    }
                }
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Whether Redis answers `PING`.
    pub(crate) async fn ping(&self) -> bool {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .is_ok()
    }
}

/// Where the counts live.
#[derive(Debug)]
enum Backend {
    Local(Local),
    Redis {
        redis: Arc<Redis>,
        script: redis::Script,
    },
}

/// The rate limiter of every route.
#[derive(Debug)]
pub(crate) struct RateLimits {
    backend: Backend,
    /// Let requests through when Redis cannot be asked.
    pub fail_open: bool,
}

impl RateLimits {
    /// In-process counts.
    pub(crate) fn local() -> Self {
        Self {
            backend: Backend::Local(Local::default()),
            fail_open: false,
        }
    }

    /// Counts in `redis`, shared by every instance.
    pub(crate) fn redis(redis: Arc<Redis>, fail_open: bool) -> Self {
        Self {
            backend: Backend::Redis {
                redis,
                script: redis::Script::new(GCRA_LUA),
            },
            fail_open,
        }
    }

    /// The decision for one request of `key` on `route` under `limit`.
    pub(crate) async fn check(
        &self,
        route: &str,
        key: &str,
        limit: &Gcra,
    ) -> Result<Decision, LimitError> {
        match &self.backend {
            Backend::Local(l) => l.check(route, key, limit, crate::now_millis() * 1000),
            Backend::Redis { redis, script } => {
                let k = format!("{}rl:{route}\0{key}", redis.prefix);
                let (interval, tolerance) = (limit.interval_us, limit.tolerance_us());
                let v: Vec<i64> = redis
                    .run(|mut c| async move {
                        script
                            .key(k)
                            .arg(interval)
                            .arg(tolerance)
                            .invoke_async(&mut c)
                            .await
                    })
                    .await?;
                let get = |i: usize| v.get(i).copied().unwrap_or(0);
                Ok(Decision {
                    allowed: get(0) == 1,
                    remaining: u32::try_from(get(1)).unwrap_or(0),
                    reset_us: get(2),
                    retry_after_us: get(3),
                    tat_us: 0,
                })
            }
        }
    }

    /// Drops in-process keys whose budget is whole again (on a timer).
    pub(crate) fn prune(&self) {
        if let Backend::Local(l) = &self.backend {
            l.prune(crate::now_millis() * 1000);
        }
    }
}

/// In-process TATs, sharded.
#[derive(Debug)]
struct Local {
    shards: Vec<Mutex<HashMap<Box<str>, i64>>>,
    hasher: RandomState,
}

impl Default for Local {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Local {
    fn check(&self, route: &str, key: &str, g: &Gcra, now_us: i64) -> Result<Decision, LimitError> {
        let k = format!("{route}\0{key}");
        let i = usize::try_from(self.hasher.hash_one(&k) % SHARDS as u64).unwrap_or(0);
        let shard = self.shards.get(i).ok_or(LimitError::Full)?;
        let mut map = shard.lock().map_err(|_| LimitError::Full)?;
        let tat = map.get(k.as_str()).copied();
        let d = g.decide(tat, now_us);
        if d.allowed {
            if tat.is_none() && map.len() >= MAX_KEYS / SHARDS {
                map.retain(|_, t| *t > now_us);
                if map.len() >= MAX_KEYS / SHARDS {
                    return Err(LimitError::Full);
                }
            }
            map.insert(k.into_boxed_str(), d.tat_us);
        }
        Ok(d)
    }

    fn prune(&self, now_us: i64) {
        for s in &self.shards {
            if let Ok(mut m) = s.lock() {
                m.retain(|_, t| *t > now_us);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycard_core::Rate;

    #[test]
    fn local_counts_per_route_and_key() {
        let l = Local::default();
        let g = Gcra::new(
            Rate {
                count: 2,
                per: Duration::from_secs(1),
            },
            None,
        );
        let ok = |route, key| l.check(route, key, &g, 10_000_000).unwrap().allowed;
        assert!(ok("/a/", "alice") && ok("/a/", "alice"));
        assert!(!ok("/a/", "alice"));
        assert!(ok("/a/", "bob"), "another subject has its own budget");
        assert!(ok("/b/", "alice"), "another route too");
        l.prune(20_000_000);
        assert!(l.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }
}
