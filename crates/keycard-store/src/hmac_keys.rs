//! HMAC request-signing keys (RFC 9421): credentials of kind `hmac`, found by the keyed hash
//! of their public `key_id`, with the secret sealed by the caller (the store never sees it
//! in the clear).

use crate::BeginWrite;
use sqlx::Row;

use crate::changes::{ChangeKind, hex, record_changes};
use crate::{Store, StoreError, with_pool};

/// A key to store. `Debug` leaves out the sealed secret.
#[derive(Clone)]
pub struct NewHmacKey {
    /// The credential id (`hmac_…`).
    pub id: String,
    /// The RFC 9421 `keyid` clients send (`hk_…`).
    pub key_id: String,
    /// The subject; created as a service subject when new.
    pub subject: String,
    /// The keyed hash of `key_id`.
    pub lookup: [u8; 32],
    /// The secret, sealed with the master key (for `ed25519`: the public key).
    pub sealed: Vec<u8>,
    /// `None`: hmac-sha256; `Some("ed25519")`: a registered public key.
    pub alg: Option<String>,
    /// Space-separated scopes.
    pub scopes: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, or never.
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for NewHmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewHmacKey")
            .field("id", &self.id)
            .field("key_id", &self.key_id)
            .field("subject", &self.subject)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// A stored key. `Debug` leaves out the sealed secret.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacKeyRow {
    /// The credential id.
    pub id: String,
    /// The RFC 9421 `keyid`.
    pub key_id: String,
    /// The subject.
    pub subject: String,
    /// The sealed secret (for `ed25519`: the public key).
    pub sealed: Vec<u8>,
    /// `None`: hmac-sha256; `Some("ed25519")`.
    pub alg: Option<String>,
    /// Space-separated scopes.
    pub scopes: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
    /// Unix seconds.
    pub last_used_at: Option<i64>,
    /// Whether the subject is disabled.
    pub subject_disabled: bool,
}

impl std::fmt::Debug for HmacKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacKeyRow")
            .field("id", &self.id)
            .field("key_id", &self.key_id)
            .field("subject", &self.subject)
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

macro_rules! select {
    ($tail:literal) => {
        concat!(
            "SELECT c.id, c.key_id, c.subject, c.sealed, c.scopes, c.created_at, c.expires_at, ",
            "c.revoked_at, c.last_used_at, s.disabled_at, c.alg ",
            "FROM credentials c JOIN subjects s ON s.name = c.subject WHERE c.kind = 'hmac' ",
            $tail
        )
    };
}

macro_rules! row_to_key {
    ($row:expr) => {{
        let row = $row;
        let disabled: Option<i64> = row.try_get("disabled_at")?;
        let key_id: Option<String> = row.try_get("key_id")?;
        let sealed: Option<Vec<u8>> = row.try_get("sealed")?;
        HmacKeyRow {
            id: row.try_get("id")?,
            key_id: key_id.unwrap_or_default(),
            subject: row.try_get("subject")?,
            sealed: sealed.unwrap_or_default(),
            alg: row.try_get("alg")?,
            scopes: row.try_get("scopes")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            last_used_at: row.try_get("last_used_at")?,
            subject_disabled: disabled.is_some(),
        }
    }};
}

impl Store {
    /// Stores a new HMAC key (and its subject, when new).
    pub async fn create_hmac_key(&self, key: &NewHmacKey) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "INSERT INTO subjects (name, kind, created_at) VALUES ($1, 'service', $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&key.subject)
            .bind(key.created_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO credentials (id, kind, subject, lookup, scopes, created_at, expires_at, key_id, sealed, alg) \
                 VALUES ($1, 'hmac', $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&key.id)
            .bind(&key.subject)
            .bind(&key.lookup[..])
            .bind(&key.scopes)
            .bind(key.created_at)
            .bind(key.expires_at)
            .bind(&key.key_id)
            .bind(&key.sealed)
            .bind(&key.alg)
            .execute(&mut *tx)
            .await?;
            record_changes!(tx, key.created_at, [(ChangeKind::Credential, hex(&key.lookup))]);
            tx.commit().await?;
            Ok(())
        })
    }

    /// The HMAC key whose `key_id` has the keyed hash `lookup`.
    pub async fn find_hmac_key(&self, lookup: &[u8; 32]) -> Result<Option<HmacKeyRow>, StoreError> {
        with_pool!(self, p => {
            let row = sqlx::query(select!("AND c.lookup = $1"))
                .bind(&lookup[..])
                .fetch_optional(p)
                .await?;
            match row {
                Some(row) => Ok(Some(row_to_key!(row))),
                None => Ok(None),
            }
        })
    }

    /// HMAC keys, newest first, optionally of one subject.
    pub async fn list_hmac_keys(
        &self,
        subject: Option<&str>,
    ) -> Result<Vec<HmacKeyRow>, StoreError> {
        with_pool!(self, p => {
            let rows = sqlx::query(select!("AND ($1 IS NULL OR c.subject = $1) ORDER BY c.created_at DESC, c.id"))
                .bind(subject)
                .fetch_all(p)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(row_to_key!(row));
            }
            Ok(out)
        })
    }
}
