//! API keys: `kc_` + 33 random base62 characters (196 bits) + a 6-character CRC-32 checksum.
//!
//! The checksum lets keycard refuse a mistyped or truncated key before any lookup, and lets
//! secret scanners recognise a leaked key with few false positives (the same idea as
//! GitHub's token format). The store keeps only a keyed hash of the whole key.

use std::sync::Arc;

use crate::keys::{HashDomain, KeyedHasher, MasterKeyError, random_base62};
use crate::{Method, Principal, Reason, Refusal, Scopes, SecretString};

/// Every key starts with this.
pub const PREFIX: &str = "kc_";
const RANDOM_LEN: usize = 33;
const CHECKSUM_LEN: usize = 6;
/// The length of every API key.
pub const KEY_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;

/// Makes a new random key. The caller shows it once and keeps only its hash.
pub fn generate() -> Result<SecretString, MasterKeyError> {
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str(PREFIX);
    key.push_str(&random_base62(RANDOM_LEN)?);
    let sum = crc32(key.as_bytes());
    key.push_str(std::str::from_utf8(&base62_fixed(u64::from(sum))).unwrap_or_default());
    Ok(SecretString::new(key))
}

/// Whether `text` looks like a keycard API key (prefix), whatever its checksum.
pub fn looks_like_key(text: &str) -> bool {
    text.starts_with(PREFIX)
}

/// Checks the shape of a presented key — length, prefix, alphabet — but not its checksum;
/// `Err(Reason::Malformed)` if wrong. What passes is short enough to hash for a cache lookup.
pub fn check_shape(text: &str) -> Result<(), Reason> {
    let bytes = text.as_bytes();
    if bytes.len() != KEY_LEN || !text.starts_with(PREFIX) {
        return Err(Reason::Malformed);
    }
    let body = bytes.get(PREFIX.len()..).ok_or(Reason::Malformed)?;
    if !body.iter().all(u8::is_ascii_alphanumeric) {
        return Err(Reason::Malformed);
    }
    Ok(())
}

/// Checks the shape and checksum of a presented key; `Err(Reason::Malformed)` if wrong.
/// Costs no lookup: a mistyped or truncated key never reaches the store.
pub fn check_format(text: &str) -> Result<(), Reason> {
    check_shape(text)?;
    let bytes = text.as_bytes();
    let (head, sum) = bytes.split_at(KEY_LEN - CHECKSUM_LEN);
    let expected = base62_fixed(u64::from(crc32(head)));
    // Not secret (the checksum is derived from the key it travels with), so a plain compare.
    if expected[..] != *sum {
        return Err(Reason::Malformed);
    }
    Ok(())
}

/// The store's lookup handle for a key (a keyed hash, never the key).
pub fn lookup_handle(hasher: &KeyedHasher, key: &str) -> [u8; 32] {
    hasher.hash(HashDomain::ApiKey, key.as_bytes())
}

/// What the store knows of one stored credential — an API key, an RFC 9421 signing key or a
/// certificate binding: everything the verifier needs, no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    /// The credential id.
    pub id: Arc<str>,
    /// The subject it belongs to.
    pub subject: Arc<str>,
    /// The scopes a request made with it holds.
    pub scopes: Scopes,
    /// Unix seconds after which it is refused (rotation sets this to the grace end).
    pub expires_at: Option<i64>,
    /// Unix seconds at which it was revoked.
    pub revoked_at: Option<i64>,
    /// Whether its subject is disabled.
    pub subject_disabled: bool,
    /// Its identity headers' values, encoded once per copy ([`CredentialRecord::detached`]).
    pub identity: Option<Arc<crate::IdentityValues>>,
    /// The principal a request made with it becomes, built at its first use.
    pub principal: PrincipalCache,
}

/// A record's principal, built once per copy of the record (a clone or a
/// [`CredentialRecord::detached`] copy starts empty) and cloned for each request it passes. Not
/// part of the record's value: records equal as data compare equal whatever they cached.
#[derive(Default)]
pub struct PrincipalCache(std::sync::OnceLock<Principal>);

impl PrincipalCache {
    /// The principal `record` gives under `method`: the one cached when it was built from
    /// this very record's fields (the same allocations) for the same method, else a new one
    /// (cached if none is yet). A record rebuilt around a moved cache thus never hands out
    /// another record's principal.
    fn principal(&self, record: &CredentialRecord, method: Method) -> Principal {
        if let Some(p) = self.0.get()
            && p.built_from(
                &record.subject,
                method,
                &record.scopes,
                &record.id,
                record.identity.as_ref(),
            )
        {
            return p.clone();
        }
        let p = Principal::new(
            record.subject.clone(),
            method,
            record.scopes.clone(),
            record.id.clone(),
        )
        .with_identity(record.identity.clone());
        // Taken by the first principal only; a lost race leaves an equal one there.
        let _ = self.0.set(p.clone());
        p
    }
}

