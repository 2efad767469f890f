//! The `api_key` method: keys made by `keycard key create`, found by their keyed hash (cache,
//! else store). Shape and prefix are checked first, the checksum only on the way to the store,
//! and a key is judged at the request's time against a cache the feed keeps fresh.

use keycard_core::api_key::{self, CredentialRecord};
use keycard_core::{Method, Principal, Reason, Refusal};
use keycard_store::ApiKeyRow;

use super::base::{Base, stored_record};
use crate::state::cache::{Cached, KeyLookup};

/// Verifies the API key `key` at `now_ms`.
pub(super) async fn verify(base: &Base, key: &str, now_ms: i64) -> Result<Principal, Refusal> {
    let method = Some(Method::ApiKey);
    let now = now_ms.div_euclid(1000);
    let malformed = |r| Refusal::unauthorized(r, method);
    // Length and prefix first: nothing else is hashed.
    api_key::check_shape(key).map_err(malformed)?;
    let handle = api_key::lookup_handle(&base.hasher, key);
    // Fails closed (503) when the cache may be stale (judged at the request's time, read
    // once); a use is noted only when it passes.
    let verify = |record: &CredentialRecord| {
        if !base.feed.is_fresh(now_ms) {
            return Err(Refusal::Unavailable { method });
        }
        api_key::verify(record, now)
    };
    match base.cache.api_key_local(&handle, now, verify) {
        // A cached key was issued by keycard, so its checksum holds: checked only on the
        // way to the store, which a mistyped or truncated key never reaches.
        KeyLookup::Known(verdict) => verdict,
        KeyLookup::Unknown => {
            base.require_fresh(method)?;
            Err(Refusal::unauthorized(Reason::UnknownCredential, method))
        }
        KeyLookup::Miss => {
            api_key::check_format(key).map_err(malformed)?;
            base.require_fresh(method)?;
            let generation = base.cache.generation();
            let row = base
                .read_store(
                    method,
                    |store| async move { store.find_api_key(&handle).await },
                )
                .await?;
            let record = row.and_then(record_from_row);
            match base.cache.insert_api_key(handle, record, generation) {
                Cached::Known(entry) => base.cache.verify_entry(&entry, now, verify),
                Cached::Unknown => Err(Refusal::unauthorized(Reason::UnknownCredential, method)),
            }
        }
    }
}

fn record_from_row(r: ApiKeyRow) -> Option<CredentialRecord> {
    stored_record(
        r.id,
        r.subject,
        &r.scopes,
        r.expires_at,
        r.revoked_at,
        r.subject_disabled,
    )
}
