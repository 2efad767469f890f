//! Background work that must not wait behind the request workers or the main runtime: a
//! thread of its own, with a runtime and a store pool of its own.

use std::future::Future;

use keycard_store::{Store, StoreError};

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
) -> Result<tokio::task::JoinHandle<()>, String>
where
    F: FnOnce(Result<Store, StoreError>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Store::connect_sized(store_url, Some(connections)).map_err(|e| e.to_string())?;
    let url = store_url.to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .map_err(|e| format!("cannot start the {name} runtime: {e}"))?;
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            runtime
                .block_on(async move { work(Store::connect_sized(&url, Some(connections))).await });
            let _ = done.send(());
        })
        .map_err(|e| format!("cannot start the {name} thread: {e}"))?;
    // A panic drops `done`: the handle finishes then too.
    Ok(tokio::spawn(async move {
        let _ = finished.await;
    }))
}
