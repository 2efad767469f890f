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
        // Absolute, so that SQLite never reads it as a URI (`file:…`).
        let file = &std::path::absolute(file).map_err(|source| StoreError::File {
            path: file.to_path_buf(),
            source,
        })?;
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
    let version = version
        .filter(|v| *v >= 1)
        .ok_or_else(|| StoreError::NotAStore(file.to_path_buf()))?;
    let known = crate::migrate::latest_version();
    if version > known {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known,
        });
    }
    // Stores from before the check value have no `keycard_meta` table; in one that has it,
    // a value that is not text is no store keycard wrote.
    let has_meta: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'keycard_meta'",
            [],
            |r| r.get(0),
        )
        .map_err(not_a_store)?;
    let master_key_check = if has_meta > 0 {
        use rusqlite::OptionalExtension;
        conn.query_row(
            "SELECT value FROM keycard_meta WHERE name = 'master_key_check'",
            [],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .map_err(not_a_store)?
    } else {
        None
    };
    Ok(BackupInfo {
        version,
        master_key_check,
    })
}

/// Puts the backup `from` in place of the SQLite store `store` of a stopped deployment;
/// returns where the file it replaced was kept (`None` when there was none). Refused while
/// another connection has the store open (a running keycard). Nothing is overwritten: the
/// backup is copied to a new file beside the store and renamed over it, and the store it
/// replaces stays under a new name.
pub fn restore(from: &Path, store: &Path) -> Result<Option<PathBuf>, StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::File { path, source }
    };
    // The file itself, through any symlink: SQLite keeps its log beside the target.
    let store = std::fs::canonicalize(store).unwrap_or_else(|_| store.to_path_buf());
    let source = std::fs::canonicalize(from).map_err(io(from))?;
    if source == store {
        return Err(StoreError::Conflict(format!(
            "{} is the store itself: there is nothing to restore",
            from.display()
        )));
    }
    inspect_backup(&source)?;
    if store.exists() {
        ensure_unused(&store)?;
    }
    let dir = store
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::open::private_dir(dir).map_err(io(dir))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // A new file (0600, whatever the backup's mode), written and synced before it replaces
    // the store, so that the store is never half written.
    let staged = suffixed(
        &store,
        &format!(".restoring-{}-{stamp}", std::process::id()),
    );
    crate::open::new_private_file(&staged)?;
    let copied = std::fs::File::open(&source)
        .and_then(|mut src| {
            let mut dst = std::fs::OpenOptions::new().write(true).open(&staged)?;
            std::io::copy(&mut src, &mut dst)?;
            dst.sync_all()
        })
        .map_err(io(&staged));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&staged);
        return Err(e);
    }
    // The replaced store keeps a name of its own (a link made anew, never over a file),
    // then the backup takes the store's name in one rename.
    let kept = if store.exists() {
        let secs = stamp / 1_000_000_000;
        let mut n = 0u32;
        loop {
            let name = match n {
                0 => format!(".before-restore-{secs}"),
                n => format!(".before-restore-{secs}-{n}"),
            };
            let kept = suffixed(&store, &name);
            match std::fs::hard_link(&store, &kept) {
                Ok(()) => break Some(kept),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => {
                    let _ = std::fs::remove_file(&staged);
                    return Err(io(&kept)(e));
                }
            }
        }
    } else {
        None
    };
    std::fs::rename(&staged, &store).map_err(io(&store))?;
    Ok(kept)
}

/// `path` with `suffix` appended to its file name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Refuses a store another connection has open. A store whose write-ahead log is still
/// there (a command that ended without closing it, or a crash) is opened and closed once:
/// its last connection folds the log in and removes it. If the log is still there after
/// that, someone else has the store open.
fn ensure_unused(store: &Path) -> Result<(), StoreError> {
    let wal = suffixed(store, "-wal");
    if !wal.exists() {
        return Ok(());
    }
    {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            store,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(1))?;
        let _: Option<i64> = conn
            .query_row("SELECT MAX(version) FROM keycard_migrations", [], |r| {
                r.get(0)
            })
            .map_err(|_| StoreError::NotAStore(store.to_path_buf()))?;
    }
    if wal.exists() {
        return Err(StoreError::InUse(store.to_path_buf()));
    }
    Ok(())
}
