//! Users: what the Basic and Digest verifiers need about one, and the sealed Digest secrets
//! (RFC 7616 HA1 values, password-equivalent, so kept only AES-GCM-sealed and only for users
//! who opted in with `--digest`).

use std::sync::Arc;

use crate::digest::{self, HashAlg};
use crate::keys::{SealError, Sealer};
use crate::{Method, Principal, Reason, Refusal, Scopes, SecretBytes, SecretString};

/// The HA1 values of one user in one realm, one per hash.
#[derive(Debug, Clone)]
pub struct DigestSecrets {
    realm: String,
    ha1: [SecretString; 3],
}

const FORMAT: &str = "keycard-digest-v1";

impl DigestSecrets {
    /// Derives the HA1 values of `user` with `password` in `realm`.
    pub fn derive(user: &str, realm: &str, password: &str) -> Self {
        let ha1 = HashAlg::ALL.map(|h| SecretString::new(digest::ha1(h, user, realm, password)));
        Self {
            realm: realm.to_owned(),
            ha1,
        }
    }

    /// The realm the values were made for (a Digest realm change needs new passwords).
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The HA1 for `hash`, as hex.
    pub fn ha1(&self, hash: HashAlg) -> &str {
        let i = HashAlg::ALL.iter().position(|h| *h == hash).unwrap_or(0);
        self.ha1
            .get(i)
            .map(SecretString::expose_secret)
            .unwrap_or("")
    }

    fn context(user: &str) -> Vec<u8> {
        let mut c = b"digest-ha1\0".to_vec();
        c.extend_from_slice(user.as_bytes());
        c
    }

    /// Seals the values for storage in `user`'s row.
    pub fn seal(&self, sealer: &Sealer, user: &str) -> Result<Vec<u8>, SealError> {
        let mut text = format!("{FORMAT}\n{}", self.realm);
        for h in &self.ha1 {
            text.push('\n');
            text.push_str(h.expose_secret());
        }
        let text = SecretString::new(text);
        sealer.seal(&Self::context(user), text.expose_secret().as_bytes())
    }

    /// Opens values sealed for `user`.
    pub fn open(sealer: &Sealer, user: &str, sealed: &[u8]) -> Result<Self, SealError> {
        let plain: SecretBytes = sealer.open(&Self::context(user), sealed)?;
        let text = std::str::from_utf8(plain.expose_secret()).map_err(|_| SealError::Open)?;
        let mut lines = text.split('\n');
        if lines.next() != Some(FORMAT) {
            return Err(SealError::Open);
        }
        let realm = lines.next().ok_or(SealError::Open)?.to_owned();
        let mut next = || {
            lines
                .next()
                .map(|l| SecretString::new(l.to_owned()))
                .ok_or(SealError::Open)
        };
        let ha1 = [next()?, next()?, next()?];
        Ok(Self { realm, ha1 })
    }
}

fn totp_context(user: &str) -> Vec<u8> {
    let mut c = b"totp-seed\0".to_vec();
    c.extend_from_slice(user.as_bytes());
    c
}

/// Seals a TOTP seed for storage in `user`'s row.
pub fn seal_totp_seed(sealer: &Sealer, user: &str, seed: &[u8]) -> Result<Vec<u8>, SealError> {
    sealer.seal(&totp_context(user), seed)
}

/// Opens a TOTP seed sealed for `user`.
pub fn open_totp_seed(
    sealer: &Sealer,
    user: &str,
    sealed: &[u8],
) -> Result<SecretBytes, SealError> {
    sealer.open(&totp_context(user), sealed)
}

/// A user as the verifiers see it. `Debug` leaves out the password hash.
#[derive(Clone)]
pub struct UserRecord {
    /// The user name (the subject).
    pub name: Arc<str>,
    /// The id of the current password (changes with every `passwd`): `X-Keycard-Credential`.
    pub password_id: Arc<str>,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// The scopes the user holds.
    pub scopes: Scopes,
    /// Whether the user is disabled.
    pub disabled: bool,
    /// The Digest secrets, for users added with `--digest`.
    pub digest: Option<DigestSecrets>,
    /// The TOTP seed, for users enrolled with `keycard user totp`.
    pub totp_seed: Option<SecretBytes>,
    /// That seed as the store holds it, sealed: names the enrolment, so that a sign-in can
    /// be bound to the credentials it was checked against.
    pub totp_sealed: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("password_id", &self.password_id)
            .field("scopes", &self.scopes)
            .field("disabled", &self.disabled)
            .field("digest", &self.digest.is_some())
            .field("totp", &self.totp_seed.is_some())
            .finish_non_exhaustive()
    }
}

impl UserRecord {
    /// The principal of a request that proved to be this user with `method`; refused when
    /// the user is disabled.
    pub fn principal(&self, method: Method) -> Result<Principal, Refusal> {
        if self.disabled {
            return Err(Refusal::Unauthorized {
                reason: Reason::Disabled,
                method: Some(method),
                credential_id: Some(self.password_id.to_string()),
                subject: Some(self.name.to_string()),
            });
        }
        Ok(Principal::new(
            self.name.clone(),
            method,
            self.scopes.clone(),
            self.password_id.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterKey;

    #[test]
    fn digest_secrets_round_trip_sealed_and_bound_to_the_user() {
        let sealer = MasterKey::generate().unwrap().sealer();
        let s = DigestSecrets::derive("Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(
            s.ha1(HashAlg::Md5),
            digest::ha1(
                HashAlg::Md5,
                "Mufasa",
                "http-auth@example.org",
                "Circle of Life"
            )
        );
        let blob = s.seal(&sealer, "Mufasa").unwrap();
        let back = DigestSecrets::open(&sealer, "Mufasa", &blob).unwrap();
        assert_eq!(back.realm(), "http-auth@example.org");
        for h in HashAlg::ALL {
            assert_eq!(back.ha1(h), s.ha1(h));
        }
        assert!(DigestSecrets::open(&sealer, "Scar", &blob).is_err());
    }

    #[test]
    fn disabled_users_are_refused() {
        let mut u = UserRecord {
            name: "alice".into(),
            password_id: "pwd_1".into(),
            password_hash: String::new(),
            scopes: Scopes::parse("a").unwrap(),
            disabled: false,
            digest: None,
            totp_seed: None,
            totp_sealed: None,
        };
        let p = u.principal(Method::Basic).unwrap();
        assert_eq!((p.subject(), p.credential_id()), ("alice", "pwd_1"));
        u.password_hash = "$argon2id$secret-hash".into();
        assert!(!format!("{u:?}").contains("argon2id"));
        u.disabled = true;
        assert_eq!(
            u.principal(Method::Digest).unwrap_err().reason(),
            Reason::Disabled
        );
    }
}
