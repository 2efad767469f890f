//! JWTs from an untrusted client: verification must never panic, and with a key set whose
//! private key nobody has, nothing the fuzzer makes may verify.
#![no_main]

use keycard_core::jwt::{self, KeySet, Rules};
use libfuzzer_sys::fuzz_target;

/// A P-256 public key (RFC 7515 Appendix A.3) whose private half the fuzzer does not use.
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256",
"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let keys = KeySet::from_json(JWKS).unwrap_or_default();
    let rules = Rules {
        issuer: "i".into(),
        audiences: vec!["a".into()],
        leeway_secs: 30,
        subject_claim: "sub".into(),
        scopes_claim: None,
    };
    let _ = jwt::peek_issuer(token);
    let _ = jwt::looks_like_jwt(token);
    assert!(jwt::verify(token, &keys, &rules, 1_800_000_000).is_err());
    let _ = KeySet::from_json(token);
});
