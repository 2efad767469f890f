//! `/_keycard/metrics`: counters and histograms in the Prometheus text format (0.0.4).
//!
//! Every series is a fixed atomic slot chosen by a dense index (method, outcome, reason,
//! endpoint, status class, route): recording is one relaxed `fetch_add` on the recording
//! thread's own copy ([`crate::shard::Striped`]: no cache line shared between cores), with
//! no map, no lock and no allocation on the request path; a scrape sums the copies. Labels come only from closed sets — the
//! methods, outcomes and reason codes, keycard's own endpoints, the configured route
//! prefixes — so no label can carry a secret, a subject or any other unbounded value.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keycard_core::{Method, Outcome, Reason};

use crate::shard::Striped;

/// The `method` label of a decision or verification with no recognised credential.
const NO_METHOD: usize = Method::ALL.len();
const METHODS: usize = Method::ALL.len() + 1;
/// Reason slots: every [`Reason`], then "none" (success), then "other" (a code keycard
/// does not know, which no current caller produces).
const REASON_NONE: usize = Reason::ALL.len();
const REASON_OTHER: usize = Reason::ALL.len() + 1;
const REASONS: usize = Reason::ALL.len() + 2;
const OUTCOMES: usize = Outcome::ALL.len();

/// The parts of keycard a request can reach: the `endpoint` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// A request forwarded to an upstream (or refused on its way there).
    Gateway,
    /// `/_keycard/verify` (forward-auth).
    Verify,
    /// `/oauth2/*`, discovery, the login and consent pages.
    OAuth,
    /// `/.well-known/jwks.json`.
    Jwks,
    /// `/_keycard/admin/v1/*`.
    Admin,
    /// `/_keycard/metrics`.
    Metrics,
    /// `/_keycard/health` and `/_keycard/ready`.
    Health,
    /// Anything else under `/_keycard/` (404).
    Other,
}

impl Endpoint {
    const ALL: [Endpoint; 8] = [
        Endpoint::Gateway,
        Endpoint::Verify,
        Endpoint::OAuth,
        Endpoint::Jwks,
        Endpoint::Admin,
        Endpoint::Metrics,
        Endpoint::Health,
        Endpoint::Other,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Endpoint::Gateway => "gateway",
            Endpoint::Verify => "verify",
            Endpoint::OAuth => "oauth",
            Endpoint::Jwks => "jwks",
            Endpoint::Admin => "admin",
            Endpoint::Metrics => "metrics",
            Endpoint::Health => "health",
            Endpoint::Other => "other",
        }
    }
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upper bounds (seconds) of the verification histogram: cached API keys take
/// microseconds, argon2id tens of milliseconds.
const VERIFY_BOUNDS: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Upper bounds (seconds) of the upstream histogram (time to the upstream's headers).
const UPSTREAM_BOUNDS: [f64; 15] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram over fixed bounds: per-bucket counts (not cumulative; summed when rendered),
/// the count and the sum in nanoseconds, each thread writing its own shard.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds_ns: Vec<u64>,
    bounds: &'static [f64],
    /// The buckets (one more for +Inf), then the count, then the sum.
    cells: Striped,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds_ns: bounds.iter().map(|b| (b * 1e9) as u64).collect(),
            bounds,
            cells: Striped::new(bounds.len() + 3),
        }
    }

    fn count_cell(&self) -> usize {
        self.bounds.len() + 1
    }

    fn sum_cell(&self) -> usize {
        self.bounds.len() + 2
    }

    /// Records one observation.
    pub(crate) fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self
            .bounds_ns
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(self.bounds_ns.len());
        self.cells.add(i, 1);
        self.cells.add(self.count_cell(), 1);
        self.cells.add(self.sum_cell(), ns);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.cells.get(i);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.cells.get(self.bounds.len());
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let sum = self.cells.get(self.sum_cell()) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(
            out,
            "{name}_count{} {}",
            braces(labels),
            self.cells.get(self.count_cell())
        );
    }
}

/// How much a metrics page tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Every reason code: `server.metrics_listen`, a listener of the operator's.
    Full,
    /// On the listener the public reaches: the reasons that tell an unknown user from a
    /// wrong password, or a revoked key from an unknown one, are one `invalid_credential`.
    Public,
}

