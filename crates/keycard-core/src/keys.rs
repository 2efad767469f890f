//! The master key and the keys derived from it (HKDF-SHA256, RFC 5869), and the keyed hash
//! that stores random secrets (API keys, later client secrets and refresh tokens) without
//! keeping them: HMAC-SHA256 under a derived key, so a stolen database alone cannot even
//! confirm a guessed key.

use std::fmt;

use aws_lc_rs::{hkdf, hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::secret::SecretBytes;

/// The length of the master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// Why master key material was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    /// Not standard base64.
    #[error("the master key is not standard base64")]
    NotBase64,
    /// Decoded to the wrong length.
    #[error("the master key must decode to {MASTER_KEY_LEN} bytes, found {0}")]
    WrongLength(usize),
    /// The system random source failed.
    #[error("the system random number generator failed")]
    Random,
}

/// The 32-byte master key every other server key is derived from.
#[derive(Clone)]
pub struct MasterKey(SecretBytes);

impl MasterKey {
    /// Parses standard base64 of exactly 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| MasterKeyError::NotBase64)?;
        if bytes.len() != MASTER_KEY_LEN {
            return Err(MasterKeyError::WrongLength(bytes.len()));
        }
        Ok(Self(SecretBytes::new(bytes)))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, MasterKeyError> {
        let mut bytes = vec![0u8; MASTER_KEY_LEN];
        rand::fill(&mut bytes).map_err(|_| MasterKeyError::Random)?;
        Ok(Self(SecretBytes::new(bytes)))
    }

    /// The key as standard base64, for writing the key file once.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.expose_secret())
    }

    /// The keyed hasher for stored random secrets.
    pub fn keyed_hasher(&self) -> KeyedHasher {
        KeyedHasher(self.derive_hmac_key(b"keycard/v1/keyed-hash"))
    }

    fn derive_hmac_key(&self, info: &[u8]) -> hmac::Key {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"keycard").extract(self.0.expose_secret());
        let info = [info];
        match prk.expand(&info, hmac::HMAC_SHA256) {
            Ok(okm) => hmac::Key::from(okm),
            // Expanding 32 bytes from SHA-256 cannot exceed the HKDF limit (255 blocks).
            Err(_) => hmac::Key::new(hmac::HMAC_SHA256, self.0.expose_secret()),
        }
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// A domain (what kind of secret is hashed), so equal secrets of two kinds never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashDomain {
    /// API keys.
    ApiKey,
}

impl HashDomain {
    const fn label(self) -> &'static [u8] {
        match self {
            HashDomain::ApiKey => b"api_key\0",
        }
    }
}

/// HMAC-SHA256 under a key derived from the master key.
#[derive(Clone)]
pub struct KeyedHasher(hmac::Key);

impl KeyedHasher {
    /// The 32-byte lookup handle of a secret.
    pub fn hash(&self, domain: HashDomain, secret: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(domain.label());
        ctx.update(secret);
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

impl fmt::Debug for KeyedHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyedHasher([redacted])")
    }
}

/// Fills a string with `len` characters drawn uniformly from `[0-9A-Za-z]`.
pub fn random_base62(len: usize) -> Result<String, MasterKeyError> {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rand::fill(&mut buf).map_err(|_| MasterKeyError::Random)?;
        // Rejection sampling: 248 = 4 × 62, so bytes below it map uniformly.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == len {
                break;
            }
            if let Some(c) = ALPHABET.get(usize::from(*b % 62)) {
                out.push(char::from(*c));
            }
        }
    }
    Ok(out)
}

/// A fresh identifier such as `key_3kTMd9pQ2x7LmZ0a`: a prefix and 16 random characters.
pub fn new_id(prefix: &str) -> Result<String, MasterKeyError> {
    Ok(format!("{prefix}_{}", random_base62(16)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_round_trip_and_errors() {
        let k = MasterKey::generate().unwrap();
        let again = MasterKey::from_base64(&format!("  {}\n", k.to_base64())).unwrap();
        let h1 = k.keyed_hasher().hash(HashDomain::ApiKey, b"x");
        let h2 = again.keyed_hasher().hash(HashDomain::ApiKey, b"x");
        assert_eq!(h1, h2);
        assert!(matches!(
            MasterKey::from_base64("AAAA"),
            Err(MasterKeyError::WrongLength(3))
        ));
        assert!(matches!(
            MasterKey::from_base64("not base64!"),
            Err(MasterKeyError::NotBase64)
        ));
        assert!(!format!("{k:?}").contains(&k.to_base64()));
    }

    #[test]
    fn different_master_keys_hash_differently() {
        let a = MasterKey::generate().unwrap().keyed_hasher();
        let b = MasterKey::generate().unwrap().keyed_hasher();
        assert_ne!(
            a.hash(HashDomain::ApiKey, b"same"),
            b.hash(HashDomain::ApiKey, b"same")
        );
    }

    #[test]
    fn random_base62_shape() {
        let s = random_base62(100).unwrap();
        assert_eq!(s.len(), 100);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(random_base62(20).unwrap(), random_base62(20).unwrap());
    }
}