impl Clone for PrincipalCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for PrincipalCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PrincipalCache {}

impl std::fmt::Debug for PrincipalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrincipalCache")
    }
}

impl CredentialRecord {
    /// An equal record that shares no allocation with this one (for a per-thread copy: the
    /// reference counts its principals bump are then written by one core only).
    /// Its identity headers' values are encoded for the copy, once.
    pub fn detached(&self) -> Self {
        Self {
            id: Arc::from(&*self.id),
            subject: Arc::from(&*self.subject),
            scopes: self.scopes.detached(),
            identity: Some(Arc::new(crate::IdentityValues::encode(
                &self.subject,
                self.scopes.as_str(),
                &self.id,
            ))),
            principal: PrincipalCache::default(),
            ..*self
        }
    }
}

/// Verifies a key whose format checked and whose record was found by its lookup handle.
pub fn verify(record: &CredentialRecord, now: i64) -> Result<Principal, Refusal> {
    verify_as(record, Method::ApiKey, now)
}

/// The state checks of [`verify`] for another kind of key credential (HMAC signing keys
/// share the record: id, subject, scopes, expiry, revocation, disabled subject).
pub fn verify_as(
    record: &CredentialRecord,
    method: Method,
    now: i64,
) -> Result<Principal, Refusal> {
    let refuse = |reason| Refusal::Unauthorized {
        reason,
        method: Some(method),
        credential_id: Some(record.id.to_string()),
        subject: Some(record.subject.to_string()),
    };
    if record.revoked_at.is_some_and(|t| t <= now) {
        return Err(refuse(Reason::Revoked));
    }
    if record.expires_at.is_some_and(|t| t <= now) {
        return Err(refuse(Reason::Expired));
    }
    if record.subject_disabled {
        return Err(refuse(Reason::Disabled));
    }
    Ok(record.principal.principal(record, method))
}

