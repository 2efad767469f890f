//! The audit writer. The request path drops an event into its thread's shard of a queue and
//! moves on; one task takes every shard's events each `GATHER`, appends them to the audit
//! file and inserts them into the store. Events the store refuses (it is away) are kept and
//! retried, so none is lost while it returns.
//!
//! Why shards: every authenticated request records one event, from every worker at once. A
//! single channel makes them all write the same cache lines (its tail, a wake-up flag, a depth
//! counter), a cost paid per request on each core. With one short-locked buffer per thread the
//! push touches memory only its own thread writes between two takes; the writer wakes on a
//! timer, not per event.
//!
//! Why bytes: an event is copied into its shard's buffer as it is — borrowed text, the address
//! unformatted — so the request path allocates nothing for it, and shares no reference count
//! (a route's prefix, a key's subject) with the writer's thread, which would otherwise free
//! or release each on another core. The writer decodes, formats and orders them.

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use keycard_core::{AuditEventRef, CertSource, Method, Outcome};
use keycard_store::{AuditAppender, AuditBatch};
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

/// One authentication attempt, as the request path has it at hand (reference §7's fields, the
/// address not yet formatted).
pub type Record<'a> = AuditEventRef<'a, IpAddr>;

/// `r` as an owned event (its address formatted), for code that keeps events rather than
/// queueing them: the CLI's management journal.
pub fn owned(r: &Record<'_>) -> keycard_core::AuditEvent {
    keycard_core::AuditEvent {
        ts_ms: r.ts_ms,
        request_id: r.request_id.into(),
        route: r.route.map(Into::into),
        method: r.method,
        outcome: r.outcome,
        reason: r.reason.map(Into::into),
        subject: r.subject.map(Into::into),
        credential_id: r.credential_id.map(Into::into),
        ip: r.ip.map(|a| a.to_string()),
        management: r.operation.map(|(op, target)| keycard_core::Management {
            operation: op.into(),
            target: target.map(Into::into),
        }),
        cert_source: r.cert_source,
    }
}

/// The instant events are ordered from (a record keeps its offset from it).
static EPOCH: LazyLock<std::time::Instant> = LazyLock::new(std::time::Instant::now);

/// How many text fields a record carries: request id, route, reason, subject, credential id,
/// operation, target.
const TEXT_FIELDS: usize = 7;

/// A text field's length word when the field is absent.
const ABSENT: u32 = u32::MAX;

/// Appends `r` to `buf`: order key, `ts_ms`, method, outcome, certificate source, address,
/// then each text field as its length and bytes. [`decode`] reads it back.
fn encode(buf: &mut Vec<u8>, key: u64, r: &Record<'_>) {
    buf.extend_from_slice(&key.to_le_bytes());
    buf.extend_from_slice(&r.ts_ms.to_le_bytes());
    buf.push(r.method.map_or(u8::MAX, |m| m.index() as u8));
    buf.push(r.outcome.index() as u8);
    buf.push(r.cert_source.map_or(u8::MAX, |c| c.index() as u8));
    match r.ip {
        None => buf.push(0),
        Some(IpAddr::V4(a)) => {
            buf.push(4);
            buf.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            buf.push(6);
            buf.extend_from_slice(&a.octets());
        }
    }
    for text in [
        Some(r.request_id),
        r.route,
        r.reason,
        r.subject,
        r.credential_id,
        r.operation.map(|(op, _)| op),
        r.operation.and_then(|(_, target)| target),
    ] {
        match text {
            // Longer than 4 GiB cannot happen (a request's head is bounded); kept whole or
            // cut at a character boundary all the same.
            Some(t) => {
                let mut end = t.len().min(ABSENT as usize - 1);
                while !t.is_char_boundary(end) {
                    end -= 1;
                }
                buf.extend_from_slice(&(end as u32).to_le_bytes());
                buf.extend_from_slice(t.as_bytes().get(..end).unwrap_or_default());
            }
            None => buf.extend_from_slice(&ABSENT.to_le_bytes()),
        }
    }
}

/// A record read back from a shard's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decoded<'a> {
    key: u64,
    ts_ms: i64,
    method: Option<Method>,
    outcome: Outcome,
    cert_source: Option<CertSource>,
    ip: Option<IpAddr>,
    request_id: &'a str,
    route: Option<&'a str>,
    reason: Option<&'a str>,
    subject: Option<&'a str>,
    credential_id: Option<&'a str>,
    operation: Option<&'a str>,
    target: Option<&'a str>,
}

