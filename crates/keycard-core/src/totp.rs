//! TOTP (RFC 6238) over HOTP (RFC 4226), as authenticator apps use it: SHA-1, 6 digits,
//! 30-second steps, a 160-bit seed shown as base32 (RFC 4648) in an `otpauth://` URI.
//! A code is accepted one step either side of now; the caller records the step that matched
//! so that each code works once.

use aws_lc_rs::{hmac, rand};

use crate::{SecretBytes, constant_time_eq};

/// Seconds per step.
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Seed length in bytes (160 bits, RFC 4226 §4 recommends it).
pub const SEED_LEN: usize = 20;

/// The HMAC of a HOTP computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpHash {
    /// SHA-1 (what authenticator apps use).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl TotpHash {
    fn algorithm(self) -> hmac::Algorithm {
        match self {
            TotpHash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            TotpHash::Sha256 => hmac::HMAC_SHA256,
            TotpHash::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

/// HOTP (RFC 4226 §5.3): dynamic truncation of HMAC(key, counter), `digits` long.
pub fn hotp(hash: TotpHash, key: &[u8], counter: u64, digits: u32) -> String {
    let tag = hmac::sign(
        &hmac::Key::new(hash.algorithm(), key),
        &counter.to_be_bytes(),
    );
    let mac = tag.as_ref();
    let offset = mac.last().map_or(0, |b| usize::from(b & 0x0f));
    let mut word = [0u8; 4];
    if let Some(w) = mac.get(offset..offset + 4) {
        word.copy_from_slice(w);
    }
    let binary = u32::from_be_bytes(word) & 0x7fff_ffff;
    let code = u64::from(binary) % 10u64.pow(digits);
    format!("{code:0width$}", width = digits as usize)
}

/// The time step of Unix time `now`.
pub fn step_at(now: i64) -> i64 {
    now.div_euclid(STEP_SECS)
}

/// The 6-digit SHA-1 code for `step`.
pub fn code_at_step(seed: &[u8], step: i64) -> String {
    hotp(
        TotpHash::Sha1,
        seed,
        u64::try_from(step).unwrap_or(0),
        DIGITS,
    )
}

/// The step whose code `code` is, among the step of `now` and one either side; `None` when
/// it matches none. Every candidate is compared, in constant time.
pub fn verify(seed: &[u8], code: &str, now: i64) -> Option<i64> {
    let code = code.trim();
    // A seed too short to be one of ours (or one that could not be opened) matches nothing.
    if seed.len() < 16 {
        return None;
    }
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now_step = step_at(now);
    let mut found = None;
    for step in [now_step - 1, now_step, now_step + 1] {
        if constant_time_eq(code_at_step(seed, step).as_bytes(), code.as_bytes()) && found.is_none()
        {
            found = Some(step);
        }
    }
    found
}

/// A fresh random seed.
pub fn generate_seed() -> Result<SecretBytes, crate::MasterKeyError> {
    let mut seed = vec![0u8; SEED_LEN];
    rand::fill(&mut seed).map_err(|_| crate::MasterKeyError::Random)?;
    Ok(SecretBytes::new(seed))
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32_char(v: u32) -> char {
    // `& 31` keeps the index inside the 32-letter alphabet.
    BASE32
        .get((v & 31) as usize)
        .map_or('A', |c| char::from(*c))
}

/// RFC 4648 base32, without padding (as `otpauth://` URIs carry it).
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for b in bytes {
        buffer = (buffer << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(base32_char(buffer >> bits));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(base32_char(buffer << (5 - bits)));
    }
    out
}

/// Decodes base32 (case-insensitive, padding and spaces ignored); `None` on other characters.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=' && *c != b' ') {
        let v = BASE32.iter().position(|a| *a == c.to_ascii_uppercase())?;
        buffer = (buffer << 5) | v as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The `otpauth://totp/…` URI authenticator apps read (Key Uri Format).
pub fn otpauth_uri(issuer: &str, account: &str, seed: &[u8]) -> String {
    let enc = |s: &str| {
        let mut o = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                o.push(char::from(b));
            } else {
                o.push_str(&format!("%{b:02X}"));
            }
        }
        o
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account),
        base32_encode(seed),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B: the seeds are the ASCII strings "12345678901234567890" repeated
    /// to the hash's length; codes are 8 digits with 30-second steps from T0 = 0.
    #[test]
    fn rfc6238_appendix_b() {
        let sha1 = b"12345678901234567890".as_slice();
        let sha256 = b"12345678901234567890123456789012".as_slice();
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234".as_slice();
        let table: [(i64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        for (t, c1, c256, c512) in table {
            let step = step_at(t) as u64;
            assert_eq!(hotp(TotpHash::Sha1, sha1, step, 8), c1, "SHA1 at {t}");
            assert_eq!(
                hotp(TotpHash::Sha256, sha256, step, 8),
                c256,
                "SHA256 at {t}"
            );
            assert_eq!(
                hotp(TotpHash::Sha512, sha512, step, 8),
                c512,
                "SHA512 at {t}"
            );
        }
    }

    /// RFC 4226 Appendix D: HOTP values for counters 0 and 9.
    #[test]
    fn rfc4226_appendix_d() {
        let key = b"12345678901234567890";
        assert_eq!(hotp(TotpHash::Sha1, key, 0, 6), "755224");
        assert_eq!(hotp(TotpHash::Sha1, key, 9, 6), "520489");
    }

    #[test]
    fn verify_window_and_refusals() {
        let seed = b"12345678901234567890";
        let now = 1_234_567_890;
        let step = step_at(now);
        let code = code_at_step(seed, step);
        assert_eq!(verify(seed, &code, now), Some(step));
        assert_eq!(
            verify(seed, &code_at_step(seed, step - 1), now),
            Some(step - 1)
        );
        assert_eq!(
            verify(seed, &code_at_step(seed, step + 1), now),
            Some(step + 1)
        );
        assert_eq!(verify(seed, &code_at_step(seed, step - 2), now), None);
        assert_eq!(verify(seed, &code_at_step(seed, step + 2), now), None);
        assert_eq!(verify(seed, "12345", now), None);
        assert_eq!(verify(seed, "12345a", now), None);
        assert_eq!(verify(seed, "", now), None);
        assert_eq!(verify(b"another seed 1234567", &code, now), None);
        assert_eq!(
            verify(b"", &hotp(TotpHash::Sha1, b"", step as u64, 6), now),
            None
        );
    }

    /// RFC 4648 §10 test vectors (without padding).
    #[test]
    fn base32_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()), enc);
            assert_eq!(base32_decode(enc).unwrap(), plain.as_bytes());
            assert_eq!(
                base32_decode(&enc.to_lowercase()).unwrap(),
                plain.as_bytes()
            );
        }
        assert_eq!(base32_decode("MZXW6YQ="), Some(b"foob".to_vec()));
        assert_eq!(base32_decode("MZ1"), None);
    }

    #[test]
    fn uri_shape() {
        let uri = otpauth_uri("keycard", "alice smith", b"12345678901234567890");
        assert_eq!(
            uri,
            "otpauth://totp/keycard:alice%20smith?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=keycard&algorithm=SHA1&digits=6&period=30"
        );
    }
}
