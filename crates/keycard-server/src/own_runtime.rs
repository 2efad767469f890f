//! Background work that must not wait behind the request workers or the main runtime: a
//! thread of its own, with a runtime and a store pool of its own.

use std::future::Future;

use keycard_store::{Store, StoreError};

/// Why a thread of its own could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The store URL was refused.
    #[error(transparent)]
    Store(StoreError),
    /// No runtime could be made.
    #[error("cannot start the {name} runtime: {source}")]
    Runtime {
        /// The thread's name.
        name: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// No thread could be started.
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        /// The thread's name.
        name: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs `work` on a thread named `name`, with a current-thread runtime of its own and a store
/// pool of at most `connections` made on that runtime (a pool belongs to the runtime it is
/// made on; `work` gets the error instead in the unexpected case that the URL, checked
/// before the thread starts, is refused there). The handle finishes when `work` has — or
/// the thread ended otherwise (a panic).
pub(crate) fn spawn_with_store<F, Fut>(
    name: &'static str,
    store_url: &str,
    connections: u32,
    work: F,
) -> Result<tokio::task::JoinHandle<()>, SpawnError>
where
    F: FnOnce(Result<Store, StoreError>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Store::connect_sized(store_url, Some(connections)).map_err(SpawnError::Store)?;
    let url = store_url.to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .map_err(|source| SpawnError::Runtime { name, source })?;
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            runtime
                .block_on(async move { work(Store::connect_sized(&url, Some(connections))).await });
            let _ = done.send(());
        })
        .map_err(|source| SpawnError::Thread { name, source })?;
    // A panic drops `done`: the handle finishes then too.
    Ok(tokio::spawn(async move {
        let _ = finished.await;
    }))
}
