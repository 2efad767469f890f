//! The master key and the keys derived from it (HKDF-SHA256, RFC 5869), and the keyed hash
//! that stores random secrets (API keys, later client secrets and refresh tokens) without
//! keeping them: HMAC-SHA256 under a derived key, so a stolen database alone cannot even
//! confirm a guessed key.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
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

    /// The HMAC key that makes Digest nonces unforgeable (RFC 7616 nonces carry their own MAC).
    pub fn nonce_key(&self) -> hmac::Key {
        self.derive_hmac_key(b"keycard/v1/digest-nonce")
    }

    /// The HMAC key that signs login sessions and CSRF tokens of the authorization pages.
    pub fn session_key(&self) -> hmac::Key {
        self.derive_hmac_key(b"keycard/v1/session")
    }

    /// The sealer for secrets the server must read back (Digest hashes, later HMAC keys, TOTP
    /// seeds and signing keys).
    pub fn sealer(&self) -> Sealer {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"keycard").extract(self.0.expose_secret());
        let info = [b"keycard/v1/seal".as_slice()];
        let key = prk.expand(&info, &AES_256_GCM).map(UnboundKey::from);
        Sealer(key.ok().map(LessSafeKey::new))
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

/// Why a sealed secret could not be opened or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The blob was not sealed by this master key for this context, or was altered.
    #[error("a sealed secret could not be opened (wrong master key, or altered)")]
    Open,
    /// Sealing failed (random source or key setup).
    #[error("a secret could not be sealed")]
    Seal,
}

/// AES-256-GCM under a key derived from the master key. A sealed blob is
/// `version (1) || nonce (12) || ciphertext || tag (16)`; the context (for example the user
/// name a Digest hash belongs to) is authenticated, so a blob moved to another row fails.
pub struct Sealer(Option<LessSafeKey>);

const SEAL_VERSION: u8 = 1;

impl Sealer {
    /// Seals `plaintext` for `context`.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let key = self.0.as_ref().ok_or(SealError::Seal)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce).map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context),
            &mut body,
        )
        .map_err(|_| SealError::Seal)?;
        out.extend_from_slice(&body);
        body.iter_mut().for_each(|b| *b = 0);
        Ok(out)
    }

    /// Opens a blob sealed for `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<SecretBytes, SealError> {
        let key = self.0.as_ref().ok_or(SealError::Open)?;
        let (version, rest) = sealed.split_first().ok_or(SealError::Open)?;
        if *version != SEAL_VERSION || rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Open);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut body = body.to_vec();
        let len = key
            .open_in_place(nonce, Aad::from(context), &mut body)
            .map_err(|_| SealError::Open)?
            .len();
        body.truncate(len);
        Ok(SecretBytes::new(body))
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

/// A domain (what kind of secret is hashed), so equal secrets of two kinds never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashDomain {
    /// API keys.
    ApiKey,
    /// A verified (user, password) pair of HTTP Basic, remembered for a short time.
    BasicPair,
    /// OAuth client secrets.
    ClientSecret,
    /// OAuth authorization codes.
    AuthCode,
    /// OAuth refresh tokens.
    RefreshToken,
    /// Access tokens whose signature was verified, remembered in memory until they expire.
    VerifiedToken,
    /// The public `keyid` of an HMAC request-signing key (its lookup handle).
    HmacKeyId,
    /// The SHA-256 fingerprint of a client certificate bound with `keycard cert add`.
    CertFingerprint,
}

impl HashDomain {
    const fn label(self) -> &'static [u8] {
        match self {
            HashDomain::ApiKey => b"api_key\0",
            HashDomain::BasicPair => b"basic_pair\0",
            HashDomain::ClientSecret => b"client_secret\0",
            HashDomain::AuthCode => b"auth_code\0",
            HashDomain::RefreshToken => b"refresh_token\0",
            HashDomain::VerifiedToken => b"verified_token\0",
            HashDomain::HmacKeyId => b"hmac_key_id\0",
            HashDomain::CertFingerprint => b"cert_fingerprint\0",
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
    fn sealed_secrets_open_only_with_their_key_and_context() {
        let k = MasterKey::generate().unwrap();
        let sealer = k.sealer();
        let blob = sealer.seal(b"user:alice", b"ha1 material").unwrap();
        assert!(!blob.windows(3).any(|w| w == b"ha1"));
        assert_eq!(
            sealer.open(b"user:alice", &blob).unwrap().expose_secret(),
            b"ha1 material"
        );
        assert_eq!(sealer.open(b"user:bob", &blob), Err(SealError::Open));
        let other = MasterKey::generate().unwrap().sealer();
        assert_eq!(other.open(b"user:alice", &blob), Err(SealError::Open));
        let mut tampered = blob.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(sealer.open(b"user:alice", &tampered), Err(SealError::Open));
        assert_eq!(
            sealer.open(b"user:alice", &blob[..10]),
            Err(SealError::Open)
        );
        assert_eq!(sealer.open(b"user:alice", &[]), Err(SealError::Open));
        // Fresh nonce each time.
        assert_ne!(blob, sealer.seal(b"user:alice", b"ha1 material").unwrap());
    }

    #[test]
    fn random_base62_shape() {
        let s = random_base62(100).unwrap();
        assert_eq!(s.len(), 100);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(random_base62(20).unwrap(), random_base62(20).unwrap());
    }
}
