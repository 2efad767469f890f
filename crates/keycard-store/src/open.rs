//! Opening a store from `store.url`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::{Backend, Store, StoreError};

/// How long a caller waits for a pooled connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

impl Store {
    /// Opens (creating and migrating on first use) the store at `url`:
    /// `sqlite://PATH` (relative paths as given; the caller resolves them) or
    /// `postgres://…` / `postgresql://…`.
    ///
    /// A SQLite file that exists with no bytes in it is refused ([`StoreError::EmptyFile`]):
    /// keycard creates its file itself, so an empty one is a store that lost its content.
    /// A new SQLite store is made 0600 in a folder made 0700.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let file = sqlite_file(url);
        if let Some(path) = file
            && std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0)
        {
            return Err(StoreError::EmptyFile {
                path: path.to_path_buf(),
            });
        }
        let new_file = file.filter(|p| !p.exists());
        let store = Self::connect(url)?;
        store.ping().await?;
        store.migrate().await?;
        if let Some(path) = new_file {
            make_private(path)?;
        }
        Ok(store)
    }

    /// Builds the pool without touching the database (connections are made on first use).
    pub fn connect(url: &str) -> Result<Store, StoreError> {
        Self::connect_sized(url, None)
    }

    /// Like [`Store::connect`], with at most `max` connections (default: 4 on SQLite, 8 on
    /// PostgreSQL). A small separate pool keeps a reader that must stay prompt (the change
    /// feed) out of the queue behind bulk writes (the audit trail).
    pub fn connect_sized(url: &str, max: Option<u32>) -> Result<Store, StoreError> {
        if let Some(path) = sqlite_path(url) {
            if path.is_empty() {
                return Err(StoreError::UnsupportedUrl(url.to_owned()));
            }
            if let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                private_dir(dir).map_err(|source| StoreError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(max.unwrap_or(4))
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(opts);
            return Ok(Store {
                backend: Backend::Sqlite(pool),
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?.application_name("keycard");
            let pool = PgPoolOptions::new()
                .max_connections(max.unwrap_or(8))
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(opts);
            return Ok(Store {
                backend: Backend::Postgres(pool),
            });
        }
        Err(StoreError::UnsupportedUrl(redact_url(url)))
    }
}

/// Makes a SQLite store that was just created private: the file and its `-wal` and `-shm`
/// companions 0600 (SQLite creates them 0644 under the usual umask, and the companions take
/// the file's mode when made again).
fn make_private(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => {}
                // `:memory:`, or no companion (yet).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError::File {
                        path: file.into(),
                        source,
                    });
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Creates `file`, empty and 0600 (Unix); an existing file is an error.
pub(crate) fn new_private_file(file: &Path) -> Result<(), StoreError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(file).map(drop).map_err(|source| StoreError::File {
        path: file.to_path_buf(),
        source,
    })
}

/// Creates `dir` and its missing parents, 0700 on Unix.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// The file of a `sqlite://PATH` store URL; `None` for another engine.
pub fn sqlite_file(url: &str) -> Option<&Path> {
    sqlite_path(url).filter(|p| !p.is_empty()).map(Path::new)
}

/// The path of a `sqlite://PATH` URL (its query cut off).
fn sqlite_path(url: &str) -> Option<&str> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    Some(path.split('?').next().unwrap_or(path))
}

/// A URL with any password replaced, for error messages.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = url.get(scheme_end + 3..at).unwrap_or("");
            match userinfo.split_once(':') {
                Some((user, _)) => format!(
                    "{}{user}:***{}",
                    url.get(..scheme_end + 3).unwrap_or(""),
                    url.get(at..).unwrap_or("")
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_errors() {
        assert_eq!(redact_url("mysql://u:secret@h/db"), "mysql://u:***@h/db");
        assert_eq!(redact_url("mysql://h/db"), "mysql://h/db");
        let e = Store::connect("mysql://u:pw@h/db").unwrap_err().to_string();
        assert!(!e.contains("pw@"), "{e}");
    }
}
