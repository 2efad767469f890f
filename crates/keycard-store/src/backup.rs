//! Backing up and restoring a SQLite store. PostgreSQL has its own tools (`pg_dump`).
//!
//! A backup is `VACUUM INTO`: one read transaction, so a consistent snapshot taken while
//! keycard serves and writes, compacted into a new file. Restoring checks the file is a
//! keycard store this build can read, then swaps it in for the store file of a deployment
//! that is stopped, keeping the file it replaces.

use std::path::{Path, PathBuf};

use crate::{Backend, Store, StoreError};

/// What a backup file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The schema version.
    pub version: i64,
    /// The check value of the master key it was sealed with, if it records one.
    pub master_key_check: Option<String>,
}

impl Store {
    /// Writes a consistent snapshot of this SQLite store to `file` (a new file, 0600);
    /// returns its size. Safe while keycard serves.
    pub async fn backup_to(&self, file: &Path) -> Result<u64, StoreError> {
        let Backend::Sqlite(pool) = &self.backend else {
            return Err(StoreError::NotOnThisEngine(
                "keycard backup writes SQLite stores; back up PostgreSQL with pg_dump",
            ));
        };
        let text = file
            .to_str()
            .ok_or_else(|| StoreError::BadPath(file.to_path_buf()))?;
        // VACUUM INTO takes a file that is absent or empty: make it empty and private first,
        // and never over an existing file.
        crate::open::new_private_file(file)?;
        let written = sqlx::query("VACUUM INTO $1").bind(text).execute(pool).await;
        if let Err(e) = written {
            let _ = std::fs::remove_file(file);
            return Err(e.into());
        }
        let size = std::fs::metadata(file)
            .map(|m| m.len())
            .map_err(|source| StoreError::File {
                path: file.to_path_buf(),
                source,
            })?;
        Ok(size)
    }
}

/// Reads what the SQLite file `file` holds, read-only; refuses a file that is not a keycard
/// store or whose schema is newer than this build.
pub fn inspect_backup(file: &Path) -> Result<BackupInfo, StoreError> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let not_a_store = |_| StoreError::NotAStore(file.to_path_buf());
    let version: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM keycard_migrations", [], |r| {
            r.get(0)
        })
        .map_err(not_a_store)?;
    let version = version.ok_or_else(|| StoreError::NotAStore(file.to_path_buf()))?;
    let known = crate::migrate::latest_version();
    if version > known {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known,
        });
    }
    // Stores from before the check value have no `keycard_meta` table.
    let master_key_check = conn
        .query_row(
            "SELECT value FROM keycard_meta WHERE name = 'master_key_check'",
            [],
            |r| r.get(0),
        )
        .ok();
    Ok(BackupInfo {
        version,
        master_key_check,
    })
}

/// Puts the backup `from` in place of the SQLite store `store` of a stopped deployment;
/// returns where the file it replaced was kept (`None` when there was none). Refuses while
/// the store's write-ahead log exists: a keycard still has it open (or one crashed, and its
/// last writes are in the log: open the store once to fold them in, then restore).
pub fn restore(from: &Path, store: &Path) -> Result<Option<PathBuf>, StoreError> {
    inspect_backup(from)?;
    let mut wal = store.as_os_str().to_owned();
    wal.push("-wal");
    if Path::new(&wal).exists() {
        return Err(StoreError::InUse(store.to_path_buf()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::File { path, source }
    };
    let dir = store
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::open::private_dir(dir).map_err(io(dir))?;
    // Copied beside the store first, then renamed over it: the store is never half written.
    let mut staged = store.as_os_str().to_owned();
    staged.push(".restoring");
    let staged = PathBuf::from(staged);
    let _ = std::fs::remove_file(&staged);
    crate::open::new_private_file(&staged)?;
    std::fs::copy(from, &staged).map_err(io(&staged))?;
    std::fs::File::open(&staged)
        .and_then(|f| f.sync_all())
        .map_err(io(&staged))?;
    let kept = if store.exists() {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut kept = store.as_os_str().to_owned();
        kept.push(format!(".before-restore-{stamp}"));
        let kept = PathBuf::from(kept);
        std::fs::rename(store, &kept).map_err(io(store))?;
        Some(kept)
    } else {
        None
    };
    std::fs::rename(&staged, store).map_err(io(store))?;
    Ok(kept)
}
