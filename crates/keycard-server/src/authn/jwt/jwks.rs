//! Keys of external JWT issuers (`[[jwt.issuers]]`): from a JWKS file read at start, or a
//! JWKS URL fetched over HTTP(S) and cached per `Cache-Control: max-age` (bounded to
//! `MIN_MAX_AGE`..`MAX_MAX_AGE`, default `DEFAULT_MAX_AGE`). An unknown `kid` triggers
//! a refetch at most once per [`FORCED_REFETCH_EVERY`] per issuer; a failed fetch keeps the
//! last good set.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::header::CACHE_CONTROL;
use http::{Request, Uri};
use http_body_util::{BodyExt, Limited};
use keycard_core::jwt::{KeySet, Rules};

use crate::clock::now_millis;
use crate::config::{JwksSource, JwtIssuerSettings};
use crate::upstream::body::Body;
use crate::upstream::client::UpstreamClient;

const MIN_MAX_AGE: Duration = Duration::from_secs(60);
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
/// After a failed fetch, try again this soon.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// An unknown `kid` refetches at most this often per issuer.
pub(crate) const FORCED_REFETCH_EVERY: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One issuer: its rules and its current keys.
#[derive(Debug)]
pub(crate) struct Issuer {
    /// Its settings.
    pub settings: JwtIssuerSettings,
    /// What its tokens must satisfy.
    pub rules: Rules,
    keys: RwLock<Arc<KeySet>>,
    refresh_at_ms: AtomicI64,
    last_forced_ms: AtomicI64,
}

impl Issuer {
    /// The current key set.
    pub(crate) fn keys(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|_| Arc::new(KeySet::default()))
    }

    fn set_keys(&self, keys: KeySet) {
        if let Ok(mut slot) = self.keys.write() {
            *slot = Arc::new(keys);
        }
    }

    /// Whether an unknown `kid` may refetch now (and, if so, claims the slot).
    pub(crate) fn may_force_refetch(&self, now_ms: i64) -> bool {
        let last = self.last_forced_ms.load(Ordering::Acquire);
        let every = i64::try_from(FORCED_REFETCH_EVERY.as_millis()).unwrap_or(i64::MAX);
        matches!(self.settings.jwks, JwksSource::Url(_))
            && now_ms - last >= every
            && self
                .last_forced_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// Every configured issuer.
#[derive(Debug, Default)]
pub(crate) struct Issuers {
    list: Vec<Arc<Issuer>>,
}

/// A JWKS file that cannot be used (stops start-up).
#[derive(Debug, thiserror::Error)]
#[error("jwt issuer {issuer}: cannot use the JWKS file {path}: {why}")]
pub struct JwksFileError {
    issuer: String,
    path: String,
    why: String,
}

impl Issuers {
    /// Reads every JWKS file (an unreadable one is an error) and fetches every JWKS URL (a
    /// failure is logged: its tokens are refused until a fetch succeeds).
    pub(crate) async fn load(
        settings: &[JwtIssuerSettings],
        client: &UpstreamClient,
    ) -> Result<Self, JwksFileError> {
        let mut list = Vec::new();
        for s in settings {
            let issuer = Arc::new(Issuer {
                rules: Rules {
                    issuer: s.issuer.clone(),
                    audiences: s.audiences.clone(),
                    leeway_secs: i64::try_from(s.leeway.as_secs()).unwrap_or(30),
                    subject_claim: s.subject_claim.clone(),
                    scopes_claim: s.scopes_claim.clone(),
                },
                settings: s.clone(),
                keys: RwLock::new(Arc::new(KeySet::default())),
                refresh_at_ms: AtomicI64::new(0),
                last_forced_ms: AtomicI64::new(0),
            });
            match &s.jwks {
                JwksSource::File(path) => {
                    let err = |why: String| JwksFileError {
                        issuer: s.issuer.clone(),
                        path: path.display().to_string(),
                        why,
                    };
                    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
                    let keys = KeySet::from_json(&text).map_err(|_| err("not a JWKS".into()))?;
                    if keys.keys().is_empty() {
                        return Err(err(
                            "no usable signature key (ES256, EdDSA or RS256 ≥ 2048 bits)".into(),
                        ));
                    }
                    issuer.set_keys(keys);
                    issuer.refresh_at_ms.store(i64::MAX, Ordering::Release);
                }
                JwksSource::Url(_) => refresh(&issuer, client).await,
            }
            list.push(issuer);
        }
        Ok(Self { list })
    }

    /// The issuer whose `issuer` is `iss`.
    pub(crate) fn find(&self, iss: &str) -> Option<&Arc<Issuer>> {
        self.list.iter().find(|i| i.settings.issuer == iss)
    }

    /// Whether any issuer is configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Refetches every URL issuer whose cache time has passed.
    pub(crate) async fn refresh_due(&self, client: &UpstreamClient) {
        let now = now_millis();
        for i in &self.list {
            if i.refresh_at_ms.load(Ordering::Acquire) <= now {
                refresh(i, client).await;
            }
        }
    }
}

/// Fetches an issuer's JWKS now; on failure keeps the last good set and retries soon.
pub(crate) async fn refresh(issuer: &Issuer, client: &UpstreamClient) {
    let JwksSource::Url(uri) = &issuer.settings.jwks else {
        return;
    };
    let next = match tokio::time::timeout(FETCH_TIMEOUT, fetch(client, uri)).await {
        Ok(Ok((keys, max_age))) => {
            tracing::info!(issuer = %issuer.settings.issuer, keys = keys.keys().len(), "JWKS fetched");
            issuer.set_keys(keys);
            max_age
        }
        Ok(Err(why)) => {
            tracing::warn!(issuer = %issuer.settings.issuer, url = %uri, %why, "JWKS fetch failed; keeping the last good keys");
            RETRY_AFTER_FAILURE
        }
        Err(_) => {
            tracing::warn!(issuer = %issuer.settings.issuer, url = %uri, "JWKS fetch timed out; keeping the last good keys");
            RETRY_AFTER_FAILURE
        }
    };
    let ms = i64::try_from(next.as_millis()).unwrap_or(i64::MAX);
    issuer
        .refresh_at_ms
        .store(now_millis().saturating_add(ms), Ordering::Release);
}

async fn fetch(client: &UpstreamClient, uri: &Uri) -> Result<(KeySet, Duration), String> {
    let req = Request::get(uri.clone())
        .header(http::header::ACCEPT, "application/json")
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let max_age = resp
        .headers()
        .get(CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(max_age)
        .unwrap_or(DEFAULT_MAX_AGE)
        .clamp(MIN_MAX_AGE, MAX_MAX_AGE);
    let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = std::str::from_utf8(&body).map_err(|_| "not UTF-8".to_owned())?;
    let keys = KeySet::from_json(text).map_err(|_| "not a JWKS".to_owned())?;
    // A set with no key keycard can use (empty, or only kinds it does not verify) would
    // refuse every token of the issuer: a failed fetch, so the last good set stays.
    if keys.keys().is_empty() {
        return Err("no usable key in the JWKS".to_owned());
    }
    Ok((keys, max_age))
}

/// `max-age=N` of a `Cache-Control` value.
fn max_age(cc: &str) -> Option<Duration> {
    cc.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("max-age").then(|| {
            v.trim()
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs)
        })?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=x"), None);
    }
}
