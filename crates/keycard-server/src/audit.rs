//! The audit writer. The request path drops an event into its thread's shard of a queue and
//! moves on; one task takes every shard's events each `GATHER`, appends them to the audit
//! file and inserts them into the store. Events the store refuses (it is away) are kept and
//! retried, so none is lost while it returns.
//!
//! Why shards: every authenticated request records one event, from every worker at once. A
//! single channel makes them all write the same cache lines (its tail, a wake-up flag, a depth
//! counter), a cost paid per request on each core. With one short-locked `Vec` per thread the
//! push touches memory only its own thread writes between two takes; the writer wakes on a
//! timer, not per event.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keycard_core::AuditEvent;
use keycard_store::AuditAppender;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::AuditTarget;

/// Events kept for the store while it is away, at most. Beyond it the oldest are dropped
/// from the store's copy (they are still in the audit file) and counted in the log.
const MAX_RETRY: usize = 1_000_000;
/// How often the writer takes what was queued: one file write and one store transaction per
/// interval, and an event reaches both within about this long.
const GATHER: Duration = Duration::from_millis(100);
/// After the store refused a batch, how long before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One thread's share of the queue, alone on its cache lines. Each event with the instant its
/// request began (or it was queued): the writer puts a batch in that order (the monotonic clock
/// is the same on every core), so events of requests made one after the other keep their
/// order whatever thread answered each.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Shard(Mutex<Vec<(std::time::Instant, AuditEvent)>>);

#[derive(Debug)]
struct Queue {
    shards: Box<[Shard]>,
    /// Events the writer has taken and not yet written to the store.
    in_flight: AtomicUsize,
    /// The writer has returned: events recorded now would never be written.
    stopped: AtomicBool,
}

