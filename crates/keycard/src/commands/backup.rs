//! `keycard backup` and `keycard restore` (SQLite; PostgreSQL has pg_dump).

use std::path::Path;

use keycard_server::Settings;
use keycard_server::master_key::{self, MasterKeyFileError};
use serde::Serialize;

use super::common::{CliError, open_store};
use crate::output::json;

#[derive(Serialize)]
struct BackedUp<'a> {
    file: &'a Path,
    bytes: u64,
}

/// `keycard backup FILE`.
pub async fn backup(settings: &Settings, file: &Path, as_json: bool) -> Result<(), CliError> {
    if keycard_store::sqlite_file(settings.store_url.as_str()).is_none() {
        return Err(CliError::Usage(
            "keycard backup writes SQLite stores; back up PostgreSQL with pg_dump (docs/operations.md)".into(),
        ));
    }
    let store = open_store(settings).await?;
    let bytes = store.backup_to(file).await;
    store.close().await;
    let bytes = bytes?;
    if as_json {
        return json(&BackedUp { file, bytes });
    }
    println!("Backed up the store to {} ({bytes} bytes).", file.display());
    println!(
        "Its secrets are sealed with the master key ({}): keep a copy of the key, apart from the backup.",
        settings.master_key_file.display()
    );
    Ok(())
}

#[derive(Serialize)]
struct Restored<'a> {
    file: &'a Path,
    store: &'a Path,
    schema_version: i64,
    replaced_kept_at: Option<&'a Path>,
}

/// `keycard restore FILE`.
pub fn restore(settings: &Settings, file: &Path, as_json: bool) -> Result<(), CliError> {
    let Some(store) = keycard_store::sqlite_file(settings.store_url.as_str()) else {
        return Err(CliError::Usage(
            "keycard restore replaces SQLite stores; restore PostgreSQL with pg_restore or psql (docs/operations.md)".into(),
        ));
    };
    let info = keycard_store::inspect_backup(file)?;
    // A backup sealed with another key would be refused at the next start: refuse it now,
    // before it replaces anything.
    if let Some(recorded) = &info.master_key_check {
        let check = master_key::load(&settings.master_key_file)?.check_value();
        if !keycard_core::constant_time_eq(recorded.as_bytes(), check.as_bytes()) {
            return Err(CliError::Other(format!(
                "{}: {}",
                file.display(),
                MasterKeyFileError::OtherKey
            )));
        }
    }
    let kept = keycard_store::restore(file, store)?;
    if as_json {
        return json(&Restored {
            file,
            store,
            schema_version: info.version,
            replaced_kept_at: kept.as_deref(),
        });
    }
    println!("Restored {} to {}.", file.display(), store.display());
    if let Some(k) = &kept {
        println!("The store it replaced is kept at {}.", k.display());
    }
    println!("Start keycard: the credentials of the backup are in force.");
    Ok(())
}
