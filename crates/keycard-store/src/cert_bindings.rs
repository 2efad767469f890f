//! Client-certificate bindings (`keycard cert add`): credentials of kind `cert`, found by
//! the keyed hash of the certificate's SHA-256 fingerprint. The fingerprint itself is kept
//! in `key_id` (it is public: `cert list` shows it). One active binding per certificate; a
//! revoked binding's lookup is retired so that the certificate can be bound again.

use crate::BeginWrite;
use sqlx::Row;

use crate::changes::{ChangeKind, hex, record_changes};
use crate::{Store, StoreError, with_pool};

/// A binding to store.
#[derive(Debug, Clone)]
pub struct NewCertBinding {
    /// The credential id (`cert_…`).
    pub id: String,
    /// The subject; created as a service subject when new.
    pub subject: String,
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub fingerprint: String,
    /// The keyed hash of `fingerprint`.
    pub lookup: [u8; 32],
    /// Space-separated scopes.
    pub scopes: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, or never.
    pub expires_at: Option<i64>,
}

/// A stored binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertBindingRow {
    /// The credential id.
    pub id: String,
    /// The subject.
    pub subject: String,
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub fingerprint: String,
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

macro_rules! select {
    ($tail:literal) => {
        concat!(
            "SELECT c.id, c.subject, c.key_id, c.scopes, c.created_at, c.expires_at, c.revoked_at, ",
            "c.last_used_at, s.disabled_at ",
            "FROM credentials c JOIN subjects s ON s.name = c.subject WHERE c.kind = 'cert' ",
            $tail
        )
    };
}

macro_rules! row_to_binding {
    ($row:expr) => {{
        let row = $row;
        let disabled: Option<i64> = row.try_get("disabled_at")?;
        let fingerprint: Option<String> = row.try_get("key_id")?;
        CertBindingRow {
            id: row.try_get("id")?,
            subject: row.try_get("subject")?,
            fingerprint: fingerprint.unwrap_or_default(),
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
    /// Binds a certificate to a subject (created as a service subject when new). Refused
    /// when the certificate already has an active binding.
    pub async fn create_cert_binding(&self, b: &NewCertBinding) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let existing: Vec<(String, Option<i64>)> = sqlx::query_as(
                "SELECT id, revoked_at FROM credentials WHERE kind = 'cert' AND lookup = $1",
            )
            .bind(&b.lookup[..])
            .fetch_all(&mut *tx)
            .await?;
            for (id, revoked_at) in existing {
                if revoked_at.is_none() {
                    return Err(StoreError::Conflict(format!(
                        "this certificate is already bound ({id}); revoke that binding first"
                    )));
                }
                sqlx::query("UPDATE credentials SET lookup = $2 WHERE id = $1")
                    .bind(&id)
                    .bind(format!("retired\0{id}").into_bytes())
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO subjects (name, kind, created_at) VALUES ($1, 'service', $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&b.subject)
            .bind(b.created_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO credentials (id, kind, subject, lookup, scopes, created_at, expires_at, key_id) \
                 VALUES ($1, 'cert', $2, $3, $4, $5, $6, $7)",
            )
            .bind(&b.id)
            .bind(&b.subject)
            .bind(&b.lookup[..])
            .bind(&b.scopes)
            .bind(b.created_at)
            .bind(b.expires_at)
            .bind(&b.fingerprint)
            .execute(&mut *tx)
            .await?;
            record_changes!(tx, b.created_at, [(ChangeKind::Credential, hex(&b.lookup))]);
            tx.commit().await?;
            Ok(())
        })
    }

    /// The binding of the certificate whose fingerprint has the keyed hash `lookup`.
    pub async fn find_cert_binding(
        &self,
        lookup: &[u8; 32],
    ) -> Result<Option<CertBindingRow>, StoreError> {
        with_pool!(self, p => {
            let row = sqlx::query(select!("AND c.lookup = $1"))
                .bind(&lookup[..])
                .fetch_optional(p)
                .await?;
            match row {
                Some(row) => Ok(Some(row_to_binding!(row))),
                None => Ok(None),
            }
        })
    }

    /// Bindings, newest first.
    pub async fn list_cert_bindings(&self) -> Result<Vec<CertBindingRow>, StoreError> {
        with_pool!(self, p => {
            let rows = sqlx::query(select!("ORDER BY c.created_at DESC, c.id"))
                .fetch_all(p)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(row_to_binding!(row));
            }
            Ok(out)
        })
    }
}