/// The order key of the record at the start of `buf` and the bytes after it, its text not
/// read ([`decode`] checks that): the writer's first pass over a batch. `None` only if `buf`
/// is not what [`encode`] wrote.
fn skip(buf: &[u8]) -> Option<(u64, &[u8])> {
    let (key, b) = buf.split_first_chunk::<8>()?;
    // ts_ms, method, outcome, certificate source; the address's kind.
    let (&[.., kind], b) = b.split_first_chunk::<12>()?;
    let mut b = b.get(
        match kind {
            0 => 0,
            4 => 4,
            6 => 16,
            _ => return None,
        }..,
    )?;
    for _ in 0..TEXT_FIELDS {
        let (len, rest) = b.split_first_chunk::<4>()?;
        b = match u32::from_le_bytes(*len) {
            ABSENT => rest,
            len => rest.get(len as usize..)?,
        };
    }
    Some((u64::from_le_bytes(*key), b))
}

/// Reads the record at the start of `buf`; returns it and the bytes after it. `None` only if
/// `buf` is not what [`encode`] wrote.
fn decode(buf: &[u8]) -> Option<(Decoded<'_>, &[u8])> {
    fn take<const N: usize>(buf: &mut &[u8]) -> Option<[u8; N]> {
        let (head, rest) = buf.split_first_chunk::<N>()?;
        *buf = rest;
        Some(*head)
    }
    fn text<'a>(buf: &mut &'a [u8]) -> Option<Option<&'a str>> {
        let len = u32::from_le_bytes(take::<4>(buf)?);
        if len == ABSENT {
            return Some(None);
        }
        let (t, rest) = buf.split_at_checked(len as usize)?;
        *buf = rest;
        Some(Some(std::str::from_utf8(t).ok()?))
    }
    let mut b = buf;
    let key = u64::from_le_bytes(take::<8>(&mut b)?);
    let ts_ms = i64::from_le_bytes(take::<8>(&mut b)?);
    let [method, outcome, cert_source] = take::<3>(&mut b)?;
    let method = match method {
        u8::MAX => None,
        m => Some(*Method::ALL.get(usize::from(m))?),
    };
    let cert_source = match cert_source {
        u8::MAX => None,
        c => Some(*CertSource::ALL.get(usize::from(c))?),
    };
    let outcome = *Outcome::ALL.get(usize::from(outcome))?;
    let ip = match take::<1>(&mut b)? {
        [0] => None,
        [4] => Some(IpAddr::from(take::<4>(&mut b)?)),
        [6] => Some(IpAddr::from(take::<16>(&mut b)?)),
        _ => return None,
    };
    let request_id = text(&mut b)?.unwrap_or_default();
    let (route, reason) = (text(&mut b)?, text(&mut b)?);
    let (subject, credential_id) = (text(&mut b)?, text(&mut b)?);
    let (operation, target) = (text(&mut b)?, text(&mut b)?);
    Some((
        Decoded {
            key,
            ts_ms,
            method,
            outcome,
            cert_source,
            ip,
            request_id,
            route,
            reason,
            subject,
            credential_id,
            operation,
            target,
        },
        b,
    ))
}

/// One thread's share of the queue, alone on its cache lines: its events encoded one after
/// the other, each with the instant its request began (or it was queued) as its order key.
/// The writer puts a batch in that order (the monotonic clock is the same on every core), so
/// events of requests made one after the other keep their order whatever thread answered
/// each.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Shard(Mutex<Pending>);

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    events: usize,
}

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
        LazyLock::force(&EPOCH);
        Self {
            shards: (0..crate::shard::count())
                .map(|_| Shard::default())
                .collect(),
            in_flight: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    fn push(&self, at: std::time::Instant, record: &Record<'_>) {
        let key =
            u64::try_from(at.saturating_duration_since(*EPOCH).as_nanos()).unwrap_or(u64::MAX);
        // Never dropped for want of a shard: any index lands in one.
        let i = crate::shard::index() % self.shards.len().max(1);
        match self.shards.get(i) {
            Some(shard) => {
                let mut p = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
                encode(&mut p.bytes, key, record);
                p.events += 1;
            }
            None => tracing::error!("audit queue has no shard; an audit event could not be queued"),
        }
    }

    /// Swaps every shard's buffer with one of `into` (emptied, its memory kept for the
    /// shard): the buffers taken are then read without holding a lock.
    fn take(&self, into: &mut Vec<Pending>) {
        into.resize_with(self.shards.len(), Pending::default);
        for (shard, spare) in self.shards.iter().zip(into.iter_mut()) {
            spare.bytes.clear();
            spare.events = 0;
            let mut p = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut *p, spare);
        }
    }

    fn queued(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(PoisonError::into_inner).events)
            .sum()
    }
}

