use std::path::PathBuf;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `store.url` is not a `sqlite://` or `postgres://` URL.
    #[error("store.url `{0}` is not supported: use sqlite://PATH or postgres://USER@HOST:PORT/DB")]
    UnsupportedUrl(String),
    /// The SQLite file's folder could not be created.
    #[error("cannot create the folder for the SQLite store {path}: {source}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be created or made private (0600).
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The SQLite file exists but holds nothing: a store that was there has lost its content
    /// (truncated, or replaced by an empty file). Refused rather than started afresh.
    #[error(
        "the SQLite store {path} is an empty file: restore it from a backup, or delete the file to start a new store"
    )]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// The operation is for the other engine.
    #[error("{0}")]
    NotOnThisEngine(&'static str),
    /// A path that is not UTF-8, which SQLite is given as text.
    #[error("{0}: the path is not UTF-8")]
    BadPath(PathBuf),
    /// A file that is not a keycard store.
    #[error("{0} is not a keycard store")]
    NotAStore(PathBuf),
    /// The SQLite store is open in another process.
    #[error("the store {0} is open in another process: stop every keycard using it first")]
    InUse(PathBuf),
    /// The database answered with an error or could not be reached.
    #[error("store: {0}")]
    Database(#[from] sqlx::Error),
    /// The SQLite file answered the audit writer's connection with an error.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database did not answer in time.
    #[error("store: no answer in time")]
    Timeout,
    /// A blocking task doing store work ended abnormally.
    #[error("store: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// A stored audit segment could not be read back (edited or damaged in the database).
    #[error("store: audit segment {id} cannot be read: {why}")]
    BadAuditSegment {
        /// The segment's row id.
        id: i64,
        /// What is wrong with it.
        why: String,
    },
    /// The schema is newer than this build of keycard understands.
    #[error(
        "the store's schema is at version {found}, newer than this keycard knows ({known}); upgrade keycard"
    )]
    SchemaTooNew {
        /// Applied version found.
        found: i64,
        /// Latest version this build has.
        known: i64,
    },
    /// No such record (an id given by the operator).
    #[error("{kind} `{id}` not found")]
    NotFound {
        /// What was looked for.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// The operation does not apply in the record's state (revoking a revoked key…).
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    /// Whether the error means the store cannot be reached or read (fail closed: 503),
    /// rather than a problem with the request.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => !is_unique_violation(e),
            StoreError::Sqlite(_) | StoreError::Timeout | StoreError::Task(_) => true,
            _ => false,
        }
    }

    /// Whether the write collided with a row that exists (a primary key or unique index).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database(e) if is_unique_violation(e))
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
