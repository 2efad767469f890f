//! Basic and Digest credentials and Digest nonces from an untrusted client: parsing must
//! never panic, a parsed Digest credential must respect the limits the parser promises, and
//! a nonce this server did not mint is never taken for one it did.
#![no_main]

use keycard_core::digest::{self, NonceKey, NonceState, RequestFacts};
use keycard_core::{MasterKey, basic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = basic::decode(text);
    if let Some(r) = digest::parse(text) {
        assert_eq!(r.nc_text.len(), 8);
        assert!(!r.username.is_empty() && !r.cnonce.is_empty());
        let facts = RequestFacts {
            method: "POST",
            body_hash: Some("00"),
        };
        let _ = digest::response_matches(&r, "00", facts);
        let _ = digest::authentication_info(&r, "00", None);
    }
    // A fixed key: the fuzzer would need to forge HMAC-SHA256 to get Fresh or Stale.
    let key = NonceKey::new(
        MasterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .map(|k| k.nonce_key())
            .unwrap_or_else(|_| unreachable!()),
    );
    let (state, _) = key.check(text, 1_000_000, 300_000);
    assert_eq!(state, NonceState::Forged, "{text:?}");
});
