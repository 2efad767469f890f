//! keycard's own JWT signing keys, sealed: the store never sees a private key in the clear.

use crate::BeginWrite;
use sqlx::Row;

use crate::{Store, StoreError, with_pool};

/// A stored signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    /// The key id.
    pub kid: String,
    /// `ES256`, `EdDSA` or `RS256`.
    pub alg: String,
    /// The sealed PKCS#8 DER.
    pub sealed: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// When it stopped signing.
    pub retired_at: Option<i64>,
    /// Published in the JWKS until then (its tokens have expired by then).
    pub publish_until: Option<i64>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .field("publish_until", &self.publish_until)
            .finish_non_exhaustive()
    }
}

macro_rules! row_to_key {
    ($row:expr) => {{
        let row = $row;
        SigningKeyRow {
            kid: row.try_get("kid")?,
            alg: row.try_get("alg")?,
            sealed: row.try_get("sealed")?,
            created_at: row.try_get("created_at")?,
            retired_at: row.try_get("retired_at")?,
            publish_until: row.try_get("publish_until")?,
        }
    }};
}

impl Store {
    /// Keys still published at `now` (current first, then newest retired).
    pub async fn published_signing_keys(&self, now: i64) -> Result<Vec<SigningKeyRow>, StoreError> {
        with_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT kid, alg, sealed, created_at, retired_at, publish_until FROM signing_keys \
                 WHERE publish_until IS NULL OR publish_until > $1 \
                 ORDER BY (retired_at IS NULL) DESC, created_at DESC, kid",
            )
            .bind(now)
            .fetch_all(p)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(row_to_key!(row));
            }
            Ok(out)
        })
    }

    /// The oldest signing key, published or not: a sealed secret to try a master key on.
    pub async fn oldest_signing_key(&self) -> Result<Option<SigningKeyRow>, StoreError> {
        with_pool!(self, p => {
            let row = sqlx::query(
                "SELECT kid, alg, sealed, created_at, retired_at, publish_until FROM signing_keys \
                 ORDER BY created_at, kid LIMIT 1",
            )
            .fetch_optional(p)
            .await?;
            Ok(match row {
                Some(row) => Some(row_to_key!(row)),
                None => None,
            })
        })
    }

    /// Makes `new` the current key: the current one (if any) is retired now and stays
    /// published until `publish_until`. With `only_if_none`, does nothing when a current key
    /// exists (first start of several instances at once); returns whether `new` was stored.
    pub async fn add_signing_key(
        &self,
        new: &SigningKeyRow,
        publish_until: i64,
        only_if_none: bool,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            // Serialises concurrent rotations on PostgreSQL (SQLite has one writer).
            sqlx::query("UPDATE feed_head SET revision = revision WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            let current: Option<String> = sqlx::query_scalar(
                "SELECT kid FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1",
            )
            .fetch_optional(&mut *tx)
            .await?;
            if only_if_none && current.is_some() {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE signing_keys SET retired_at = $1, publish_until = $2 WHERE retired_at IS NULL",
            )
            .bind(new.created_at)
            .bind(publish_until)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO signing_keys (kid, alg, sealed, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&new.kid)
            .bind(&new.alg)
            .bind(&new.sealed)
            .bind(new.created_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}
