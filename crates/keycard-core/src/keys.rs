//! The master key and the keys derived from it (HKDF-SHA256, RFC 5869), and the keyed hash
//! that stores random secrets (API keys, later client secrets and refresh tokens) without
//! keeping them: HMAC-SHA256 under a derived key, so a stolen database alone cannot even
//! confirm a guessed key.

use std::fmt;

use ::hmac::{Hmac, KeyInit, Mac};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::Sha256;
use zeroize::Zeroize;

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
        // The same 32 bytes `derive_hmac_key` would make into an `hmac::Key`: handles stored
        // by earlier versions still match.
        let mut key = [0u8; 32];
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"keycard").extract(self.0.expose_secret());
        let info = [b"keycard/v1/keyed-hash".as_slice()];
        let filled = prk
            .expand(&info, hmac::HMAC_SHA256)
            .and_then(|okm| okm.fill(&mut key));
        let hasher = match filled {
            Ok(()) => KeyedHasher(PreparedHmac::new(&key)),
            // Expanding 32 bytes from SHA-256 cannot exceed the HKDF limit (255 blocks).
            Err(_) => KeyedHasher(PreparedHmac::new(self.0.expose_secret())),
        };
        key.zeroize();
        hasher
    }

    /// The HMAC key that makes Digest nonces unforgeable (RFC 7616 nonces carry their own MAC).
    pub fn nonce_key(&self) -> hmac::Key {
        self.derive_hmac_key(b"keycard/v1/digest-nonce")
    }

    /// The HMAC key that signs login sessions and CSRF tokens of the authorization pages.
    pub fn session_key(&self) -> hmac::Key {
        self.derive_hmac_key(b"keycard/v1/session")
    }

    /// The store's key check value: an HMAC of a fixed label under a key derived for this
    /// purpose alone (base64url, no padding). A store records it when first opened and
    /// refuses any other master key afterwards; it reveals nothing of the key.
    pub fn check_value(&self) -> String {
        let key = self.derive_hmac_key(b"keycard/v1/key-check");
        let tag = hmac::sign(&key, b"keycard master key check");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
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
    /// The secret of a login session of the authorization server (its cookie).
    LoginSession,
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
            HashDomain::LoginSession => b"login_session\0",
        }
    }
}

/// HMAC-SHA256 under a key derived from the master key.
#[derive(Clone)]
pub struct KeyedHasher(PreparedHmac);

impl KeyedHasher {
    /// The 32-byte lookup handle of a secret.
    pub fn hash(&self, domain: HashDomain, secret: &[u8]) -> [u8; 32] {
        self.0.mac(&[domain.label(), secret])
    }

    /// The handle of the concatenation of `parts` (the same as [`KeyedHasher::hash`] of the
    /// joined bytes), without joining them first.
    pub fn hash_parts(&self, domain: HashDomain, parts: &[&[u8]]) -> [u8; 32] {
        self.0
            .mac_of(std::iter::once(domain.label()).chain(parts.iter().copied()))
    }
}

/// HMAC-SHA256 (RFC 2104; RustCrypto's `hmac` over `sha2`) keyed once: the key's two
/// blocks — key ⊕ ipad and key ⊕ opad — are absorbed when it is made, and each message
/// starts from a copy of that state, so a message of up to 55 bytes (an API key and its
/// domain label) costs two compressions. The states are as secret as the key: zeroized when
/// dropped (the crates' `zeroize` feature), never printed.
#[derive(Clone)]
pub(crate) struct PreparedHmac(Hmac<Sha256>);

