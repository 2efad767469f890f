//! Loading the master key: `KEYCARD_MASTER_KEY` wins; else the key file, created with mode
//! 0600 on first start.

use std::io::Write;
use std::path::{Path, PathBuf};

use keycard_core::{MasterKey, MasterKeyError};

/// The environment variable that holds the master key (standard base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "KEYCARD_MASTER_KEY";

/// Why the master key could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MasterKeyFileError {
    /// `KEYCARD_MASTER_KEY` is set but wrong.
    #[error("{MASTER_KEY_ENV}: {0}")]
    Env(MasterKeyError),
    /// The file exists but holds no valid key.
    #[error("secrets.master_key_file {path}: {source}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: MasterKeyError,
    },
    /// The file could not be read or created.
    #[error("secrets.master_key_file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No random numbers.
    #[error("cannot generate a master key: {0}")]
    Generate(MasterKeyError),
}

/// Reads the master key from the environment or `path`, creating the file (0600, its folder
/// 0700) when neither exists.
pub fn load_or_create(path: &Path) -> Result<MasterKey, MasterKeyFileError> {
    if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
        return MasterKey::from_base64(&text).map_err(MasterKeyFileError::Env);
    }
    let io = |source| MasterKeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => MasterKey::from_base64(&text).map_err(|source| MasterKeyFileError::Bad {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = MasterKey::generate().map_err(MasterKeyFileError::Generate)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                create_private_dir(dir).map_err(io)?;
            }
            match create_private_file(path) {
                Ok(mut f) => {
                    f.write_all(format!("{}\n", key.to_base64()).as_bytes())
                        .map_err(io)?;
                    f.sync_all().map_err(io)?;
                    tracing::info!(path = %path.display(), "created a new master key file (mode 0600)");
                    Ok(key)
                }
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create(path),
                Err(e) => Err(io(e)),
            }
        }
        Err(e) => Err(io(e)),
    }
}

/// Whether group or others may read the file (Unix); `None` elsewhere or if unreadable.
pub fn readable_by_others(path: &Path) -> Option<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o077 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/master.key");
        let a = load_or_create(&path).unwrap();
        assert_eq!(readable_by_others(&path), Some(false));
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.to_base64(), b.to_base64());
    }

    #[test]
    fn a_broken_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, "short").unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(
            e.contains("master.key") && e.contains("secrets.master_key_file"),
            "{e}"
        );
    }
}
