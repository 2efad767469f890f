//! What every command shares: the operator's error, loading the configuration, opening the
//! store, the manager with its audit journal, and the flags' parsers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use keycard_core::{AuditEvent, MasterKey, parse_duration};
use keycard_server::manage::{Journal, ManageError, Manager};
use keycard_server::{ConfigError, Settings, master_key};
use keycard_store::{Store, StoreError};

/// An error for the operator: what went wrong and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A bad config file (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bad flag value (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The store refused or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The master key.
    #[error(transparent)]
    MasterKey(#[from] master_key::MasterKeyFileError),
    /// The server could not start.
    #[error(transparent)]
    Start(#[from] keycard_server::StartError),
    /// `doctor` found critical problems (exit code 1).
    #[error("{0} critical finding(s)")]
    Findings(usize),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The process exit code: 2 for configuration and usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// The settings the command line names: `--config` (or `$KEYCARD_CONFIG`, which clap reads
/// into it), else `--data-dir` (the built-in defaults, data in DIR), else `./keycard.toml`
/// if present; `None` when there is none of these.
pub(crate) fn find_settings(
    config: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<Option<Settings>, CliError> {
    if let (Some(_), Some(_)) = (config, data_dir) {
        return Err(CliError::Usage(
            "--data-dir and --config (or KEYCARD_CONFIG) both given: the config file says where the data is".into(),
        ));
    }
    if let Some(path) = config {
        return Ok(Some(Settings::load(path)?));
    }
    if let Some(dir) = data_dir {
        return Ok(Some(Settings::from_toml(DATA_DIR, dir, "--data-dir")?));
    }
    let local = PathBuf::from("keycard.toml");
    if local.exists() {
        return Ok(Some(Settings::load(&local)?));
    }
    Ok(None)
}

/// `serve`'s settings: as [`find_settings`], else the built-in defaults (data in
/// ./keycard-data), said in the log.
pub(crate) fn serve_settings(
    config: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<Settings, CliError> {
    if let Some(settings) = find_settings(config, data_dir)? {
        return Ok(settings);
    }
    let settings = Settings::defaults(Path::new("."))?;
    tracing::info!(
        store = ?settings.store_url,
        master_key_file = %settings.master_key_file.display(),
        "no config file (--config, KEYCARD_CONFIG or ./keycard.toml): built-in defaults"
    );
    Ok(settings)
}

/// The settings of a command that manages or reads a store: refused without a config or
/// `--data-dir`, so that the CLI never makes a second store that the server does not read.
pub(crate) fn store_settings(
    config: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<Settings, CliError> {
    find_settings(config, data_dir)?.ok_or_else(|| CliError::Usage(NO_CONFIG.into()))
}

/// What a management command without a config says.
pub(crate) const NO_CONFIG: &str = "no config file: pass --config FILE (or set KEYCARD_CONFIG) to name the config `keycard serve` runs with, or --data-dir DIR for a store under the built-in defaults (./keycard-data is serve's)";

/// `--data-dir DIR`: the built-in defaults with the data files directly in DIR.
const DATA_DIR: &str = "[store]\nurl = \"sqlite://keycard.db\"\n[secrets]\nmaster_key_file = \"master.key\"\n[audit]\nfile = \"audit.jsonl\"\n";

/// Opens the store the settings name (creating it on first use).
pub(crate) async fn open_store(settings: &Settings) -> Result<Store, CliError> {
    Ok(Store::open(settings.store_url.as_str()).await?)
}

/// The master key, held against the check value `store` recorded.
pub(crate) async fn master(settings: &Settings, store: &Store) -> Result<MasterKey, CliError> {
    Ok(master_key::unlock(store, &settings.master_key_file).await?)
}

/// The operations the admin API runs too, over this config's store and master key.
pub(crate) async fn manager(settings: &Settings) -> Result<Manager, CliError> {
    let store = open_store(settings).await?;
    let master = master(settings, &store).await?;
    JOURNAL.writes_to(settings);
    Ok(Manager::new(store, &master, settings)
        .journalled(JOURNAL.clone(), keycard_server::manage::Actor::cli()))
}

#[derive(Debug, Default)]
struct CliJournal {
    events: Mutex<Vec<AuditEvent>>,
    settings: Mutex<Option<Settings>>,
}

impl CliJournal {
    fn writes_to(&self, settings: &Settings) {
        let mut s = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        if s.is_none() {
            *s = Some(settings.clone());
        }
    }

    async fn flush(&self) {
        let events =
            std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner));
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (Some(settings), false) = (settings, events.is_empty()) else {
            return;
        };
        if !matches!(settings.audit, keycard_server::config::AuditTarget::Stdout) {
            let written =
                keycard_server::audit::open_target(&settings.audit).and_then(|mut out| {
                    let mut lines = Vec::new();
                    events.iter().for_each(|e| e.write_json_line(&mut lines));
                    out.write_all(&lines)?;
                    out.flush()
                });
            if let Err(e) = written {
                eprintln!("warning: the audit file did not take this run's management events: {e}");
            }
        }
        let stored = match open_store(&settings).await {
            Ok(store) => store.insert_audit(&events).await.map_err(CliError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            eprintln!("warning: the store did not take this run's management events: {e}");
        }
    }
}

impl Journal for CliJournal {
    fn record(&self, e: &keycard_server::audit::Record<'_>) {
        let event = keycard_server::audit::owned(e);
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }
}

/// A refusal of the operations, which name the fields (`scopes: …`), with the CLI's flag
/// names instead (`--scope: …`).
pub(crate) fn flag_names(e: ManageError) -> CliError {
    const FLAGS: [(&str, &str); 8] = [
        ("subject: ", "--subject: "),
        ("scopes: ", "--scope: "),
        ("expires_in: ", "--expires-in: "),
        ("name: ", "NAME: "),
        ("grace: ", "--grace: "),
        ("certificate: ", "--cert: "),
        ("public key: ", "--public-key: "),
        ("client_id: ", "CLIENT_ID: "),
    ];
    match e {
        ManageError::Invalid(m) => CliError::Usage(
            FLAGS
                .iter()
                .find_map(|(field, flag)| m.strip_prefix(field).map(|rest| format!("{flag}{rest}")))
                .unwrap_or(m),
        ),
        e => e.into(),
    }
}

impl From<ManageError> for CliError {
    fn from(e: ManageError) -> Self {
        match e {
            ManageError::Invalid(m) => CliError::Usage(m),
            e => CliError::Other(e.to_string()),
        }
    }
}

/// A `DUR` flag, in seconds.
pub(crate) fn duration_flag(flag: &str, value: &str) -> Result<i64, CliError> {
    let d = parse_duration(value).map_err(|e| CliError::Usage(format!("{flag}: {e}")))?;
    i64::try_from(d.as_secs())
        .map_err(|_| CliError::Usage(format!("{flag}: `{value}` is too long")))
}

/// Waits for Ctrl-C or SIGTERM. SIGHUP does not end the process (its default): the TLS
/// certificate files are read again on it (`tls.rs`), and it is logged.
pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => tracing::info!(
                    "SIGHUP: certificate files of [server.tls], if set, are read again; other settings take effect on restart"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The management events of this run (route `cli`, actor `cli`), written when the command
/// ends: to the audit file (unless it is standard output, which carries the command's own
/// output) and to the store, as the server writes its own.
static JOURNAL: LazyLock<Arc<CliJournal>> = LazyLock::new(Arc::default);

/// Writes the management events of this run (at the end of every command).
pub(crate) async fn flush_journal() {
    JOURNAL.flush().await;
}
