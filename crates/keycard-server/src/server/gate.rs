//! The one verification step every shape of keycard runs — the gateway, forward-auth, the
//! admin API and the embedded tower layer ([`crate::layer`]): authenticate against the
//! route's policy, apply its rate limit, write the audit event and the metrics, and turn a
//! refusal into the reference §6 answer. [`Gate::check`] is that step.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Response};
use keycard_core::route::RoutePolicy;
use keycard_core::{Outcome, Principal, Refusal};

use crate::audit::{AuditSink, Record};
use crate::authn::{Authenticator, RequestFacts};
use crate::clock::now_millis;
use crate::http::answer::{self, Challenger};
use crate::upstream::body::Body;

/// `Authentication-Info` (RFC 7615), carrying Digest's `rspauth`.
const AUTHENTICATION_INFO: http::HeaderName = http::HeaderName::from_static("authentication-info");

/// What a request must get through: the authenticator, the audit trail and the challenges.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) authn: Authenticator,
    pub(crate) audit: AuditSink,
    pub(crate) challenger: Challenger,
}

/// A request that passed.
#[derive(Debug)]
pub(crate) struct Passed {
    /// Who sent it (`None` on a public route).
    pub principal: Option<Principal>,
    quota: Option<Quota>,
    authentication_info: Option<String>,
}

impl Passed {
    /// Adds what the answer tells the client: Digest's `Authentication-Info`, and
    /// `RateLimit-*` when the route is limited.
    pub(crate) fn set_headers(&self, h: &mut HeaderMap) {
        if let Some(v) = self
            .authentication_info
            .as_deref()
            .and_then(|i| HeaderValue::from_str(i).ok())
        {
            h.insert(AUTHENTICATION_INFO, v);
        }
        set_quota(h, self.quota);
    }
}

impl Gate {
    /// Authenticates `facts` against `policy`, applies the rate limit, records the audit
    /// event (not on public routes) and the metrics. `Err` is the answer to send.
    pub(crate) async fn check(
        &self,
        policy: &RoutePolicy,
        facts: &RequestFacts<'_>,
        request_id: &str,
    ) -> Result<Passed, Response<Body>> {
        let began = (!policy.public).then(std::time::Instant::now);
        let attempt = self.authn.authenticate(policy, facts).await;
        if let Some(began) = began {
            self.observe_verification(&attempt.result, began);
        }
        let (result, quota) = self.limit(policy, facts.ip, attempt.result).await;
        if let Some(began) = began {
            self.record(request_id, policy, facts, &result, attempt.at_ms, began);
        }
        match result {
            Ok(principal) => Ok(Passed {
                principal,
                quota,
                authentication_info: attempt.authentication_info,
            }),
            Err(refusal) => Err(self
                .challenger
                .refusal(&refusal, policy, attempt.token_presented)),
        }
    }

    fn observe_verification(
        &self,
        result: &Result<Option<Principal>, Refusal>,
        began: std::time::Instant,
    ) {
        let method = match result {
            Ok(p) => p.as_ref().map(Principal::method),
            Err(r) => r.method(),
        };
        self.authn.metrics().verified(method, began.elapsed());
    }

    /// The route's rate limit, for a request that passed authentication: per subject, or
    /// per client address on a public route.
    async fn limit(
        &self,
        policy: &RoutePolicy,
        ip: IpAddr,
        result: Result<Option<Principal>, Refusal>,
    ) -> (Result<Option<Principal>, Refusal>, Option<Quota>) {
        let Some(limit) = policy.rate_limit.as_ref().map(|g| g.limit) else {
            return (result, None);
        };
        let Ok(principal) = result else {
            return (result, None);
        };
        let key = match &principal {
            Some(p) => rate_key(p),
            None => format!("ip\0{ip}"),
        };
        match self
            .authn
            .rate_limit(policy, &key, principal.as_ref())
            .await
        {
            Ok(d) => (Ok(principal), d.map(|d| Quota { limit, decision: d })),
            Err(r) => (Err(r), None),
        }
    }

    fn record(
        &self,
        request_id: &str,
        policy: &RoutePolicy,
        facts: &RequestFacts<'_>,
        result: &Result<Option<Principal>, Refusal>,
        at_ms: i64,
        began: std::time::Instant,
    ) {
        let (outcome, method, reason, subject, credential_id) = match result {
            Ok(Some(p)) => (
                Outcome::Success,
                Some(p.method()),
                None,
                Some(p.subject()),
                Some(p.credential_id()),
            ),
            Ok(None) => return,
            Err(r) => {
                let (outcome, subject, cred) = match r {
                    Refusal::Forbidden { principal, .. } => (
                        Outcome::Forbidden,
                        Some(principal.subject()),
                        Some(principal.credential_id()),
                    ),
                    Refusal::Unauthorized {
                        subject,
                        credential_id,
                        ..
                    } => (
                        Outcome::Failure,
                        subject.as_deref(),
                        credential_id.as_deref(),
                    ),
                    Refusal::Throttled { subject, .. } => {
                        (Outcome::Throttled, subject.as_deref(), None)
                    }
                    Refusal::RateLimited { principal, .. } => (
                        Outcome::Throttled,
                        principal.as_ref().map(Principal::subject),
                        principal.as_ref().map(Principal::credential_id),
                    ),
                    _ => (Outcome::Failure, None, None),
                };
                (
                    outcome,
                    r.method(),
                    Some(r.reason().as_str()),
                    subject,
                    cred,
                )
            }
        };
        self.audit.record_at(
            began,
            &Record {
                ts_ms: if at_ms > 0 { at_ms } else { now_millis() },
                request_id,
                route: Some(&policy.prefix),
                method,
                outcome,
                reason,
                subject,
                credential_id,
                ip: Some(facts.ip),
                cert_source: facts.cert.map(|c| c.source),
                operation: None,
            },
        );
    }
}

/// Whose budget a principal spends: its method, issuer and subject, so that names from
/// different sources never share one (a JWT whose `sub` is `alice` is not user alice).
fn rate_key(p: &Principal) -> String {
    format!(
        "{}\0{}\0{}",
        p.method().as_str(),
        p.issuer().unwrap_or(""),
        p.subject()
    )
}

/// A rate-limit decision to report on a successful answer.
#[derive(Debug, Clone, Copy)]
struct Quota {
    limit: u32,
    decision: keycard_core::rate::Decision,
}

/// `RateLimit-Limit`, `-Remaining` and `-Reset` on an answer that went through.
fn set_quota(h: &mut http::HeaderMap, quota: Option<Quota>) {
    if let Some(q) = quota {
        h.insert(answer::RATELIMIT_LIMIT, HeaderValue::from(q.limit));
        h.insert(
            answer::RATELIMIT_REMAINING,
            HeaderValue::from(q.decision.remaining),
        );
        h.insert(
            answer::RATELIMIT_RESET,
            HeaderValue::from(keycard_core::rate::ceil_secs(q.decision.reset_us)),
        );
    }
}