/// The checksum's text: `n` in base62, most significant digit first, zero-padded. On the
/// stack: every presented key is checked with it.
fn base62_fixed(mut n: u64) -> [u8; CHECKSUM_LEN] {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET.get((n % 62) as usize).copied().unwrap_or(b'0');
        n /= 62;
    }
    out
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`).
fn crc32(data: &[u8]) -> u32 {
    // Evaluated at compile time, where `i < 256` bounds every index.
    #[allow(clippy::indexing_slicing)]
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for b in data {
        let idx = ((crc ^ u32::from(*b)) & 0xff) as usize;
        crc = TABLE.get(idx).copied().unwrap_or(0) ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterKey;

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn generated_keys_check() {
        let k = generate().unwrap();
        let k = k.expose_secret();
        assert_eq!(k.len(), KEY_LEN);
        assert!(k.starts_with("kc_"));
        assert_eq!(check_format(k), Ok(()));
    }

    #[test]
    fn tampered_truncated_and_foreign_keys_are_malformed() {
        let k = generate().unwrap().expose_secret().to_owned();
        let mut tampered = k.clone().into_bytes();
        let i = 10;
        tampered[i] = if tampered[i] == b'a' { b'b' } else { b'a' };
        let tampered = String::from_utf8(tampered).unwrap();
        for bad in [
            tampered.as_str(),
            &k[..KEY_LEN - 1],
            &format!("{k}0"),
            &k.replacen("kc_", "kd_", 1),
            "kc_",
            "",
            &format!("kc_{}", "é".repeat(19)),
        ] {
            assert_eq!(check_format(bad), Err(Reason::Malformed), "{bad:?}");
        }
        // The shape alone lets the tampered key through (to a cache lookup that misses,
        // then this checksum check), and nothing of another length or alphabet.
        assert_eq!(check_shape(&tampered), Ok(()));
        for bad in [
            &k[..KEY_LEN - 1],
            &format!("{k}0"),
            &k.replacen("kc_", "kd_", 1),
            &format!("{}-{}", &k[..20], &k[21..]),
        ] {
            assert_eq!(check_shape(bad), Err(Reason::Malformed), "{bad:?}");
        }
    }

    /// A per-thread copy carries its identity headers encoded once, the same values as those
    /// encoded per request (percent-encoding included), and a principal made from it has them.
    #[test]
    fn a_detached_record_carries_its_identity_headers() {
        let rec = CredentialRecord {
            id: "key_1".into(),
            subject: "José r\u{e9}\r\n".into(),
            scopes: Scopes::parse("a:read b").unwrap(),
            expires_at: None,
            revoked_at: None,
            subject_disabled: false,
            identity: None,
            principal: Default::default(),
        };
        assert!(verify(&rec, 1).unwrap().identity_values().is_none());
        let copy = rec.detached();
        let p = verify(&copy, 1).unwrap();
        let v = p.identity_values().unwrap();
        assert_eq!(v.subject, crate::header_value("José r\u{e9}\r\n"));
        assert_eq!(v.subject, "Jos%C3%A9%20r%C3%A9%0D%0A");
        assert_eq!(v.scopes, "a:read b");
        assert_eq!(v.credential, "key_1");
        assert!(!Arc::ptr_eq(&copy.subject, &rec.subject));
    }

    /// A valid key of subject `svc`, scopes `a b`.
    fn svc_record() -> CredentialRecord {
        CredentialRecord {
            id: "key_1".into(),
            subject: "svc".into(),
            scopes: Scopes::parse("a b").unwrap(),
            expires_at: None,
            revoked_at: None,
            subject_disabled: false,
            identity: None,
            principal: Default::default(),
        }
    }

    /// A record's principal is built once and then shared by every request it passes (one
    /// reference count per request); a copy, cloned or detached, builds its own; a record
    /// rebuilt with other fields around a moved cache never hands out the old principal;
    /// another method gets a principal of its own; the state checks still run every time.
    #[test]
    fn a_record_builds_its_principal_once() {
        let rec = svc_record();
        let fresh = Principal::new(
            rec.subject.clone(),
            Method::ApiKey,
            rec.scopes.clone(),
            rec.id.clone(),
        );
        let a = verify(&rec, 1).unwrap();
        let b = verify(&rec, 1).unwrap();
        assert!(a.shares_with(&b));
        assert_eq!(a, fresh);
        let c = verify(&rec.clone(), 1).unwrap();
        assert!(!c.shares_with(&a));
        assert_eq!(c, a);
        assert_eq!(
            rec.clone(),
            rec,
            "the cache is not part of the record's value"
        );
        let d = verify(&rec.detached(), 1).unwrap();
        assert!(!d.shares_with(&a));
        assert_eq!(d.subject(), "svc");
        for (changed, what) in [
            (
                CredentialRecord {
                    subject: "other".into(),
                    ..rec.clone()
                },
                "subject",
            ),
            (
                CredentialRecord {
                    id: "key_2".into(),
                    ..rec.clone()
                },
                "id",
            ),
            (
                CredentialRecord {
                    scopes: Scopes::parse("a").unwrap(),
                    ..rec.clone()
                },
                "scopes",
            ),
        ] {
            // A populated cache moved into a record with other fields.
            let old = rec.clone();
            assert_eq!(verify(&old, 1).unwrap(), a);
            let moved = CredentialRecord {
                principal: old.principal,
                ..changed
            };
            let p = verify(&moved, 1).unwrap();
            assert_eq!(
                (p.subject(), p.credential_id(), p.scopes().as_str()),
                (&*moved.subject, &*moved.id, moved.scopes.as_str()),
                "{what}"
            );
            assert_ne!(p, a, "{what}");
        }
        let h = verify_as(&rec, Method::Hmac, 1).unwrap();
        assert_eq!(h.method(), Method::Hmac);
        assert_eq!(verify(&rec, 1).unwrap().method(), Method::ApiKey);
        let revoked = CredentialRecord {
            revoked_at: Some(1),
            ..rec
        };
        assert_eq!(verify(&revoked, 1).unwrap_err().reason(), Reason::Revoked);
    }

    #[test]
    fn verify_states() {
        let rec = svc_record();
        let p = verify(&rec, 100).unwrap();
        assert_eq!(
            (p.subject(), p.method(), p.credential_id()),
            ("svc", Method::ApiKey, "key_1")
        );
        let reason = |r: CredentialRecord| verify(&r, 100).unwrap_err().reason();
        assert_eq!(
            reason(CredentialRecord {
                expires_at: Some(100),
                ..rec.clone()
            }),
            Reason::Expired
        );
        assert!(
            verify(
                &CredentialRecord {
                    expires_at: Some(101),
                    ..rec.clone()
                },
                100
            )
            .is_ok()
        );
        assert_eq!(
            reason(CredentialRecord {
                revoked_at: Some(5),
                ..rec.clone()
            }),
            Reason::Revoked
        );
        assert_eq!(
            reason(CredentialRecord {
                subject_disabled: true,
                identity: None,
                principal: Default::default(),
                ..rec
            }),
            Reason::Disabled
        );
    }

    #[test]
    fn handle_depends_on_key_and_master() {
        let h = MasterKey::generate().unwrap().keyed_hasher();
        assert_ne!(lookup_handle(&h, "kc_a"), lookup_handle(&h, "kc_b"));
    }
}