/// Where an event of a batch is: its order key, and its place among the taken buffers.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u64,
    buffer: usize,
    at: usize,
}

/// Puts the events of `taken`, ordered by their key (each shard's run is nearly in order
/// already; the sort is stable), into `lines` as JSON lines (the audit file's) and into
/// `batch` (the store's). `order` is the writer's, kept between batches: sorting places,
/// not decoded events, in memory that stays mapped (a fresh vector of a few hundred KiB per
/// batch came back from the allocator as pages the kernel zeroes again each time). Each
/// event's text is read once, in the second pass.
fn gather(taken: &[Pending], order: &mut Vec<Slot>, lines: &mut Vec<u8>, batch: &mut AuditBatch) {
    order.clear();
    for (buffer, p) in taken.iter().enumerate() {
        let mut rest = p.bytes.as_slice();
        while !rest.is_empty() {
            match skip(rest) {
                Some((key, after)) => {
                    order.push(Slot {
                        key,
                        buffer,
                        at: p.bytes.len() - rest.len(),
                    });
                    rest = after;
                }
                None => {
                    tracing::error!(
                        "audit queue holds a damaged event; the rest of its shard is lost"
                    );
                    break;
                }
            }
        }
    }
    order.sort_by_key(|s| s.key);
    // Most events of a batch come from a few addresses: each formatted once in a row.
    let (mut ip, mut last_ip) = (String::new(), None);
    for slot in order.iter() {
        let Some((d, _)) = taken
            .get(slot.buffer)
            .and_then(|p| p.bytes.get(slot.at..))
            .and_then(decode)
        else {
            tracing::error!("audit queue holds a damaged event; it is lost");
            continue;
        };
        if let Some(addr) = d.ip
            && last_ip != Some(addr)
        {
            use std::fmt::Write as _;
            ip.clear();
            let _ = write!(ip, "{addr}");
            last_ip = Some(addr);
        }
        let event = AuditEventRef {
            ts_ms: d.ts_ms,
            request_id: d.request_id,
            route: d.route,
            method: d.method,
            outcome: d.outcome,
            reason: d.reason,
            subject: d.subject,
            credential_id: d.credential_id,
            ip: d.ip.map(|_| ip.as_str()),
            cert_source: d.cert_source,
            operation: d.operation.map(|op| (op, d.target)),
        };
        event.write_json_line(lines);
        batch.push(&event);
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
    pub fn record(&self, record: &Record<'_>) {
        self.record_at(std::time::Instant::now(), record);
    }

    /// As [`AuditSink::record`], for a request that began at `began` (read already): the
    /// writer orders events by it.
    pub fn record_at(&self, began: std::time::Instant, record: &Record<'_>) {
        // A management event is no authentication decision (its caller's was counted).
        if record.operation.is_none() {
            self.metrics
                .decision(record.method, record.outcome, record.reason);
        }
        if self.queue.stopped.load(Ordering::Relaxed) {
            tracing::error!("audit writer has stopped; an audit event could not be queued");
            return;
        }
        self.queue.push(began, record);
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

/// Opens the audit file for appending (0600 when created, its folder 0700).
///
/// Plain blocking writes: one append of a batch every `GATHER`, on the writer's own thread
/// ([`spawn_writer`]), is a page-cache copy of a megabyte at most.
pub fn open_target(target: &AuditTarget) -> std::io::Result<Box<dyn Write + Send>> {
    match target {
        AuditTarget::Stdout => Ok(Box::new(std::io::stdout())),
        AuditTarget::File(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::master_key::create_private_dir(dir)?;
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

/// Store connections of the writer's own (PostgreSQL; SQLite's appender opens its own).
const WRITER_CONNECTIONS: u32 = 1;

/// Runs `writer` on a thread of its own (`keycard-audit`), with its own runtime and, on
/// PostgreSQL, a connection of its own. Its blocking work — a batch's JSON, the file append,
/// the SQLite transaction, a few milliseconds every `GATHER` at full load, and as long as
/// the disk takes when it stalls — then never holds a thread of the main runtime, which
/// answers the store calls of requests (a token issued, a cache miss). The handle finishes
/// when the writer has written what was queued at `shutdown`.
pub fn spawn_writer(
    writer: AuditWriter,
    out: Box<dyn Write + Send>,
    store_url: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, crate::own_runtime::SpawnError> {
    crate::own_runtime::spawn_with_store(
        "keycard-audit",
        store_url,
        WRITER_CONNECTIONS,
        move |store| async move {
            match store {
                Ok(store) => {
                    writer.run(out, store.audit_appender(), shutdown).await;
                    store.close().await;
                }
                Err(e) => {
                    // Every event recorded from now on is reported, not kept.
                    writer.queue.stopped.store(true, Ordering::Relaxed);
                    tracing::error!(error = %e, "the audit writer cannot reach the store; no audit event will be written");
                }
            }
        },
    )
}

impl AuditWriter {
    /// Writes events until `shutdown` turns true, then writes what is queued and returns.
    pub async fn run(
        self,
        mut out: Box<dyn Write + Send>,
        mut store: AuditAppender,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut taken: Vec<Pending> = Vec::new();
        // The batch as JSON lines (written to the file) and for the store.
        let mut lines = Vec::new();
        let mut order = Vec::new();
        let mut batch = AuditBatch::new();
        let mut retry = AuditBatch::new();
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
            lines.clear();
            gather(&taken, &mut order, &mut lines, &mut batch);
            self.queue
                .in_flight
                .store(retry.len() + batch.len(), Ordering::Relaxed);
            if !batch.is_empty()
                && let Err(e) = out.write_all(&lines).and_then(|()| out.flush())
            {
                tracing::error!(error = %e, "cannot append to the audit file; events remain in the store");
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
                        // The emptied batch is kept for the next (its memory).
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
                    retry.drop_oldest(excess);
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

    fn event(sink: &AuditSink, thread: usize, i: usize, ts_ms: i64) {
        sink.record(&Record {
            ts_ms,
            request_id: &format!("t{thread}-{i}"),
            route: Some("/api/"),
            method: Some(Method::ApiKey),
            outcome: Outcome::Success,
            reason: None,
            subject: Some("svc"),
            credential_id: Some("key_1"),
            ip: Some(IpAddr::from([127, 0, 0, 1])),
            cert_source: None,
            operation: None,
        });
    }

    /// Every field comes back as it went in — absent ones, both address families, text that
    /// JSON must escape — in the order written, and the JSON line is the event's reference §7
    /// document; a buffer cut anywhere reads as damaged, never as a wrong event.
    #[test]
    fn queued_records_read_back_whole_and_in_order() {
        let odd = "q\"uo\\te\n José ✓ \u{1}";
        let records = [
            Record {
                ts_ms: 1_795_868_261_042,
                request_id: "r-1",
                route: Some("/api/"),
                method: Some(Method::ApiKey),
                outcome: Outcome::Success,
                reason: None,
                subject: Some(odd),
                credential_id: Some("key_1"),
                ip: Some(IpAddr::from([192, 0, 2, 7])),
                cert_source: Some(CertSource::Tls),
                operation: None,
            },
            Record {
                ts_ms: 0,
                request_id: "",
                route: None,
                method: None,
                outcome: Outcome::Throttled,
                reason: Some("rate_limited"),
                subject: None,
                credential_id: None,
                ip: None,
                cert_source: None,
                operation: None,
            },
            Record {
                ts_ms: -5,
                request_id: odd,
                route: Some(odd),
                method: Some(Method::Mtls),
                outcome: Outcome::Forbidden,
                reason: Some(odd),
                subject: Some(""),
                credential_id: Some(odd),
                ip: Some("2001:db8::1".parse().unwrap()),
                cert_source: Some(CertSource::Forwarded),
                operation: Some(("key.create", Some(odd))),
            },
        ];
        let mut buf = Vec::new();
        for (i, r) in records.iter().enumerate() {
            encode(&mut buf, 10 - i as u64, r);
        }
        let mut rest = buf.as_slice();
        for (i, r) in records.iter().enumerate() {
            let (d, after) = decode(rest).unwrap();
            assert_eq!(skip(rest), Some((d.key, after)));
            assert_eq!(d.key, 10 - i as u64);
            assert_eq!(
                (d.ts_ms, d.request_id, d.route, d.method, d.outcome),
                (r.ts_ms, r.request_id, r.route, r.method, r.outcome)
            );
            assert_eq!(
                (d.reason, d.subject, d.credential_id, d.ip, d.cert_source),
                (r.reason, r.subject, r.credential_id, r.ip, r.cert_source)
            );
            assert_eq!(d.operation.map(|op| (op, d.target)), r.operation);
            rest = after;
        }
        assert!(rest.is_empty());
        let one = buf.len() - {
            let mut b = Vec::new();
            encode(&mut b, 0, &records[1]);
            encode(&mut b, 0, &records[2]);
            b.len()
        };
        for cut in 0..one {
            assert!(decode(&buf[..cut]).is_none(), "cut at {cut}");
            assert!(skip(&buf[..cut]).is_none(), "cut at {cut}");
        }
        // Gathered by key: the last written comes first.
        let taken = [Pending {
            bytes: buf,
            events: 3,
        }];
        let (mut text, mut batch) = (Vec::new(), AuditBatch::new());
        gather(&taken, &mut Vec::new(), &mut text, &mut batch);
        assert_eq!(batch.len(), 3);
        let lines: Vec<serde_json::Value> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let events: Vec<keycard_core::AuditEvent> = records.iter().rev().map(owned).collect();
        let expect: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        assert_eq!(lines, expect);
        // The file's line names the certificate's source when there was one.
        assert_eq!(lines[0]["cert_source"], "forwarded");
        assert_eq!(lines[2]["cert_source"], "tls");
        assert!(lines[1].get("cert_source").is_none());
        // The store's batch holds the same events in the same order.
        let mut same = AuditBatch::new();
        events.iter().for_each(|e| same.push(&e.borrowed()));
        assert_eq!(batch, same);
        // Gathered again with the order kept from before: the same.
        let mut order = Vec::new();
        for _ in 0..2 {
            let (mut again, mut text) = (AuditBatch::new(), Vec::new());
            gather(&taken, &mut order, &mut text, &mut again);
            assert_eq!(again, same);
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

    /// The writer runs on a thread of its own: the runtime that started it (keycard's main
    /// one, answering store calls) may be busy or blocked without holding the audit trail
    /// back, and its blocking file and SQLite work never holds that runtime's threads.
    #[tokio::test(flavor = "current_thread")]
    async fn the_spawned_writer_writes_while_the_starting_runtime_is_blocked() {
        let s = setup().await;
        let url = format!("sqlite://{}", s._dir.path().join("store.db").display());
        let out = open_target(&AuditTarget::File(s.file.clone())).unwrap();
        let (stop, stopped) = watch::channel(false);
        let handle = spawn_writer(s.writer, out, &url, stopped).unwrap();
        event(&s.sink, 0, 0, 1_700_000_000_000);
        // This runtime's only thread sleeps: a writer on it could not run meanwhile.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.file.metadata().map_or(0, |m| m.len()) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no event reached the file"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(file_ids(&s.file), ["t0-0"]);
        // Events recorded up to the shutdown are written before the handle finishes.
        event(&s.sink, 0, 1, 1_700_000_000_001);
        stop.send(true).unwrap();
        handle.await.unwrap();
        assert_eq!(s.sink.depth(), 0);
        assert_eq!(file_ids(&s.file), ["t0-0", "t0-1"]);
        assert_eq!(store_ids(&s.store).await, ["t0-0", "t0-1"]);
    }

    #[test]
    fn a_writer_for_an_unusable_store_url_is_refused_before_it_starts() {
        let (_sink, writer) = channel(Arc::new(crate::metrics::Metrics::new(Vec::new())));
        let (_stop, stopped) = watch::channel(false);
        let err =
            spawn_writer(writer, Box::new(std::io::sink()), "mysql://h/db", stopped).unwrap_err();
        assert!(err.to_string().contains("mysql"), "{err}");
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
                        event(&sink, t, i, 1_700_000_000_000 + i as i64);
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
                    event(&sink, 0, i, 7);
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
                    event(&sink, 1, i, 7);
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
        event(&s.sink, 0, 0, 5_000);
        assert_eq!(s.sink.depth(), 0);
    }
}