impl PreparedHmac {
    /// Prepares `key` (hashed first when longer than a block, as RFC 2104 says).
    pub(crate) fn new(key: &[u8]) -> Self {
        #[expect(
            clippy::expect_used,
            reason = "HMAC takes a key of any length (RFC 2104 §2): `new_from_slice` cannot fail"
        )]
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .expect("HMAC accepts keys of any length");
        Self(mac)
    }

    /// The MAC of the concatenation of `parts`.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.mac_of(parts.iter().copied())
    }

    /// HMAC-SHA256 of the concatenation of `parts`.
    pub(crate) fn mac_of<'a>(&self, parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
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

    /// The check value is the key's alone: stable for one key, different for another, and
    /// not the key's own bytes.
    #[test]
    fn check_value_tells_keys_apart() {
        let k = MasterKey::generate().unwrap();
        let again = MasterKey::from_base64(&k.to_base64()).unwrap();
        let other = MasterKey::generate().unwrap();
        assert_eq!(k.check_value(), again.check_value());
        assert_ne!(k.check_value(), other.check_value());
        assert_eq!(k.check_value().len(), 43);
        assert!(!k.check_value().contains(&k.to_base64()));
    }

    /// A handle of parts is the handle of the joined bytes, however they are cut (across
    /// the 64-byte block boundary too), and not that of another domain.
    #[test]
    fn handle_of_parts_is_the_handle_of_the_joined_bytes() {
        let h = MasterKey::generate().unwrap().keyed_hasher();
        let joined: Vec<u8> = (0..150u8).collect();
        for cut in [0, 1, 40, 63, 64, 65, 150] {
            let (a, b) = joined.split_at(cut);
            let (b, c) = b.split_at(b.len() / 2);
            assert_eq!(
                h.hash_parts(HashDomain::VerifiedToken, &[a, b, b"", c]),
                h.hash(HashDomain::VerifiedToken, &joined),
                "cut at {cut}"
            );
        }
        assert_ne!(
            h.hash_parts(HashDomain::ApiKey, &[&joined]),
            h.hash(HashDomain::VerifiedToken, &joined)
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 4231 §4.2–§4.8 (HMAC-SHA-256; test case 5 is a truncated output, not kept):
    /// short keys, a 25-byte key, and 131-byte keys that are hashed first, with data of
    /// one and of several blocks.
    #[test]
    fn prepared_hmac_matches_rfc_4231() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 6] = [
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                (1..=25).collect(),
                vec![0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                vec![0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (key, data, want) in cases {
            assert_eq!(hex(&PreparedHmac::new(&key).mac(&[&data])), want);
        }
    }

    /// Every message length across the padding's edges (55, 56, 63, 64 bytes and beyond),
    /// split into parts anywhere, equals aws-lc-rs's HMAC; so do key lengths up to past a
    /// block.
    #[test]
    fn prepared_hmac_matches_aws_lc_at_every_length() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        let key: Vec<u8> = (0..100u32).map(|i| (i * 13 + 1) as u8).collect();
        for key_len in [0, 1, 32, 63, 64, 65, 100] {
            let k = &key[..key_len];
            let prepared = PreparedHmac::new(k);
            let theirs = hmac::Key::new(hmac::HMAC_SHA256, k);
            for len in 0..=data.len() {
                let msg = &data[..len];
                let want = hmac::sign(&theirs, msg);
                let cut = len / 3;
                assert_eq!(
                    prepared.mac(&[&msg[..cut], &msg[cut..]]).as_slice(),
                    want.as_ref(),
                    "key {key_len} bytes, message {len} bytes"
                );
            }
        }
    }

    /// Handles stored before the prepared HMAC (aws-lc-rs's, under the key HKDF gave it)
    /// still match: no stored API key, client secret or refresh token is lost.
    #[test]
    fn keyed_hash_is_the_hmac_handles_were_stored_with() {
        let k = MasterKey::generate().unwrap();
        let before = k.derive_hmac_key(b"keycard/v1/keyed-hash");
        for (domain, secret) in [
            (HashDomain::ApiKey, b"kc_example".as_slice()),
            (HashDomain::ClientSecret, b"".as_slice()),
            (HashDomain::RefreshToken, &[0xff; 90]),
        ] {
            let mut ctx = hmac::Context::with_key(&before);
            ctx.update(domain.label());
            ctx.update(secret);
            assert_eq!(
                k.keyed_hasher().hash(domain, secret).as_slice(),
                ctx.sign().as_ref()
            );
        }
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
