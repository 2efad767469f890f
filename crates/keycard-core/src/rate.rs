//! Rate limits with GCRA (the generic cell rate algorithm): exact at window edges, one
//! number of state per key — the theoretical arrival time (TAT) of the next request when
//! the budget is spent at the stated rate. A limit of `N` per period with burst `B` lets
//! `B` requests through at once, then one every `period / N`.
//!
//! The same arithmetic runs in-process and in Redis (the server's Lua script mirrors
//! [`Gcra::decide`]); times are microseconds.

use crate::Rate;

/// A rate and its burst, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// The emission interval: period / count.
    pub interval_us: i64,
    /// How many requests may arrive at once.
    pub burst: u32,
    /// The configured count (the `RateLimit-Limit` value).
    pub limit: u32,
}

/// One decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request goes ahead.
    pub allowed: bool,
    /// Requests that could go ahead right now after this one.
    pub remaining: u32,
    /// Until the budget is whole again (µs).
    pub reset_us: i64,
    /// When refused: until the next request would be allowed (µs).
    pub retry_after_us: i64,
    /// The TAT to store when allowed.
    pub tat_us: i64,
}

impl Gcra {
    /// `rate` with `burst` (default: the rate's count).
    pub fn new(rate: Rate, burst: Option<u32>) -> Self {
        let period = i64::try_from(rate.per.as_micros()).unwrap_or(i64::MAX);
        let count = i64::from(rate.count.max(1));
        Self {
            interval_us: (period / count).max(1),
            burst: burst.unwrap_or(rate.count).max(1),
            limit: rate.count,
        }
    }

    /// How far the TAT may run ahead of now.
    pub fn tolerance_us(&self) -> i64 {
        self.interval_us.saturating_mul(i64::from(self.burst))
    }

    /// The decision for a request at `now_us` with stored TAT `tat_us` (none: a full budget).
    pub fn decide(&self, tat_us: Option<i64>, now_us: i64) -> Decision {
        let tat = tat_us.unwrap_or(now_us).max(now_us);
        let next = tat.saturating_add(self.interval_us);
        let tolerance = self.tolerance_us();
        if next - now_us > tolerance {
            return Decision {
                allowed: false,
                remaining: 0,
                reset_us: tat - now_us,
                retry_after_us: next - now_us - tolerance,
                tat_us: tat,
            };
        }
        let left = (tolerance - (next - now_us)) / self.interval_us;
        Decision {
            allowed: true,
            remaining: u32::try_from(left).unwrap_or(u32::MAX),
            reset_us: next - now_us,
            retry_after_us: 0,
            tat_us: next,
        }
    }
}

/// Whole seconds, rounded up (header values).
pub fn ceil_secs(us: i64) -> u64 {
    u64::try_from((us.max(0) + 999_999) / 1_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limit(count: u32, secs: u64, burst: Option<u32>) -> Gcra {
        Gcra::new(
            Rate {
                count,
                per: Duration::from_secs(secs),
            },
            burst,
        )
    }

    /// Runs `n` requests at `now`; returns how many were allowed and the last TAT.
    fn burst(g: &Gcra, mut tat: Option<i64>, now: i64, n: u32) -> (u32, Option<i64>) {
        let mut ok = 0;
        for _ in 0..n {
            let d = g.decide(tat, now);
            if d.allowed {
                ok += 1;
                tat = Some(d.tat_us);
            }
        }
        (ok, tat)
    }

    #[test]
    fn exactly_n_in_a_burst_then_one_per_interval() {
        let g = limit(10, 1, None);
        let t0 = 1_000_000_000;
        let (ok, tat) = burst(&g, None, t0, 25);
        assert_eq!(ok, 10);
        // Refused now, with the wait to the next slot.
        let d = g.decide(tat, t0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_us, 100_000);
        assert_eq!(d.reset_us, 1_000_000);
        // 100 ms later exactly one more; a second later the whole budget.
        assert_eq!(burst(&g, tat, t0 + 100_000, 5).0, 1);
        assert_eq!(burst(&g, tat, t0 + 1_000_000, 25).0, 10);
    }

    #[test]
    fn remaining_counts_down_and_burst_is_configurable() {
        let g = limit(100, 60, Some(3));
        let t0 = 5_000_000;
        let d1 = g.decide(None, t0);
        let d2 = g.decide(Some(d1.tat_us), t0);
        let d3 = g.decide(Some(d2.tat_us), t0);
        let d4 = g.decide(Some(d3.tat_us), t0);
        assert_eq!(
            (d1.remaining, d2.remaining, d3.remaining, d4.allowed),
            (2, 1, 0, false)
        );
        assert_eq!(d4.retry_after_us, 600_000);
        assert_eq!(g.limit, 100);
    }

    #[test]
    fn no_window_edge_doubling() {
        // A fixed window would allow 2N across an edge; GCRA allows N + what refilled.
        let g = limit(10, 1, None);
        let (ok1, tat) = burst(&g, None, 999_000, 10);
        let (ok2, _) = burst(&g, tat, 1_001_000, 10);
        assert_eq!(ok1, 10);
        assert_eq!(ok2, 0);
        assert_eq!(ceil_secs(100_001), 1);
        assert_eq!(ceil_secs(1_000_001), 2);
        assert_eq!(ceil_secs(-5), 0);
    }
}