/// The reasons [`Detail::Public`] counts as one: each would tell a caller something about a
/// credential it does not hold (that the user exists, the key did once, the password was
/// right but not the second factor).
const INVALID_CREDENTIAL: [Reason; 6] = [
    Reason::UnknownCredential,
    Reason::BadPassword,
    Reason::Revoked,
    Reason::Expired,
    Reason::Disabled,
    Reason::BadTotp,
];

/// Every metric keycard keeps. Shared by the listener, the authenticator and the audit sink.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// `[endpoint][status class]`.
    requests: Striped,
    /// `[method][outcome][reason]`.
    decisions: Striped,
    /// Verification time by method.
    verify: Vec<Histogram>,
    /// Upstream time by route (index as in `routes`).
    upstream: Vec<Histogram>,
    routes: Vec<String>,
    store_errors: AtomicU64,
    upstream_errors: AtomicU64,
}

impl Metrics {
    /// Metrics for a deployment whose routes have these prefixes (the `route` label).
    pub fn new(routes: Vec<String>) -> Self {
        Self {
            started: Instant::now(),
            requests: Striped::new(Endpoint::ALL.len() * STATUS_CLASSES.len()),
            decisions: Striped::new(METHODS * OUTCOMES * REASONS),
            verify: (0..METHODS)
                .map(|_| Histogram::new(&VERIFY_BOUNDS))
                .collect(),
            upstream: routes
                .iter()
                .map(|_| Histogram::new(&UPSTREAM_BOUNDS))
                .collect(),
            routes,
            store_errors: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
        }
    }

    /// Counts an answered request.
    pub fn request(&self, endpoint: Endpoint, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.requests
            .add(endpoint as usize * STATUS_CLASSES.len() + class, 1);
    }

    /// Counts a decision (one per audit event).
    pub fn decision(&self, method: Option<Method>, outcome: Outcome, reason: Option<&str>) {
        let m = method.map_or(NO_METHOD, Method::index);
        let r = match reason {
            None => REASON_NONE,
            Some(code) => Reason::from_code(code).map_or(REASON_OTHER, Reason::index),
        };
        self.decisions
            .add((m * OUTCOMES + outcome.index()) * REASONS + r, 1);
    }

    /// Records how long verification took, by the method of the presented credential.
    pub fn verified(&self, method: Option<Method>, took: Duration) {
        if let Some(h) = self.verify.get(method.map_or(NO_METHOD, Method::index)) {
            h.observe(took);
        }
    }

    /// Records how long route `route` (its index) took to answer with headers.
    pub fn upstream(&self, route: usize, took: Duration) {
        if let Some(h) = self.upstream.get(route) {
            h.observe(took);
        }
    }

