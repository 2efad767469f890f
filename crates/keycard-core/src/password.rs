//! Human passwords: the policy a new password must meet, and argon2id hashing with at least
//! the OWASP parameters (m = 19 MiB, t = 2, p = 1). Hashing is slow on purpose: callers run
//! it off the request path's threads (the server uses a blocking pool) and remember verified
//! pairs for a short time under a keyed hash.

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use aws_lc_rs::rand;

/// Fewest characters (Unicode scalar values) a password may have.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Most bytes a password may have (bounds hashing work and header sizes).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Memory in KiB (19 MiB, OWASP's minimum for argon2id).
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
const SALT_LEN: usize = 16;

const COMMON: &str = include_str!("../data/common_passwords.txt");

/// Why a new password is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Fewer than [`MIN_PASSWORD_CHARS`] characters.
    #[error("the password must have at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    /// More than [`MAX_PASSWORD_BYTES`] bytes.
    #[error("the password must have at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// Control characters cannot be sent by HTTP Basic (RFC 7617 §2).
    #[error("the password must not contain control characters")]
    ControlCharacter,
    /// Among the commonest passwords, or built from too few distinct characters.
    #[error("the password is too common or too simple: choose another")]
    Common,
    /// Contains the user name.
    #[error("the password must not contain the user name")]
    ContainsName,
}

/// Why hashing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// The system random source failed.
    #[error("the system random number generator failed")]
    Random,
    /// The argon2 implementation refused its input.
    #[error("argon2id hashing failed")]
    Argon2,
}

/// Checks a new password for user `name` against the policy.
pub fn check_policy(name: &str, password: &str) -> Result<(), PolicyError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PolicyError::TooLong);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PolicyError::TooShort);
    }
    if password.chars().any(char::is_control) {
        return Err(PolicyError::ControlCharacter);
    }
    let lower = password.to_lowercase();
    let mut distinct: Vec<char> = lower.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 4 || is_common(&lower) {
        return Err(PolicyError::Common);
    }
    let name = name.to_lowercase();
    if name.chars().count() >= 3 && lower.contains(&name) {
        return Err(PolicyError::ContainsName);
    }
    Ok(())
}

fn is_common(lower: &str) -> bool {
    COMMON
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|l| l == lower)
}

fn argon2() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|_| HashError::Argon2)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password to a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a random salt.
pub fn hash(password: &[u8]) -> Result<String, HashError> {
    let mut salt = [0u8; SALT_LEN];
    rand::fill(&mut salt).map_err(|_| HashError::Random)?;
    let hash = argon2()?
        .hash_password_with_salt(password, &salt)
        .map_err(|_| HashError::Argon2)?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `hash`. Takes the parameters from the hash; a
/// hash that is not argon2id or does not parse never matches.
pub fn verify(hash: &str, password: &[u8]) -> bool {
    if !hash.starts_with("$argon2id$") {
        return false;
    }
    match argon2() {
        Ok(a) => a.verify_password(password, hash).is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, to verify against when the user is unknown, so an unknown
/// user costs the same time as a known one with a wrong password.
pub fn dummy_hash() -> Result<String, HashError> {
    let mut random = [0u8; 24];
    rand::fill(&mut random).map_err(|_| HashError::Random)?;
    hash(&random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters() {
        let h = hash("correct horse battery".as_bytes()).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(!h.contains("correct"));
        assert!(verify(&h, "correct horse battery".as_bytes()));
        assert!(!verify(&h, "correct horse batterY".as_bytes()));
        assert!(!verify(&h, b""));
        assert_ne!(
            h,
            hash("correct horse battery".as_bytes()).unwrap(),
            "salted"
        );
    }

    #[test]
    fn broken_or_foreign_hashes_never_match() {
        assert!(!verify("", b"x"));
        assert!(!verify("$argon2id$v=19$m=19456", b"x"));
        assert!(!verify("$2b$12$abcdefghijklmnopqrstuv", b"x"));
        // A valid argon2i (not id) hash of the same password is refused.
        assert!(!verify(
            "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$4B7aQ1GSBBODeCvP2wdtxA",
            b"password"
        ));
        let d = dummy_hash().unwrap();
        assert!(d.starts_with("$argon2id$"));
    }

    #[test]
    fn policy() {
        assert_eq!(check_policy("alice", "short"), Err(PolicyError::TooShort));
        assert_eq!(
            check_policy("alice", "ñandú-ñandú"),
            Err(PolicyError::TooShort)
        );
        assert_eq!(
            check_policy("alice", &"ab1-".repeat(300)),
            Err(PolicyError::TooLong)
        );
        assert_eq!(
            check_policy("alice", "Password1234"),
            Err(PolicyError::Common)
        );
        assert_eq!(
            check_policy("alice", "QWERTY123456"),
            Err(PolicyError::Common)
        );
        assert_eq!(
            check_policy("alice", "aaaaaaaaaaaaaaaa"),
            Err(PolicyError::Common)
        );
        assert_eq!(
            check_policy("alice", "xx-Alice-2026-xx"),
            Err(PolicyError::ContainsName)
        );
        assert_eq!(
            check_policy("alice", "tab\there-is-long"),
            Err(PolicyError::ControlCharacter)
        );
        assert_eq!(check_policy("alice", "plum-orbit-kettle"), Ok(()));
        assert_eq!(check_policy("jürgen", "Mañana:sí, con ñ"), Ok(()));
    }
}