impl Queue {
    fn new() -> Self {
        Self {
            shards: (0..crate::shard::count())
                .map(|_| Shard::default())
                .collect(),
            in_flight: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    fn push(&self, at: std::time::Instant, event: AuditEvent) {
        // Never dropped for want of a shard: any index lands in one.
        let i = crate::shard::index() % self.shards.len().max(1);
        match self.shards.get(i) {
            Some(shard) => shard
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((at, event)),
            None => tracing::error!("audit queue has no shard; an audit event could not be queued"),
        }
    }

    /// Moves every queued event to `into`, shard by shard (each in the order it was pushed).
    fn take(&self, into: &mut Vec<(std::time::Instant, AuditEvent)>) {
        for shard in &self.shards {
            let mut events = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            into.append(&mut events);
        }
    }

    fn queued(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// Where the request path drops events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditSink {
    queue: Arc<Queue>,
    /// Every event is a decision: counted by method, outcome and reason.
    metrics: Arc<crate::metrics::Metrics>,
}

impl AuditSink {
    /// Queues an event; never blocks (the lock is its thread's own but for a moment every
    /// `GATHER`).
    pub fn record(&self, event: AuditEvent) {
        self.record_at(std::time::Instant::now(), event);
    }

    /// As [`AuditSink::record`], for a request that began at `began` (read already): the
    /// writer orders events by it.
    pub fn record_at(&self, began: std::time::Instant, event: AuditEvent) {
        self.metrics
            .decision(event.method, event.outcome, event.reason.as_deref());
        if self.queue.stopped.load(Ordering::Relaxed) {
            tracing::error!("audit writer has stopped; an audit event could not be queued");
            return;
        }
        self.queue.push(began, event);
    }

    /// Events queued and not yet in the store.
    pub fn depth(&self) -> usize {
        self.queue.queued() + self.queue.in_flight.load(Ordering::Relaxed)
    }
}

/// The writer's half.
#[derive(Debug)]
pub struct AuditWriter {
    queue: Arc<Queue>,
}

/// A connected sink and writer.
pub fn channel(metrics: Arc<crate::metrics::Metrics>) -> (AuditSink, AuditWriter) {
    let queue = Arc::new(Queue::new());
    (
        AuditSink {
            queue: queue.clone(),
            metrics,
        },
        AuditWriter { queue },
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
    /// Writes events until `shutdown` turns true, then writes what is queued and returns.
    pub async fn run(
        self,
        mut out: Box<dyn Write + Send>,
        mut store: AuditAppender,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut taken: Vec<(std::time::Instant, AuditEvent)> = Vec::new();
        let mut batch: Vec<AuditEvent> = Vec::new();
        let mut retry: Vec<AuditEvent> = Vec::new();
        let mut line = Vec::with_capacity(64 * 1024);
        let mut next_try = Instant::now();
        let mut stopping = false;
        loop {
            if !stopping {
                tokio::select! {
                    _ = tokio::time::sleep(GATHER) => {}
                    _ = shutdown.changed() => stopping = true,
                }
            }
            if stopping {
                // From here a late event is reported, not silently left in the queue.
                self.queue.stopped.store(true, Ordering::Relaxed);
            }
            self.queue.take(&mut taken);
            // In the order they were queued. The shards' runs are sorted already: a merge,
            // not a full sort.
            taken.sort_by_key(|(at, _)| *at);
            batch.extend(taken.drain(..).map(|(_, e)| e));
            self.queue
                .in_flight
                .store(retry.len() + batch.len(), Ordering::Relaxed);
            if !batch.is_empty() {
                line.clear();
                for e in &batch {
                    e.write_json_line(&mut line);
                }
                if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
                    tracing::error!(error = %e, "cannot append to the audit file; events remain in the store");
                }
            }
            if retry.is_empty() {
                std::mem::swap(&mut retry, &mut batch);
            } else {
                retry.append(&mut batch);
            }
            if !retry.is_empty() && (stopping || Instant::now() >= next_try) {
                let sent = retry.len();
                let (back, result) = store.append(std::mem::take(&mut retry)).await;
                if back.len() < sent {
                    tracing::error!(
                        lost = sent - back.len(),
                        "audit events lost on their way to the store; they are in the audit file"
                    );
                }
                match result {
                    Ok(()) => {
                        // The emptied vector is kept for the next batch.
                        batch = back;
                        batch.clear();
                    }
                    Err(e) => {
                        retry = back;
                        next_try = Instant::now() + RETRY_AFTER;
                        if stopping {
                            tracing::error!(error = %e, lost = retry.len(), "store unreachable at shutdown: these events are only in the audit file");
                        } else {
                            tracing::warn!(error = %e, queued = retry.len(), "audit events not yet in the store; will retry");
                        }
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
            self.queue.in_flight.store(retry.len(), Ordering::Relaxed);
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycard_core::{Method, Outcome};
    use keycard_store::{AuditQuery, Store};

    fn event(thread: usize, i: usize, ts_ms: i64) -> AuditEvent {
        AuditEvent {
            ts_ms,
            request_id: format!("t{thread}-{i}"),
            route: Some("/api/".into()),
            method: Some(Method::ApiKey),
            outcome: Outcome::Success,
            reason: None,
            subject: Some("svc".into()),
            credential_id: Some("key_1".into()),
            ip: Some("127.0.0.1".into()),
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        file: std::path::PathBuf,
        store: Store,
        sink: AuditSink,
        writer: AuditWriter,
    }

    async fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/store.db", dir.path().display()))
            .await
            .unwrap();
        let (sink, writer) = channel(Arc::new(crate::metrics::Metrics::new(Vec::new())));
        Setup {
            file: dir.path().join("audit.jsonl"),
            _dir: dir,
            store,
            sink,
            writer,
        }
    }

    fn file_ids(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["request_id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    async fn store_ids(store: &Store) -> Vec<String> {
        let q = AuditQuery {
            limit: 1_000_000,
            ..Default::default()
        };
        let events = store.query_audit(&q).await.unwrap();
        events.into_iter().map(|e| e.request_id).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_event_from_every_thread_reaches_the_file_and_the_store_once() {
        let s = setup().await;
        let out = open_target(&AuditTarget::File(s.file.clone())).unwrap();
        let (stop, stopped) = watch::channel(false);
        let writer = tokio::spawn(s.writer.run(out, s.store.audit_appender(), stopped));
        // Four threads recording while the writer takes batches from under them.
        std::thread::scope(|scope| {
            for t in 0..4 {
                let sink = s.sink.clone();
                scope.spawn(move || {
                    for i in 0..5_000 {
                        sink.record(event(t, i, 1_700_000_000_000 + i as i64));
                        if i % 1000 == 0 {
                            std::thread::sleep(Duration::from_millis(30));
                        }
                    }
                });
            }
        });
        stop.send(true).unwrap();
        writer.await.unwrap();
        assert_eq!(s.sink.depth(), 0);
        let in_file = file_ids(&s.file);
        assert_eq!(in_file.len(), 20_000);
        let mut unique = in_file.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 20_000, "an event was written twice");
        // Each thread's events keep their order; the store holds what the file holds.
        for t in 0..4 {
            let prefix = format!("t{t}-");
            let mine: Vec<usize> = in_file
                .iter()
                .filter_map(|id| id.strip_prefix(&prefix)?.parse().ok())
                .collect();
            assert_eq!(mine, (0..5_000).collect::<Vec<_>>());
        }
        assert_eq!(store_ids(&s.store).await, in_file);
    }

    #[tokio::test]
    async fn events_recorded_one_after_another_keep_their_order_across_threads() {
        let s = setup().await;
        // Two threads take turns (each records, then hands over to the other), all before
        // the writer takes them in one batch; the timestamps say nothing of the order.
        let (to_0, from_1) = std::sync::mpsc::channel::<()>();
        let (to_1, from_0) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let sink = s.sink.clone();
            scope.spawn(move || {
                for i in 0..100 {
                    sink.record(event(0, i, 7));
                    to_1.send(()).unwrap();
                    if i < 99 {
                        from_1.recv().unwrap();
                    }
                }
            });
            let sink = s.sink.clone();
            scope.spawn(move || {
                for i in 0..100 {
                    from_0.recv().unwrap();
                    sink.record(event(1, i, 7));
                    let _ = to_0.send(());
                }
            });
        });
        assert_eq!(s.sink.depth(), 200);
        let (stop, stopped) = watch::channel(true);
        let out = open_target(&AuditTarget::File(s.file.clone())).unwrap();
        stop.send(true).unwrap();
        s.writer.run(out, s.store.audit_appender(), stopped).await;
        let expect: Vec<String> = (0..200).map(|n| format!("t{}-{}", n % 2, n / 2)).collect();
        assert_eq!(file_ids(&s.file), expect);
        assert_eq!(store_ids(&s.store).await, expect);
        // Recorded after the writer returned: refused and logged, not queued for nobody.
        s.sink.record(event(0, 0, 5_000));
        assert_eq!(s.sink.depth(), 0);
    }
}