    /// Counts an upstream that failed or timed out.
    pub fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed store operation.
    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition. `gauges` are read at scrape time. `detail`: every reason code
    /// (the metrics listener), else the reasons that tell credentials apart from each other
    /// counted as one (see [`Detail::Public`]).
    pub fn render(
        &self,
        gauges: &Gauges,
        caches: &[(&'static str, u64, u64)],
        detail: Detail,
    ) -> String {
        let mut out = String::with_capacity(16 * 1024);
        header(
            &mut out,
            "keycard_http_requests_total",
            "counter",
            "Requests answered, by keycard endpoint and status class.",
        );
        for (e, endpoint) in Endpoint::ALL.iter().enumerate() {
            for (c, class) in STATUS_CLASSES.iter().enumerate() {
                let n = self.requests.get(e * STATUS_CLASSES.len() + c);
                if n > 0 || (*class == "2xx" && *endpoint == Endpoint::Gateway) {
                    let _ = writeln!(
                        out,
                        "keycard_http_requests_total{{endpoint=\"{}\",code_class=\"{class}\"}} {n}",
                        endpoint.as_str()
                    );
                }
            }
        }
        header(
            &mut out,
            "keycard_decisions_total",
            "counter",
            "Authentication decisions (one per audit event), by method, outcome and reason.",
        );
        for m in 0..METHODS {
            let method = Method::ALL.get(m).map_or("none", |m| m.as_str());
            for (o, outcome) in Outcome::ALL.iter().enumerate() {
                let mut merged = 0;
                for r in 0..REASONS {
                    let n = self.decisions.get((m * OUTCOMES + o) * REASONS + r);
                    if detail == Detail::Public
                        && Reason::ALL
                            .get(r)
                            .is_some_and(|r| INVALID_CREDENTIAL.contains(r))
                    {
                        merged += n;
                        continue;
                    }
                    // Success by method is always shown (zero included), so a dashboard's
                    // series exist from the start; refusals appear when they happen.
                    let always = *outcome == Outcome::Success && r == REASON_NONE && m < NO_METHOD;
                    if n == 0 && !always {
                        continue;
                    }
                    let reason = match Reason::ALL.get(r) {
                        Some(r) => r.as_str(),
                        None if r == REASON_NONE => "none",
                        None => "other",
                    };
                    let _ = writeln!(
                        out,
                        "keycard_decisions_total{{method=\"{method}\",outcome=\"{}\",reason=\"{reason}\"}} {n}",
                        outcome.as_str()
                    );
                }
                if merged > 0 {
                    let _ = writeln!(
                        out,
                        "keycard_decisions_total{{method=\"{method}\",outcome=\"{}\",reason=\"invalid_credential\"}} {merged}",
                        outcome.as_str()
                    );
                }
            }
        }
        header(
            &mut out,
            "keycard_verification_duration_seconds",
            "histogram",
            "Time to verify a request's credential, by method (none: no credential recognised).",
        );
        for (m, h) in self.verify.iter().enumerate() {
            let method = Method::ALL.get(m).map_or("none", |m| m.as_str());
            h.render(
                &mut out,
                "keycard_verification_duration_seconds",
                &format!("method=\"{method}\""),
            );
        }
        header(
            &mut out,
            "keycard_upstream_duration_seconds",
            "histogram",
            "Time from forwarding a request to the upstream's response headers, by route.",
        );
        for (route, h) in self.routes.iter().zip(&self.upstream) {
            h.render(
                &mut out,
                "keycard_upstream_duration_seconds",
                &format!("route=\"{}\"", escape_label(route)),
            );
        }
        counter(
            &mut out,
            "keycard_upstream_errors_total",
            "Upstream requests that failed (502) or timed out (504).",
            self.upstream_errors.load(Ordering::Relaxed),
        );
        header(
            &mut out,
            "keycard_cache_requests_total",
            "counter",
            "Credential cache lookups, by cache and result (hit or miss).",
        );
        for (name, hits, misses) in caches {
            let _ = writeln!(
                out,
                "keycard_cache_requests_total{{cache=\"{name}\",result=\"hit\"}} {hits}"
            );
            let _ = writeln!(
                out,
                "keycard_cache_requests_total{{cache=\"{name}\",result=\"miss\"}} {misses}"
            );
        }
        gauge(
            &mut out,
            "keycard_audit_queue_depth",
            "Audit events queued and not yet written.",
            gauges.audit_queue as f64,
        );
        counter(
            &mut out,
            "keycard_store_errors_total",
            "Store operations that failed or timed out (verification reads, the change feed).",
            self.store_errors.load(Ordering::Relaxed) + gauges.feed_errors,
        );
        counter(
            &mut out,
            "keycard_redis_errors_total",
            "Redis operations that failed (rate limits, replay caches, throttle).",
            gauges.redis_errors,
        );
        gauge(
            &mut out,
            "keycard_store_up",
            "1 when the change feed is fresh (the store answers), else 0.",
            if gauges.store_up { 1.0 } else { 0.0 },
        );
        gauge(
            &mut out,
            "keycard_uptime_seconds",
            "Seconds since this instance started.",
            self.started.elapsed().as_secs_f64(),
        );
        out
    }
}

/// Values read when scraped.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// The audit queue's depth.
    pub audit_queue: usize,
    /// Whether the change feed is fresh.
    pub store_up: bool,
    /// Change-feed reads that failed.
    pub feed_errors: u64,
    /// Redis operations that failed.
    pub redis_errors: u64,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {v}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {v}");
}

/// A label value as the text format wants it (`\`, `"` and newlines escaped).
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_land_in_their_own_series() {
        let m = Metrics::new(vec!["/api/".into()]);
        m.decision(Some(Method::ApiKey), Outcome::Success, None);
        m.decision(Some(Method::ApiKey), Outcome::Success, None);
        m.decision(None, Outcome::Failure, Some("no_credential"));
        m.decision(Some(Method::Basic), Outcome::Failure, Some("bad_password"));
        m.decision(Some(Method::Hmac), Outcome::Failure, Some("not-a-code"));
        let text = m.render(
            &Gauges {
                audit_queue: 3,
                store_up: true,
                feed_errors: 0,
                redis_errors: 2,
            },
            &[("api_key", 5, 1)],
            Detail::Full,
        );
        assert!(text.contains(
            "keycard_decisions_total{method=\"api_key\",outcome=\"success\",reason=\"none\"} 2"
        ));
        assert!(text.contains(
            "keycard_decisions_total{method=\"none\",outcome=\"failure\",reason=\"no_credential\"} 1"
        ));
        assert!(text.contains(
            "keycard_decisions_total{method=\"basic\",outcome=\"failure\",reason=\"bad_password\"} 1"
        ));
        assert!(text.contains(
            "keycard_decisions_total{method=\"hmac\",outcome=\"failure\",reason=\"other\"} 1"
        ));
        assert!(text.contains(
            "keycard_decisions_total{method=\"mtls\",outcome=\"success\",reason=\"none\"} 0"
        ));
        let public = m.render(
            &Gauges {
                audit_queue: 3,
                store_up: true,
                feed_errors: 0,
                redis_errors: 2,
            },
            &[],
            Detail::Public,
        );
        m.decision(
            Some(Method::Basic),
            Outcome::Failure,
            Some("unknown_credential"),
        );
        let public_after = m.render(
            &Gauges {
                audit_queue: 0,
                store_up: true,
                feed_errors: 0,
                redis_errors: 0,
            },
            &[],
            Detail::Public,
        );
        assert!(!public.contains("bad_password") && !public_after.contains("unknown_credential"));
        assert!(public.contains(
            "keycard_decisions_total{method=\"basic\",outcome=\"failure\",reason=\"invalid_credential\"} 1"
        ));
        assert!(public_after.contains(
            "keycard_decisions_total{method=\"basic\",outcome=\"failure\",reason=\"invalid_credential\"} 2"
        ));
        assert!(public.contains("reason=\"no_credential\"} 1"));
        assert!(text.contains("keycard_audit_queue_depth 3"));
        assert!(text.contains("keycard_redis_errors_total 2"));
        assert!(text.contains("keycard_cache_requests_total{cache=\"api_key\",result=\"hit\"} 5"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new(vec!["/a\"b/".into()]);
        m.verified(Some(Method::ApiKey), Duration::from_micros(3));
        m.verified(Some(Method::ApiKey), Duration::from_millis(40));
        m.verified(Some(Method::ApiKey), Duration::from_secs(5));
        m.upstream(0, Duration::from_millis(2));
        m.upstream(7, Duration::from_millis(2)); // no such route: ignored
        let text = m.render(
            &Gauges {
                audit_queue: 0,
                store_up: false,
                feed_errors: 1,
                redis_errors: 0,
            },
            &[],
            Detail::Full,
        );
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .map(|l| l.rsplit(' ').next().unwrap_or("").to_owned())
        };
        let v = "keycard_verification_duration_seconds_bucket{method=\"api_key\",";
        assert_eq!(line(&format!("{v}le=\"0.00001\"}}")).as_deref(), Some("1"));
        assert_eq!(line(&format!("{v}le=\"0.05\"}}")).as_deref(), Some("2"));
        assert_eq!(line(&format!("{v}le=\"1\"}}")).as_deref(), Some("2"));
        assert_eq!(line(&format!("{v}le=\"+Inf\"}}")).as_deref(), Some("3"));
        assert_eq!(
            line("keycard_verification_duration_seconds_count{method=\"api_key\"}").as_deref(),
            Some("3")
        );
        assert!(text.contains("keycard_upstream_duration_seconds_count{route=\"/a\\\"b/\"} 1"));
        assert!(text.contains("keycard_store_up 0"));
        assert!(text.contains("keycard_store_errors_total 1"));
    }
}
