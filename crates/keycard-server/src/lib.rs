//! keycard's HTTP side: the listener, the gateway that forwards authenticated requests, the
//! forward-auth endpoint, the caches kept honest by the store's change feed, and the audit
//! writer.
//!
//! [`start`] wires it all from a validated [`Settings`]; the `keycard` binary calls it for
//! `serve` and `quickstart`.
//!
//! What it does not do: parse command lines, or decide anything about a credential itself
//! (that is `keycard-core`).
#![deny(missing_docs)]
#![deny(unreachable_pub)]

mod admin;
pub mod audit;
mod authn;
mod clock;
pub mod config;
mod http;
pub mod layer;
pub mod master_key;
mod metrics;
mod oauth;
mod own_runtime;
mod server;
mod shard;
mod state;
mod tls;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keycard_store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use admin::manage;
pub use clock::{now_millis, now_secs};
pub use config::{ConfigError, Settings};
pub use state::keyring::open_key as open_signing_key;

/// The hand-written parsers, for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::authn::mtls::{
        ForwardedError, X_FORWARDED_CLIENT_CERT, X_SSL_CLIENT_CERT, forwarded_cert,
    };
    pub use crate::tls::{ClientCa, PeerCert};
    pub use crate::upstream::h1::{ReadAnswer, read_answer};
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The master key.
    #[error(transparent)]
    MasterKey(#[from] master_key::MasterKeyFileError),
    /// The store could not be opened or migrated.
    #[error("cannot open the store (store.url): {0}")]
    Store(#[from] StoreError),
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr} (server.listen): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics address is taken or not ours.
    #[error("cannot listen on {addr} (server.metrics_listen): {source}")]
    BindMetrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The ext_authz gRPC address is taken or not ours.
    #[error("cannot listen on {addr} (forward_auth.grpc_listen): {source}")]
    BindGrpc {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The audit file could not be opened.
    #[error("cannot open the audit file {path} (audit.file): {source}")]
    Audit {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The upstream client could not be built.
    #[error("cannot build the upstream client: {0}")]
    Client(std::io::Error),
    /// Password verification could not be prepared.
    #[error(transparent)]
    Authn(authn::AuthnSetupError),
    /// keycard's signing key could not be made or read.
    #[error(transparent)]
    SigningKey(state::keyring::OwnKeyError),
    /// The change-feed follower could not start.
    #[error("cannot start the change-feed follower: {0}")]
    Feed(#[source] own_runtime::SpawnError),
    /// The audit writer could not start.
    #[error("cannot start the audit writer: {0}")]
    AuditWriter(#[source] own_runtime::SpawnError),
    /// A `jwt.issuers` JWKS file cannot be used.
    #[error(transparent)]
    Jwks(authn::JwksFileError),
    /// The TLS files could not be read (they were readable when the config was checked).
    #[error("cannot load the TLS certificates (server.tls.{}): {}", .0.key, .0.message)]
    Tls(tls::TlsError),
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub local_addr: SocketAddr,
    /// The address of `server.metrics_listen`, when configured.
    pub metrics_addr: Option<SocketAddr>,
    /// The address of `forward_auth.grpc_listen`, when configured.
    pub grpc_addr: Option<SocketAddr>,
    conn_shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
    metrics: Option<JoinHandle<()>>,
    grpc: Option<JoinHandle<()>>,
    core: Core,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, writes the audit events still queued.
    pub async fn shutdown(self) {
        let _ = self.conn_shutdown.send(true);
        let _ = self.accept.await;
        if let Some(m) = self.metrics {
            let _ = m.await;
        }
        if let Some(g) = self.grpc {
            let _ = g.await;
        }
        self.core.shutdown().await;
    }
}

/// Everything but the listener: the store, the caches and the change feed that keeps them
/// honest, the audit writer, keycard's signing keys, the authenticator and its timers.
/// [`start`] puts a listener in front of it; [`layer::Embedded`] a tower layer.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) master: keycard_core::MasterKey,
    /// Permits for reading signed bodies: one bound for every entry point.
    pub(crate) body_reads: Arc<http::signed_body::BodyReads>,
    pub(crate) store: Store,
    pub(crate) authn: authn::Authenticator,
    pub(crate) sink: audit::AuditSink,
    pub(crate) bg_shutdown: watch::Sender<bool>,
    pub(crate) bg_rx: watch::Receiver<bool>,
    pub(crate) background: Vec<JoinHandle<()>>,
}

impl Core {
    pub(crate) async fn start(
        settings: &Settings,
        master: keycard_core::MasterKey,
        store: Store,
    ) -> Result<Core, StartError> {
        let (bg_shutdown, bg_rx) = watch::channel(false);
        let mut background = Vec::new();

        let revision = store.latest_revision().await?;
        let cache = Arc::new(state::cache::CredentialCache::default());
        cache.replace_revoked(store.revoked_tokens(now_secs()).await?);
        let seen = cache.subjects_changed();
        cache.set_disabled(disabled_subjects(&store).await?);
        {
            let (store, cache2) = (store.clone(), cache.clone());
            let changed = cache.clone();
            background.push(tokio::spawn(follow_derived(
                Some(seen),
                move || changed.subjects_changed(),
                move || {
                    let (store, cache) = (store.clone(), cache2.clone());
                    async move {
                        match disabled_subjects(&store).await {
                            Ok(names) => {
                                cache.set_disabled(names);
                                true
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "cannot read the disabled subjects; retrying");
                                false
                            }
                        }
                    }
                },
                bg_rx.clone(),
            )));
        }
        let feed_state = Arc::new(state::feed::FeedState::new(revision));
        background.push(
            state::feed::spawn_follower(
                settings.store_url.as_str(),
                cache.clone(),
                feed_state.clone(),
                bg_rx.clone(),
            )
            .map_err(StartError::Feed)?,
        );
        state::keyring::ensure_key(&store, &master.sealer(), &settings.tokens)
            .await
            .map_err(StartError::SigningKey)?;
        let jwks_client = upstream::client::client().map_err(StartError::Client)?;
        let issuers = Arc::new(
            authn::Issuers::load(&settings.jwt_issuers, &jwks_client)
                .await
                .map_err(StartError::Jwks)?,
        );
        let authn = authn::Authenticator::new(
            &master,
            settings,
            store.clone(),
            cache,
            feed_state,
            issuers,
            jwks_client,
        )
        .map_err(StartError::Authn)?;
        let (sink, writer) = audit::channel(authn.metrics().clone());
        let out = audit::open_target(&settings.audit).map_err(|source| StartError::Audit {
            path: match &settings.audit {
                config::AuditTarget::File(p) => p.clone(),
                config::AuditTarget::Stdout => "-".into(),
            },
            source,
        })?;
        background.push(
            audit::spawn_writer(writer, out, settings.store_url.as_str(), bg_rx.clone())
                .map_err(StartError::AuditWriter)?,
        );
        authn.keyring().rebuild(
            &store
                .published_signing_keys(now_secs())
                .await
                .map_err(StartError::Store)?,
        );
        if let Some(follower) = authn.follow_throttle_blocks(bg_rx.clone()) {
            background.push(follower);
        }
        background.push(tokio::spawn(housekeeping(
            store.clone(),
            authn.clone(),
            bg_rx.clone(),
        )));
        Ok(Core {
            master,
            body_reads: Arc::default(),
            store,
            authn,
            sink,
            bg_shutdown,
            bg_rx,
            background,
        })
    }

    /// Stops the timers and the feed, writes the audit queue and `last_used_at`, closes
    /// the store.
    pub(crate) async fn shutdown(self) {
        let _ = self.bg_shutdown.send(true);
        for t in self.background {
            let _ = t.await;
        }
        let _ = self
            .store
            .touch_last_used(&self.authn.cache().take_last_used())
            .await;
        self.store.close().await;
    }
}

/// Opens the store (creating and migrating it), loads the master key, binds the listener
/// and starts serving.
pub async fn start(settings: &Settings) -> Result<Running, StartError> {
    let store = Store::open(settings.store_url.as_str()).await?;
    let master = master_key::unlock(&store, &settings.master_key_file).await?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: settings.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: settings.listen,
        source,
    })?;
    let metrics_listener = match settings.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::BindMetrics { addr, source })?,
        ),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr().map_err(|source| StartError::BindMetrics {
            addr: settings.metrics_listen.unwrap_or(settings.listen),
            source,
        })?),
        None => None,
    };
    let (grpc_listener, grpc_addr) = match settings.forward_auth.grpc_listen {
        Some(addr) => {
            let bind_err = |source| StartError::BindGrpc { addr, source };
            let l = TcpListener::bind(addr).await.map_err(bind_err)?;
            let local = l.local_addr().map_err(bind_err)?;
            (Some(l), Some(local))
        }
        None => (None, None),
    };
    let (conn_shutdown, conn_rx) = watch::channel(false);
    let mut core = Core::start(settings, master, store).await?;
    let tls = match &settings.tls {
        Some(t) => {
            let state = Arc::new(tls::TlsState::load(t).map_err(StartError::Tls)?);
            core.background
                .push(tokio::spawn(state.clone().watch(core.bg_rx.clone())));
            if t.client_ca.is_some() && t.client_auth == config::ClientAuth::Required {
                // Before the first handshake: a registered client must not be turned away
                // because its pin is not read yet.
                let before = core.authn.cache().clients_changed();
                let seen = match self_signed_pins(&core.store).await {
                    Ok(p) => {
                        state.pins.replace(p);
                        Some(before)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the registered self-signed certificates yet; retrying");
                        None
                    }
                };
                let (store, pins) = (core.store.clone(), state.pins.clone());
                let cache = core.authn.cache().clone();
                core.background.push(tokio::spawn(follow_derived(
                    seen,
                    move || cache.clients_changed(),
                    move || {
                        let (store, pins) = (store.clone(), pins.clone());
                        async move {
                            match self_signed_pins(&store).await {
                                Ok(p) => {
                                    pins.replace(p);
                                    true
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "cannot read the registered self-signed certificates; retrying");
                                    false
                                }
                            }
                        }
                    },
                    core.bg_rx.clone(),
                )));
            }
            Some(state)
        }
        None => None,
    };
    let app = Arc::new(server::app::App::new(
        settings,
        &core.master,
        core.authn.clone(),
        core.sink.clone(),
        core.body_reads.clone(),
    ));
    let metrics = metrics_listener.map(|l| {
        tokio::spawn(server::listener::serve_metrics(
            l,
            app.clone(),
            conn_rx.clone(),
        ))
    });
    let grpc = grpc_listener
        .map(|l| tokio::spawn(server::ext_authz::serve(l, app.clone(), conn_rx.clone())));
    let accept = tokio::spawn(server::listener::serve(listener, app, tls, conn_rx));
    for r in settings.routes.iter().filter(|r| r.upstream.is_none()) {
        tracing::warn!(
            route = %r.policy.prefix,
            "this route has no upstream: it serves forward-auth (/_keycard/verify) only, and requests sent to keycard under it are answered 404"
        );
    }
    tracing::info!(listen = %local_addr, metrics_listen = ?metrics_addr, grpc_listen = ?grpc_addr, store = core.store.engine(), routes = settings.routes.len(), "keycard is serving");
    Ok(Running {
        local_addr,
        metrics_addr,
        grpc_addr,
        conn_shutdown,
        accept,
        metrics,
        grpc,
        core,
    })
}

