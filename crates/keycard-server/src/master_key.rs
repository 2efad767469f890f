//! Loading the master key: `KEYCARD_MASTER_KEY` wins; else the key file, created with mode
//! 0600 on first start. [`unlock`] then holds it against the check value the store recorded,
//! so that a store is never served, read or written under a key it was not sealed with.

use std::io::Write;
use std::path::{Path, PathBuf};

use keycard_core::{MasterKey, MasterKeyError};
use keycard_store::{Store, StoreError};

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
    /// The key does not match the check value the store recorded (or cannot open its
    /// sealed secrets).
    #[error(
        "this store was sealed with another master key: use the key file it was created with (secrets.master_key_file, or {MASTER_KEY_ENV})"
    )]
    OtherKey,
    /// The store was sealed with a master key and there is none to load: none is made up.
    #[error(
        "secrets.master_key_file {path} does not exist, and this store was sealed with a master key: restore the file (or set {MASTER_KEY_ENV})"
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The store could not be asked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The master key for `store`, checked against the check value the store recorded: a key
/// that does not match is refused ([`MasterKeyFileError::OtherKey`]), and none is created
/// for a store that has one recorded, or that holds credentials. A store without a check
/// value yet (new, or made by a keycard that did not record one) records this key's, after
/// the key has opened the store's oldest sealed signing key, if there is one.
pub async fn unlock(store: &Store, path: &Path) -> Result<MasterKey, MasterKeyFileError> {
    let recorded = store.master_key_check().await?;
    let key = match (&recorded, load(path)) {
        // A store that holds credentials was made with a key: none is made up for it.
        (None, Err(MasterKeyFileError::Missing { .. })) if !store.holds_credentials().await? => {
            create(path)?
        }
        (_, loaded) => loaded?,
    };
    let check = key.check_value();
    let recorded = match recorded {
        Some(r) => r,
        None => {
            match store.oldest_signing_key().await? {
                Some(row) if !crate::state::keyring::opens(&key.sealer(), &row) => {
                    return Err(MasterKeyFileError::OtherKey);
                }
                Some(_) => {}
                None if store.holds_credentials().await? => tracing::warn!(
                    "this store records no master key check value and holds no sealed key to test the master key on: it is taken as the store's key from now on"
                ),
                None => {}
            }
            store.record_master_key_check(&check).await?
        }
    };
    if !keycard_core::constant_time_eq(recorded.as_bytes(), check.as_bytes()) {
        return Err(MasterKeyFileError::OtherKey);
    }
    Ok(key)
}

/// Whether the master key at `path` (or in the environment) is the one `store` recorded,
/// creating and recording nothing (for `doctor`): `Ok(false)` when the store has no check
/// value recorded yet, [`MasterKeyFileError::OtherKey`] when the key is another.
pub async fn verify(store: &Store, path: &Path) -> Result<bool, MasterKeyFileError> {
    let Some(recorded) = store.master_key_check().await? else {
        return match load(path) {
            Err(MasterKeyFileError::Missing { .. }) if !store.holds_credentials().await? => {
                Ok(false)
            }
            Err(e) => Err(e),
            Ok(key) => match store.oldest_signing_key().await? {
                Some(row) if !crate::state::keyring::opens(&key.sealer(), &row) => {
                    Err(MasterKeyFileError::OtherKey)
                }
                _ => Ok(false),
            },
        };
    };
    let check = load(path)?.check_value();
    if !keycard_core::constant_time_eq(recorded.as_bytes(), check.as_bytes()) {
        return Err(MasterKeyFileError::OtherKey);
    }
    Ok(true)
}

/// Reads the master key from the environment or `path`; never creates one.
pub fn load(path: &Path) -> Result<MasterKey, MasterKeyFileError> {
    if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
        return MasterKey::from_base64(&text).map_err(MasterKeyFileError::Env);
    }
    match std::fs::read_to_string(path) {
        Ok(text) => MasterKey::from_base64(&text).map_err(|source| MasterKeyFileError::Bad {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(MasterKeyFileError::Missing {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(MasterKeyFileError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads the master key from the environment or `path`, creating the file (0600, its folder
/// 0700) when neither exists.
pub fn load_or_create(path: &Path) -> Result<MasterKey, MasterKeyFileError> {
    match load(path) {
        Err(MasterKeyFileError::Missing { .. }) => create(path),
        loaded => loaded,
    }
}

/// Makes a new key file at `path` (0600, its folder 0700), or reads the one another process
/// made first.
fn create(path: &Path) -> Result<MasterKey, MasterKeyFileError> {
    let io = |source| MasterKeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
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
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load(path),
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

/// Creates `dir` and its missing parents, 0700 on Unix (an existing folder keeps its mode).
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
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

    /// A store records the first key it is unlocked with and refuses every other one; a
    /// store sealed before check values were recorded adopts the key only if that key opens
    /// its sealed signing key. On each engine.
    #[tokio::test]
    async fn a_store_is_unlocked_by_its_own_key_only() {
        for engine in keycard_store::testing::engines() {
            let temp = keycard_store::testing::TempStore::new(engine)
                .await
                .unwrap();
            let store = &temp.store;
            let dir = tempfile::tempdir().unwrap();
            let (a, b) = (dir.path().join("a.key"), dir.path().join("b.key"));
            let key_a = load_or_create(&a).unwrap();
            load_or_create(&b).unwrap();
            // Sealed under A before any check value was recorded.
            let tokens = crate::Settings::defaults(dir.path()).unwrap().tokens;
            crate::state::keyring::ensure_key(store, &key_a.sealer(), &tokens)
                .await
                .unwrap();
            assert_eq!(store.master_key_check().await.unwrap(), None);
            // Its key file gone: the store holds a sealed key, so no key is made up for it.
            let lost = dir.path().join("lost.key");
            assert!(matches!(
                unlock(store, &lost).await,
                Err(MasterKeyFileError::Missing { .. })
            ));
            assert!(!lost.exists());
            assert!(matches!(
                verify(store, &lost).await,
                Err(MasterKeyFileError::Missing { .. })
            ));
            assert!(matches!(
                verify(store, &b).await,
                Err(MasterKeyFileError::OtherKey)
            ));
            assert!(matches!(
                unlock(store, &b).await,
                Err(MasterKeyFileError::OtherKey)
            ));
            assert_eq!(store.master_key_check().await.unwrap(), None, "{engine}");
            assert!(!verify(store, &a).await.unwrap());
            let unlocked = unlock(store, &a).await.unwrap();
            assert_eq!(unlocked.to_base64(), key_a.to_base64());
            assert_eq!(
                store.master_key_check().await.unwrap(),
                Some(key_a.check_value())
            );
            assert!(verify(store, &a).await.unwrap());
            assert!(matches!(
                verify(store, &b).await,
                Err(MasterKeyFileError::OtherKey)
            ));
            assert!(matches!(
                unlock(store, &b).await,
                Err(MasterKeyFileError::OtherKey)
            ));
            // No key file: none is made up for a sealed store.
            let gone = dir.path().join("gone.key");
            let e = unlock(store, &gone).await.unwrap_err();
            assert!(matches!(e, MasterKeyFileError::Missing { .. }), "{e}");
            assert!(!gone.exists());
            temp.cleanup().await;
        }
    }
}
