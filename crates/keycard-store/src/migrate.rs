//! Migrations: numbered SQL files per engine, applied in order, in one transaction.

use crate::{Backend, Store, StoreError, with_pool};

const SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_users.sql")),
    (
        3,
        include_str!("../migrations/sqlite/0003_signing_keys.sql"),
    ),
    (4, include_str!("../migrations/sqlite/0004_oauth.sql")),
    (5, include_str!("../migrations/sqlite/0005_hmac.sql")),
    (6, include_str!("../migrations/sqlite/0006_mtls.sql")),
    (7, include_str!("../migrations/sqlite/0007_hmac_alg.sql")),
    (
        8,
        include_str!("../migrations/sqlite/0008_audit_segments.sql"),
    ),
    (
        9,
        include_str!("../migrations/sqlite/0009_compact_audit_segments.sql"),
    ),
    (10, include_str!("../migrations/sqlite/0010_sessions.sql")),
    (11, include_str!("../migrations/sqlite/0011_meta.sql")),
];
const POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_users.sql")),
    (
        3,
        include_str!("../migrations/postgres/0003_signing_keys.sql"),
    ),
    (4, include_str!("../migrations/postgres/0004_oauth.sql")),
    (5, include_str!("../migrations/postgres/0005_hmac.sql")),
    (6, include_str!("../migrations/postgres/0006_mtls.sql")),
    (7, include_str!("../migrations/postgres/0007_hmac_alg.sql")),
    (
        8,
        include_str!("../migrations/postgres/0008_audit_segments.sql"),
    ),
    (
        9,
        include_str!("../migrations/postgres/0009_compact_audit_segments.sql"),
    ),
    (10, include_str!("../migrations/postgres/0010_sessions.sql")),
    (11, include_str!("../migrations/postgres/0011_meta.sql")),
];

/// The schema version this build migrates to.
pub(crate) fn latest_version() -> i64 {
    SQLITE.last().map_or(0, |(v, _)| *v)
}

impl Store {
    /// Applies every migration not yet applied. Safe to run from several processes at once:
    /// PostgreSQL serialises them with an advisory lock, SQLite with `BEGIN IMMEDIATE`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_up_to(i64::MAX).await
    }

    /// Applies the migrations not yet applied up to version `last` (tests start from an
    /// older schema this way).
    pub(crate) async fn migrate_up_to(&self, last: i64) -> Result<(), StoreError> {
        let (begin, lock, files) = match self.backend {
            Backend::Sqlite(_) => ("BEGIN IMMEDIATE", None, SQLITE),
            // An arbitrary constant names keycard's migration lock.
            Backend::Postgres(_) => (
                "BEGIN",
                Some("SELECT pg_advisory_xact_lock(7234017283807667826)"),
                POSTGRES,
            ),
        };
        with_pool!(self, p => {
            let mut tx = p.begin_with(begin).await?;
            if let Some(lock) = lock {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS keycard_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM keycard_migrations")
                .fetch_one(&mut *tx)
                .await?;
            let applied = check_version(applied.unwrap_or(0), files)?;
            for (version, sql) in files.iter().filter(|(v, _)| *v > applied && *v <= last) {
                sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO keycard_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(version)
                    .bind(now())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}

fn check_version(applied: i64, known: &[(i64, &str)]) -> Result<i64, StoreError> {
    let latest = known.last().map(|(v, _)| *v).unwrap_or(0);
    if applied > latest {
        return Err(StoreError::SchemaTooNew {
            found: applied,
            known: latest,
        });
    }
    Ok(applied)
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
