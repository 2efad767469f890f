//! Facts about the store itself: the check value of the master key it was sealed with.

use crate::{Backend, BeginWrite, Store, StoreError, with_pool};

const MASTER_KEY_CHECK: &str = "master_key_check";

impl Store {
    /// The check value of the master key this store was sealed with, if one is recorded.
    pub async fn master_key_check(&self) -> Result<Option<String>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_scalar("SELECT value FROM keycard_meta WHERE name = $1")
                .bind(MASTER_KEY_CHECK)
                .fetch_optional(p)
                .await?)
        })
    }

    /// Records `value` as the master key's check value unless one is recorded already;
    /// returns the one recorded (`value`, or the one another process recorded first).
    pub async fn record_master_key_check(&self, value: &str) -> Result<String, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("INSERT INTO keycard_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(MASTER_KEY_CHECK)
                .bind(value)
                .execute(&mut *tx)
                .await?;
            let recorded: String = sqlx::query_scalar("SELECT value FROM keycard_meta WHERE name = $1")
                .bind(MASTER_KEY_CHECK)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(recorded)
        })
    }

    /// Whether the store holds any credential, client or signing key: a store in use, whose
    /// master key exists somewhere.
    pub async fn holds_credentials(&self) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let n: i64 = sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM credentials LIMIT 1) c) \
                 + (SELECT COUNT(*) FROM (SELECT 1 FROM oauth_clients LIMIT 1) o) \
                 + (SELECT COUNT(*) FROM (SELECT 1 FROM signing_keys LIMIT 1) s)",
            )
            .fetch_one(p)
            .await?;
            Ok(n > 0)
        })
    }

    /// Reads the store's own tables (for `/_keycard/ready`). Unlike a bare `SELECT 1`, this
    /// touches the data: on SQLite through a new read-only connection too, since a pooled
    /// one trusts the pages it has cached, so a file truncated or overwritten while keycard
    /// runs is noticed.
    pub async fn readable(&self) -> Result<(), StoreError> {
        if let Backend::Sqlite(p) = &self.backend {
            let path = p.connect_options().get_filename().to_path_buf();
            tokio::task::spawn_blocking(move || {
                use rusqlite::OpenFlags;
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.query_row("SELECT MAX(version) FROM keycard_migrations", [], |r| {
                    r.get::<_, Option<i64>>(0)
                })?;
                Ok::<_, StoreError>(())
            })
            .await
            .map_err(StoreError::Task)??;
        }
        with_pool!(self, p => {
            let _: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM keycard_migrations")
                .fetch_one(p)
                .await?;
            let _: Option<String> = sqlx::query_scalar("SELECT value FROM keycard_meta WHERE name = $1")
                .bind(MASTER_KEY_CHECK)
                .fetch_optional(p)
                .await?;
            Ok(())
        })
    }
}
