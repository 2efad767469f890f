//! Test support: a throw-away database per test on either engine.
//!
//! PostgreSQL tests read `KEYCARD_TEST_POSTGRES_URL`. Unset: they are skipped, and say so.
//! Set but not answering: they fail (CI must never pass by skipping).

use std::path::PathBuf;

use crate::{Store, StoreError};

/// A store that lives as long as this value: a SQLite file in a temporary folder, or a
/// fresh PostgreSQL database dropped on [`TempStore::cleanup`].
#[derive(Debug)]
pub struct TempStore {
    /// The store URL (hand it to a keycard process as `store.url`).
    pub url: String,
    /// The store.
    pub store: Store,
    admin_url: Option<String>,
    db_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

/// Which engines to test on: SQLite always, PostgreSQL when `KEYCARD_TEST_POSTGRES_URL` is set.
pub fn engines() -> Vec<&'static str> {
    let mut v = vec!["sqlite"];
    if postgres_admin_url().is_some() {
        v.push("postgres");
    } else {
        eprintln!("note: KEYCARD_TEST_POSTGRES_URL is not set; PostgreSQL store tests are skipped");
    }
    v
}

/// The PostgreSQL URL tests use, if configured.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("KEYCARD_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

impl TempStore {
    /// A new, migrated, empty store on `engine` (`"sqlite"` or `"postgres"`).
    pub async fn new(engine: &str) -> Result<TempStore, StoreError> {
        Self::at_version(engine, i64::MAX).await
    }

    /// A new store on `engine` migrated only up to schema `version` (to test a migration
    /// from there).
    pub(crate) async fn at_version(engine: &str, version: i64) -> Result<TempStore, StoreError> {
        async fn open_at(url: &str, version: i64) -> Result<Store, StoreError> {
            let store = Store::connect(url)?;
            store.ping().await?;
            store.migrate_up_to(version).await?;
            Ok(store)
        }
        match engine {
            "postgres" => {
                let admin = postgres_admin_url().ok_or_else(|| {
                    StoreError::UnsupportedUrl("KEYCARD_TEST_POSTGRES_URL unset".into())
                })?;
                let name = format!(
                    "kc_test_{}",
                    keycard_core::random_base62(12)
                        .unwrap_or_default()
                        .to_lowercase()
                );
                let admin_store = Store::connect(&admin)?;
                admin_store
                    .execute_admin(&format!("CREATE DATABASE {name}"))
                    .await?;
                admin_store.close().await;
                let url = replace_db(&admin, &name);
                let store = open_at(&url, version).await?;
                Ok(TempStore {
                    url,
                    store,
                    admin_url: Some(admin),
                    db_name: Some(name),
                    _dir: None,
                })
            }
            _ => {
                let dir = tempfile::tempdir().map_err(|source| StoreError::CreateDir {
                    path: PathBuf::from("tmp"),
                    source,
                })?;
                let url = format!("sqlite://{}", dir.path().join("keycard.db").display());
                let store = open_at(&url, version).await?;
                Ok(TempStore {
                    url,
                    store,
                    admin_url: None,
                    db_name: None,
                    _dir: Some(dir),
                })
            }
        }
    }

    /// Drops the PostgreSQL database (the SQLite folder goes with the value).
    pub async fn cleanup(self) {
        self.store.close().await;
        if let (Some(admin), Some(name)) = (self.admin_url, self.db_name)
            && let Ok(admin_store) = Store::connect(&admin)
        {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = admin_store.execute_admin(&sql).await;
            admin_store.close().await;
        }
    }
}

/// `postgres://u@h:5432/test` with the database name replaced.
pub fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base.get(after_scheme..).and_then(|rest| rest.find('/')) {
        Some(slash) => base.get(..after_scheme + slash).unwrap_or(base),
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

impl Store {
    async fn execute_admin(&self, sql: &str) -> Result<(), StoreError> {
        crate::with_pool!(self, p => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(p).await?;
            Ok(())
        })
    }
}
