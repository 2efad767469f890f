//! API keys: stored by the keyed hash of the key (the `lookup`), never the key.

use crate::BeginWrite;
use sqlx::Row;

use crate::changes::{ChangeKind, hex, record_changes};
use crate::{Store, StoreError, with_pool};

/// A key to store. `lookup` is the keyed hash of the key; the key itself never comes here.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// The credential id (`key_…`).
    pub id: String,
    /// The subject; created as a service subject when new.
    pub subject: String,
    /// The keyed hash of the key.
    pub lookup: [u8; 32],
    /// An optional label.
    pub name: Option<String>,
    /// Space-separated scopes.
    pub scopes: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, or never.
    pub expires_at: Option<i64>,
}

/// A stored key, as the verifier and the CLI see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    /// The credential id.
    pub id: String,
    /// The subject.
    pub subject: String,
    /// The label.
    pub name: Option<String>,
    /// Space-separated scopes.
    pub scopes: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; also the end of a rotation grace.
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
    /// The id of the key this one replaced.
    pub rotated_from: Option<String>,
    /// Unix seconds, updated at most once a minute.
    pub last_used_at: Option<i64>,
    /// Whether the subject is disabled.
    pub subject_disabled: bool,
}

macro_rules! select {
    ($tail:literal) => {
        concat!(
            "SELECT c.id, c.subject, c.name, c.scopes, c.created_at, c.expires_at, c.revoked_at, ",
            "c.rotated_from, c.last_used_at, s.disabled_at ",
            "FROM credentials c JOIN subjects s ON s.name = c.subject WHERE c.kind = 'api_key' ",
            $tail
        )
    };
}

macro_rules! row_to_key {
    ($row:expr) => {{
        let row = $row;
        let disabled: Option<i64> = row.try_get("disabled_at")?;
        ApiKeyRow {
            id: row.try_get("id")?,
            subject: row.try_get("subject")?,
            name: row.try_get("name")?,
            scopes: row.try_get("scopes")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            rotated_from: row.try_get("rotated_from")?,
            last_used_at: row.try_get("last_used_at")?,
            subject_disabled: disabled.is_some(),
        }
    }};
}

macro_rules! insert_key {
    ($tx:expr, $key:expr, $rotated_from:expr) => {{
        let key: &NewApiKey = $key;
        sqlx::query(
            "INSERT INTO subjects (name, kind, created_at) VALUES ($1, 'service', $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&key.subject)
        .bind(key.created_at)
        .execute(&mut *$tx)
        .await?;
        sqlx::query(
            "INSERT INTO credentials (id, kind, subject, lookup, name, scopes, created_at, expires_at, rotated_from) \
             VALUES ($1, 'api_key', $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.id)
        .bind(&key.subject)
        .bind(&key.lookup[..])
        .bind(&key.name)
        .bind(&key.scopes)
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind($rotated_from)
        .execute(&mut *$tx)
        .await?;
    }};
}

impl Store {
    /// Stores a new key (and its subject, when new).
    pub async fn create_api_key(&self, key: &NewApiKey) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            insert_key!(tx, key, None::<String>);
            record_changes!(tx, key.created_at, [(ChangeKind::Credential, hex(&key.lookup))]);
            tx.commit().await?;
            Ok(())
        })
    }

    /// The key whose keyed hash is `lookup`.
    pub async fn find_api_key(&self, lookup: &[u8; 32]) -> Result<Option<ApiKeyRow>, StoreError> {
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

    /// One key by id.
    pub async fn get_api_key(&self, id: &str) -> Result<ApiKeyRow, StoreError> {
        with_pool!(self, p => {
            let row = sqlx::query(select!("AND c.id = $1")).bind(id).fetch_optional(p).await?;
            match row {
                Some(row) => Ok(row_to_key!(row)),
                None => Err(StoreError::NotFound { kind: "API key", id: id.to_owned() }),
            }
        })
    }

    /// Keys, newest first, optionally of one subject.
    pub async fn list_api_keys(&self, subject: Option<&str>) -> Result<Vec<ApiKeyRow>, StoreError> {
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

    /// Replaces key `old_id` with `new`: the new key gets the old one's subject, name and
    /// scopes (the caller copies them); the old one stays valid until `grace_until`
    /// (revoked at once when that is not after `now`).
    pub async fn rotate_api_key(
        &self,
        old_id: &str,
        new: &NewApiKey,
        grace_until: i64,
    ) -> Result<(), StoreError> {
        let now = new.created_at;
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            // A grace that has already ended revokes at once.
            let sql = "UPDATE credentials SET \
                 expires_at = CASE WHEN expires_at IS NULL OR expires_at > $2 THEN $2 ELSE expires_at END, \
                 revoked_at = CASE WHEN $2 <= $3 THEN $3 ELSE NULL END \
                 WHERE id = $1 AND kind = 'api_key' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3) \
                 RETURNING lookup";
            let lookup: Option<Vec<u8>> = sqlx::query_scalar(sql)
                .bind(old_id)
                .bind(grace_until)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(lookup) = lookup else {
                drop(tx);
                self.get_api_key(old_id).await?;
                return Err(StoreError::Conflict(format!("API key `{old_id}` is revoked or expired: create a new one")));
            };
            insert_key!(tx, new, Some(old_id));
            record_changes!(tx, now, [
                (ChangeKind::Credential, hex(&lookup)),
                (ChangeKind::Credential, hex(&new.lookup)),
            ]);
            tx.commit().await?;
            Ok(())
        })
    }

    /// Records when keys were last used (batched by the server, at most once a minute per key).
    pub async fn touch_last_used(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            for (id, at) in uses {
                sqlx::query("UPDATE credentials SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)")
                    .bind(id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
