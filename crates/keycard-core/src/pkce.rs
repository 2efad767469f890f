//! PKCE (RFC 7636) with the `S256` method only: RFC 9700 §2.1.1 asks for it, and `plain`
//! protects nothing once the authorization request leaks.

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::constant_time_eq;

/// Whether `challenge` can be an `S256` challenge: base64url without padding of 32 bytes.
pub fn challenge_is_valid(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `verifier` has the shape RFC 7636 §4.1 requires: 43 to 128 characters from
/// `[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"`.
pub fn verifier_is_valid(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// The `S256` challenge of `verifier`: `BASE64URL(SHA256(ASCII(verifier)))`.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

/// Whether `verifier` answers `challenge` (constant time in the comparison).
pub fn verify_s256(verifier: &str, challenge: &str) -> bool {
    verifier_is_valid(verifier) && constant_time_eq(s256(verifier).as_bytes(), challenge.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 Appendix B: the example verifier and its S256 challenge.
    #[test]
    fn rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(s256(verifier), challenge);
        assert!(challenge_is_valid(challenge));
        assert!(verify_s256(verifier, challenge));
    }

    #[test]
    fn wrong_or_malformed_verifiers_fail() {
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(!verify_s256(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
        // Sending the challenge itself as the verifier (a `plain` downgrade) fails.
        assert!(!verify_s256(challenge, challenge));
        assert!(!verifier_is_valid("short"));
        assert!(!verifier_is_valid(&"a".repeat(129)));
        assert!(!verifier_is_valid(&format!("{}+", "a".repeat(50))));
        assert!(!challenge_is_valid("abc"));
        assert!(!challenge_is_valid(&format!("{}=", "a".repeat(42))));
    }
}
