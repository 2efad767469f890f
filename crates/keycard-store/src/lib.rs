//! keycard's store: subjects, credentials, the change feed and the audit trail, in SQLite
//! (the default, one file, nothing to install) or PostgreSQL (for several instances).
//!
//! Both engines run the same SQL text for every operation: each method is written once and
//! expanded for each pool by `with_pool!`, so the two backends cannot drift apart. The
//! migrations are the only per-engine files (`migrations/sqlite`, `migrations/postgres`),
//! kept in step by the test suite, which runs every test on both engines.
//!
//! Every writing transaction bumps the change feed's revision first; running instances
//! follow the feed ([`Store::changes_since`]) to drop cached verification material.
//!
//! What it does not do: cache, hash or decide anything. Callers hand it keyed hashes and
//! sealed blobs, never a secret in the clear.
#![deny(missing_docs)]

mod api_keys;
mod audit;
mod backup;
mod cert_bindings;
mod changes;
mod credentials;
mod error;
mod grants;
mod hmac_keys;
mod meta;
mod migrate;
mod oauth;
mod open;
mod sessions;
mod signing_keys;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod users;

use sqlx::{PgPool, SqlitePool};

pub use api_keys::{ApiKeyRow, NewApiKey};
pub use audit::{AuditAppender, AuditBatch, AuditQuery, SEGMENT_EVENTS};
pub use backup::{BackupInfo, inspect_backup, restore};
pub use cert_bindings::{CertBindingRow, NewCertBinding};
pub use changes::{Change, ChangeKind};
pub use credentials::CredentialKind;
pub use error::StoreError;
pub use grants::GrantRow;
pub use hmac_keys::{HmacKeyRow, NewHmacKey};
pub use oauth::{ClientRow, CodeRow, Issued, Redeemed, Rotated};
pub use open::sqlite_file;
pub use sessions::{Ended, SessionRow};
pub use signing_keys::SigningKeyRow;
pub use users::{NewUser, SubjectRow, UserRow};

/// The store: a pool on one of the two engines.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the pool of whichever engine the store uses. The body is
/// compiled once per engine, so it must be SQL both understand (`$1` placeholders, `BIGINT`
/// values read as `i64`, `BLOB`/`BYTEA` as `Vec<u8>`).
macro_rules! with_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite($p) => $body,
            $crate::Backend::Postgres($p) => $body,
        }
    };
}
pub(crate) use with_pool;

/// A write transaction. On SQLite it is `BEGIN IMMEDIATE`: a deferred transaction that reads
/// first and writes second fails at once with `SQLITE_BUSY` (no busy timeout helps) when
/// another connection — `keycard serve` while the CLI writes, say — committed in between.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
    + Send;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
    + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
    + Send {
        self.begin()
    }
}

impl Store {
    /// Which engine: `"sqlite"` or `"postgres"`.
    pub fn engine(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Answers when the store can be read (for `/_keycard/ready`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()).map_err(StoreError::from))
    }

    /// Closes the pool, waiting for connections to return.
    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }
}

#[cfg(test)]
mod tests;
