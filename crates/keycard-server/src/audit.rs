//! The audit writer. The request path hands an event to an unbounded queue and moves on;
//! one task appends batches to the audit file and inserts them into the store. Events the
//! store refuses (it is away) are kept and retried, so none is lost while it returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keycard_core::AuditEvent;
use keycard_store::Store;
use std::io::Write;
use tokio::sync::{mpsc, watch};

use crate::config::AuditTarget;

/// Events kept for the store while it is away, at most. Beyond it the oldest are dropped
/// from the store's copy (they are still in the audit file) and counted in the log.
const MAX_RETRY: usize = 1_000_000;
const BATCH: usize = 4096;
/// After the first event of a batch, the writer waits this long for more: one file write and
/// one store transaction per interval instead of per event, and no wake-up per request.
const GATHER: Duration = Duration::from_millis(100);

/// Where the request path drops events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: mpsc::UnboundedSender<AuditEvent>,
    depth: Arc<AtomicUsize>,
    /// Every event is a decision: counted by method, outcome and reason.
    metrics: Arc<crate::metrics::Metrics>,
}

impl AuditSink {
    /// Queues an event; never blocks.
    pub fn record(&self, event: AuditEvent) {
        self.metrics
            .decision(event.method, event.outcome, event.reason.as_deref());
        self.depth.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(event).is_err() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("audit writer has stopped; an audit event could not be queued");
        }
    }

    /// Events queued and not yet written.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

/// The writer's half.
#[derive(Debug)]
pub struct AuditWriter {
    rx: mpsc::UnboundedReceiver<AuditEvent>,
    depth: Arc<AtomicUsize>,
}

/// A connected sink and writer.
pub fn channel(metrics: Arc<crate::metrics::Metrics>) -> (AuditSink, AuditWriter) {
    let (tx, rx) = mpsc::unbounded_channel();
    let depth = Arc::new(AtomicUsize::new(0));
    (
        AuditSink {
            tx,
            depth: depth.clone(),
            metrics,
        },
        AuditWriter { rx, depth },
    )
}

/// Opens the audit file for appending (0600 when created).
///
/// Plain blocking writes: one append of a batch every `GATHER` from a background task is
/// a page-cache copy of a few hundred kilobytes at most, cheaper than handing each batch to
/// a blocking-pool thread.
pub fn open_target(target: &AuditTarget) -> std::io::Result<Box<dyn Write + Send>> {
    match target {
        AuditTarget::Stdout => Ok(Box::new(std::io::stdout())),
        AuditTarget::File(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut o = std::fs::OpenOptions::new();
            o.create(true).append(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(0o600);
            }
            Ok(Box::new(o.open(path)?))
        }
    }
}

impl AuditWriter {
    /// Writes events until `shutdown` turns true, then drains what is queued and returns.
    pub async fn run(
        mut self,
        mut out: Box<dyn Write + Send>,
        store: Store,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut batch: Vec<AuditEvent> = Vec::with_capacity(BATCH);
        let mut retry: Vec<AuditEvent> = Vec::new();
        let mut line = Vec::with_capacity(64 * 1024);
        let mut stopping = false;
        loop {
            if !stopping {
                tokio::select! {
                    n = self.rx.recv_many(&mut batch, BATCH) => if n == 0 { stopping = true },
                    _ = shutdown.changed() => stopping = true,
                    _ = tokio::time::sleep(Duration::from_secs(1)), if !retry.is_empty() => {}
                }
                if !stopping && !batch.is_empty() {
                    tokio::select! {
                        _ = tokio::time::sleep(GATHER) => {}
                        _ = shutdown.changed() => stopping = true,
                    }
                }
            }
            while batch.len() < BATCH * 16 {
                match self.rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            if stopping {
                while let Ok(e) = self.rx.try_recv() {
                    batch.push(e);
                }
            }
            self.depth.fetch_sub(batch.len(), Ordering::Relaxed);
            if !batch.is_empty() {
                line.clear();
                for e in &batch {
                    e.write_json_line(&mut line);
                }
                if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
                    tracing::error!(error = %e, "cannot append to the audit file; events remain in the store");
                }
            }
            retry.append(&mut batch);
            if !retry.is_empty() {
                match tokio::time::timeout(Duration::from_secs(5), store.insert_audit(&retry)).await
                {
                    Ok(Ok(())) => retry.clear(),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, queued = retry.len(), "audit events not yet in the store; will retry")
                    }
                    Err(_) => {
                        tracing::warn!(queued = retry.len(), "audit insert timed out; will retry")
                    }
                }
                if retry.len() > MAX_RETRY {
                    let excess = retry.len() - MAX_RETRY;
                    retry.drain(..excess);
                    tracing::error!(
                        dropped = excess,
                        "audit retry buffer full: oldest events kept only in the audit file"
                    );
                }
            }
            if stopping {
                if !retry.is_empty() {
                    // One last try at shutdown.
                    if let Ok(Ok(())) =
                        tokio::time::timeout(Duration::from_secs(5), store.insert_audit(&retry))
                            .await
                    {
                        retry.clear();
                    } else {
                        tracing::error!(
                            lost = retry.len(),
                            "store unreachable at shutdown: these events are only in the audit file"
                        );
                    }
                }
                return;
            }
        }
    }
}
