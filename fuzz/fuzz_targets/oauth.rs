//! What the authorization server takes from clients and decodes itself: access tokens
//! presented back (introspection, revocation, userinfo, the `oauth2` method), PKCE
//! verifiers, TOTP codes and base32 seeds. Nothing may panic; with a key set whose private
//! key nobody has, no token verifies; no verifier answers a challenge it was not made for;
//! no code matches an empty seed.
#![no_main]

use keycard_core::access_token::verify_access_token;
use keycard_core::jwt::KeySet;
use keycard_core::{pkce, totp};
use libfuzzer_sys::fuzz_target;

/// A P-256 public key (RFC 7515 Appendix A.3) whose private half the fuzzer does not use.
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256",
"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

/// RFC 7636 Appendix B's challenge; its verifier is not in the fuzzer's dictionary.
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let keys = KeySet::from_json(JWKS).unwrap_or_default();
    assert!(verify_access_token(text, &keys, "http://kc", |_| true, 1_800_000_000).is_err());
    if pkce::verify_s256(text, CHALLENGE) {
        assert_eq!(text, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
    }
    let _ = pkce::challenge_is_valid(text);
    assert_eq!(totp::verify(b"", text, 1_800_000_000), None);
    let _ = totp::verify(b"12345678901234567890", text, 1_800_000_000);
    if let Some(bytes) = totp::base32_decode(text) {
        let _ = totp::base32_encode(&bytes);
    }
});