/// The fingerprints of the certificates registered to live `self_signed_tls_client_auth`
/// clients.
async fn self_signed_pins(
    store: &Store,
) -> Result<std::collections::HashSet<[u8; 32]>, StoreError> {
    let mut pins = std::collections::HashSet::new();
    for c in store.list_clients().await? {
        if c.auth_method != "self_signed_tls_client_auth" || c.revoked_at.is_some() {
            continue;
        }
        let mut fp = [0u8; 32];
        if let Some(hex) = c.cert_fingerprint.as_deref()
            && hex.len() == 64
            && (0..32).all(|i| {
                hex.get(2 * i..2 * i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
                    .and_then(|b| fp.get_mut(i).map(|slot| *slot = b))
                    .is_some()
            })
        {
            pins.insert(fp);
        }
    }
    Ok(pins)
}

/// The names of every disabled subject.
async fn disabled_subjects(
    store: &Store,
) -> Result<std::collections::HashSet<Box<str>>, StoreError> {
    Ok(store
        .disabled_subjects()
        .await?
        .into_iter()
        .map(String::into_boxed_str)
        .collect())
}

/// Keeps something derived from the store in step with it: `read` runs again whenever
/// `changed` moves (the change feed named what it derives from, or the cache was cleared),
/// within a poll of the feed; a read that fails (`false`) is tried again at the next poll.
/// `seen`: the value of `changed` before the read the caller made itself, if it succeeded.
async fn follow_derived<C, R, F>(
    seen: Option<u64>,
    changed: C,
    read: R,
    mut shutdown: watch::Receiver<bool>,
) where
    C: Fn() -> u64,
    R: Fn() -> F,
    F: std::future::Future<Output = bool>,
{
    let mut seen = seen;
    let mut tick = tokio::time::interval(state::feed::POLL_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = changed();
        if seen == Some(now) {
            continue;
        }
        seen = read().await.then_some(now);
    }
}

async fn housekeeping(
    store: Store,
    authn: authn::Authenticator,
    mut shutdown: watch::Receiver<bool>,
) {
    let cache = authn.cache().clone();
    let mut flush = tokio::time::interval(Duration::from_secs(15));
    let mut sweep = tokio::time::interval(Duration::from_secs(30));
    let mut jwks_tick = tokio::time::interval(Duration::from_secs(10));
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    let mut keys_tick = tokio::time::interval(Duration::from_millis(1500));
    loop {
        tokio::select! {
            _ = flush.tick() => {
                let uses = cache.take_last_used();
                if let Err(e) = store.touch_last_used(&uses).await {
                    tracing::debug!(error = %e, "could not record last use; will not retry");
                }
            }
            _ = sweep.tick() => authn.prune(),
            _ = jwks_tick.tick() => authn.refresh_jwks().await,
            _ = keys_tick.tick() => {
                if authn.refresh_keys().await.is_err() {
                    tracing::debug!("could not re-read the signing keys; keeping the last ones");
                }
            }
            _ = prune.tick() => {
                if let Err(e) = store.prune_changes(now_secs() - 86_400).await {
                    tracing::debug!(error = %e, "could not prune the change feed");
                }
                if let Err(e) = store.prune_oauth(now_secs()).await {
                    tracing::debug!(error = %e, "could not prune expired OAuth codes and grants");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
