//! The audit trail in the store (the server also appends it to a JSON-lines file).
//!
//! Kept in segments (schema v8): one row per batch the server's audit writer appends, its
//! events as a JSON array of the SPEC §7 documents — the objects of the audit file's lines.
//! Every authenticated request adds an event, so the store's share of a request is what
//! matters: a few hundred bytes of a large row, instead of a B-tree insert and an index entry
//! per event (on SQLite that alone was about 0.9 µs of CPU per request, measured). Reading
//! back is rarer and scans segments newest first. The `audit_events` view shows one row per
//! event for SQL readers.

use std::sync::Arc;
use std::time::Duration;

use crate::BeginWrite;
use keycard_core::time::parse_rfc3339_millis;
use keycard_core::{AuditEvent, Outcome};
use serde::Deserialize;
use sqlx::Row;

use crate::{Backend, Store, StoreError, with_pool};

/// Events per segment, at most: an event's id is its segment's id times this plus its
/// position, so that ids (the admin API's paging cursors) grow in the order of the trail.
pub const SEGMENT_EVENTS: usize = 65_536;
/// Segments read per query while scanning back (each up to [`SEGMENT_EVENTS`] events, a
/// few thousand at a busy writer's 100 ms): a page of the newest events needs one or two.
const SCAN_SEGMENTS: i64 = 2;

/// Filters for reading the audit trail back.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only events at or after this instant (Unix milliseconds).
    pub since_ms: Option<i64>,
    /// Only events of this subject.
    pub subject: Option<String>,
    /// Only events with this outcome.
    pub outcome: Option<Outcome>,
    /// At most this many (the newest ones), returned oldest first.
    pub limit: i64,
    /// Only events stored before the one with this id (paging back from a cursor).
    pub before_id: Option<i64>,
}

/// A batch of audit events on its way to the store: each event's JSON document (SPEC §7) on a
/// line of its own, as the audit file has them, with the batch's span of time.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AuditLines {
    text: Vec<u8>,
    /// Where each line starts in `text`.
    starts: Vec<usize>,
    /// Earliest and latest `ts` of the batch (Unix milliseconds).
    span: Option<(i64, i64)>,
}

impl AuditLines {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an event.
    pub fn push(&mut self, event: &AuditEvent) {
        self.push_with(event.ts_ms, |out| event.write_json_line(out));
    }

    /// Adds an event at `ts_ms` whose JSON document `write` appends (one object, on one
    /// line; the newline is added if `write` left it out).
    pub fn push_with(&mut self, ts_ms: i64, write: impl FnOnce(&mut Vec<u8>)) {
        self.starts.push(self.text.len());
        write(&mut self.text);
        if self.text.last() != Some(&b'\n') {
            self.text.push(b'\n');
        }
        self.span = Some(match self.span {
            Some((lo, hi)) => (lo.min(ts_ms), hi.max(ts_ms)),
            None => (ts_ms, ts_ms),
        });
    }

    /// The events, one JSON document per line: what the audit file gets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.text.clear();
        self.starts.clear();
        self.span = None;
    }

    /// Moves every event of `other` after these.
    pub fn append(&mut self, other: &mut AuditLines) {
        let base = self.text.len();
        self.text.append(&mut other.text);
        self.starts.extend(other.starts.drain(..).map(|s| s + base));
        self.span = match (self.span, other.span.take()) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (x, y) => x.or(y),
        };
    }

    /// Drops the `n` oldest events (the span stays as it was: wider, never wrong).
    pub fn drop_oldest(&mut self, n: usize) {
        if n >= self.len() {
            self.clear();
            return;
        }
        let cut = self.starts.get(n).copied().unwrap_or(self.text.len());
        self.text.drain(..cut);
        self.starts.drain(..n);
        for s in &mut self.starts {
            *s -= cut;
        }
    }

    /// Writes into `body` the JSON array of the segment whose first event is the batch's
    /// `first`: at most [`SEGMENT_EVENTS`] events; returns how many. The starts of the lines
    /// are known: copies, no scan.
    fn segment(&self, first: usize, body: &mut Vec<u8>) -> usize {
        let end = (first + SEGMENT_EVENTS).min(self.len());
        body.clear();
        body.push(b'[');
        for i in first..end {
            let from = self.starts.get(i).copied().unwrap_or(0);
            let to = self.starts.get(i + 1).copied().unwrap_or(self.text.len());
            if i > first {
                // `[` doc `\n,` doc `\n]`: whitespace between array items is JSON.
                body.push(b',');
            }
            body.extend_from_slice(self.text.get(from..to).unwrap_or_default());
        }
        body.push(b']');
        end - first
    }

    /// The first event of each segment the batch is cut into.
    fn segment_firsts(&self) -> impl Iterator<Item = usize> + use<> {
        (0..self.len()).step_by(SEGMENT_EVENTS)
    }

    /// The batch cut into segments: (events, JSON array).
    #[cfg(test)]
    fn segments(&self) -> Vec<(i64, String)> {
        let mut body = Vec::new();
        self.segment_firsts()
            .map(|first| {
                let n = self.segment(first, &mut body);
                (
                    n as i64,
                    String::from_utf8(body.clone()).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The batch's earliest and latest `ts` (0 for an empty one).
    fn span(&self) -> (i64, i64) {
        self.span.unwrap_or((0, 0))
    }
}

/// An event as stored: its SPEC §7 document.
#[derive(Deserialize)]
struct Doc {
    ts: String,
    request_id: String,
    route: Option<String>,
    method: Option<String>,
    outcome: String,
    reason: Option<String>,
    subject: Option<String>,
    credential_id: Option<String>,
    ip: Option<String>,
}

impl Doc {
    fn into_event(self) -> Option<AuditEvent> {
        Some(AuditEvent {
            ts_ms: parse_rfc3339_millis(&self.ts)?,
            request_id: self.request_id,
            route: self.route.map(Arc::from),
            method: match self.method {
                Some(m) => Some(m.parse().ok()?),
                None => None,
            },
            outcome: Outcome::parse(&self.outcome)?,
            reason: self.reason,
            subject: self.subject.map(Arc::from),
            credential_id: self.credential_id.map(Arc::from),
            ip: self.ip,
        })
    }
}

impl Store {
    /// Appends events, in one transaction: all of them or none.
    ///
    /// The server's audit writer goes through an [`AuditAppender`] instead, which keeps its
    /// SQLite connection between batches; this is the same code for an occasional batch.
    pub async fn insert_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut lines = AuditLines::new();
        for e in events {
            lines.push(e);
        }
        self.audit_appender().append(lines).await.1
    }

    /// An appender for a stream of audit batches (the server's audit writer).
    pub fn audit_appender(&self) -> AuditAppender {
        match &self.backend {
            Backend::Postgres(p) => AuditAppender(Appender::Postgres(p.clone())),
            Backend::Sqlite(p) => AuditAppender(Appender::Sqlite {
                path: p.connect_options().get_filename().to_path_buf(),
                conn: None,
                body: Vec::new(),
            }),
        }
    }

    /// Reads events back, newest `limit` matching ones, oldest first.
    pub async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(self
            .query_audit_ids(q)
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// As [`Store::query_audit`], each event with its id (a paging cursor: pass the
    /// smallest as `before_id` for the page before).
    pub async fn query_audit_ids(
        &self,
        q: &AuditQuery,
    ) -> Result<Vec<(i64, AuditEvent)>, StoreError> {
        let want = usize::try_from(q.limit.max(0)).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let per_segment = SEGMENT_EVENTS as i64;
        // Segments with an id below this are still to be read.
        let mut below = match q.before_id {
            Some(id) => id.div_euclid(per_segment) + 1,
            None => i64::MAX,
        };
        let since = q.since_ms.unwrap_or(i64::MIN);
        while out.len() < want {
            let rows: Vec<(i64, String)> = with_pool!(self, p => {
                sqlx::query(
                    "SELECT id, body FROM audit_segments WHERE id < $1 AND last_ts_ms >= $2 \
                     ORDER BY id DESC LIMIT $3",
                )
                .bind(below)
                .bind(since)
                .bind(SCAN_SEGMENTS)
                .fetch_all(p)
                .await?
                .into_iter()
                .map(|r| Ok((r.try_get("id")?, r.try_get("body")?)))
                .collect::<Result<_, sqlx::Error>>()?
            });
            let Some(last) = rows.last() else { break };
            below = last.0;
            for (segment, body) in rows {
                let docs: Vec<Doc> =
                    serde_json::from_str(&body).map_err(|e| StoreError::BadAuditSegment {
                        id: segment,
                        why: e.to_string(),
                    })?;
                for (pos, doc) in docs.into_iter().enumerate().rev() {
                    let id = segment * per_segment + pos as i64;
                    if q.before_id.is_some_and(|b| id >= b) {
                        continue;
                    }
                    let event = doc
                        .into_event()
                        .ok_or_else(|| StoreError::BadAuditSegment {
                            id: segment,
                            why: format!("event {pos} has a field out of range"),
                        })?;
                    if event.ts_ms < since
                        || q.subject
                            .as_deref()
                            .is_some_and(|s| event.subject.as_deref() != Some(s))
                        || q.outcome.is_some_and(|o| event.outcome != o)
                    {
                        continue;
                    }
                    out.push((id, event));
                    if out.len() == want {
                        break;
                    }
                }
                if out.len() == want {
                    break;
                }
            }
        }
        out.reverse();
        Ok(out)
    }
}

/// A segment's text: UTF-8 by construction (written from `&str`s), checked all the same.
/// (A stray invalid byte becomes U+FFFD: the segment is stored, never swapped for nothing.)
/// (`str::from_utf8` first: it checks ASCII a word at a time, where the lossy decoder walks
/// every byte; the writer's segments are all but always ASCII.)
fn utf8(body: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(body) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(body),
    }
}

/// The segment insert, the same on both engines.
const INSERT_SEGMENT: &str =
    "INSERT INTO audit_segments (first_ts_ms, last_ts_ms, events, body) VALUES ($1, $2, $3, $4)";

async fn insert_pg(p: &sqlx::PgPool, lines: &AuditLines) -> Result<(), StoreError> {
    let (first, last) = lines.span();
    let mut tx = p.begin_write().await?;
    let mut body = Vec::new();
    for start in lines.segment_firsts() {
        let events = lines.segment(start, &mut body) as i64;
        sqlx::query(INSERT_SEGMENT)
            .bind(first)
            .bind(last)
            .bind(events)
            .bind(utf8(&body).as_ref())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Appends audit batches to the store, one transaction each, keeping what it needs between
/// batches. On SQLite that is its own connection (`rusqlite`), used from a blocking thread:
/// plain C calls with no per-statement hop between threads. On PostgreSQL the batch goes
/// through the pool.
#[derive(Debug)]
pub struct AuditAppender(Appender);

enum Appender {
    Postgres(sqlx::PgPool),
    Sqlite {
        path: std::path::PathBuf,
        /// Opened at the first batch, dropped after an error (opened again at the next).
        conn: Option<rusqlite::Connection>,
        /// The segment being written, kept for its memory (no fresh pages per batch).
        body: Vec<u8>,
    },
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Appender::Postgres(_) => f.write_str("Appender::Postgres"),
            Appender::Sqlite { path, conn, .. } => f
                .debug_struct("Appender::Sqlite")
                .field("path", path)
                .field("open", &conn.is_some())
                .finish(),
        }
    }
}

/// How long a SQLite insert waits for another writer (the CLI, another instance) to finish.
const SQLITE_BUSY: Duration = Duration::from_secs(5);
/// How long a PostgreSQL insert may take before the batch is kept for a retry.
const PG_TIMEOUT: Duration = Duration::from_secs(5);

impl AuditAppender {
    /// Appends `lines` in one transaction — all or none — and hands them back, so that the
    /// caller can keep them for a retry when the store refused them.
    pub async fn append(&mut self, lines: AuditLines) -> (AuditLines, Result<(), StoreError>) {
        if lines.is_empty() {
            return (lines, Ok(()));
        }
        match &mut self.0 {
            Appender::Postgres(p) => {
                let result = match tokio::time::timeout(PG_TIMEOUT, insert_pg(p, &lines)).await {
                    Ok(r) => r,
                    Err(_) => Err(StoreError::Timeout),
                };
                (lines, result)
            }
            Appender::Sqlite { path, conn, body } => {
                let (path, taken, mut scratch) = (path.clone(), conn.take(), std::mem::take(body));
                let job = tokio::task::spawn_blocking(move || {
                    let mut conn = taken;
                    let result = sqlite_append(&path, &mut conn, &lines, &mut scratch);
                    if result.is_err() {
                        conn = None;
                    }
                    (conn, lines, result, scratch)
                });
                match job.await {
                    Ok((back, lines, result, scratch)) => {
                        *conn = back;
                        *body = scratch;
                        (lines, result)
                    }
                    // The blocking task panicked or was cancelled at shutdown: its batch
                    // is gone with it (the audit file has it).
                    Err(e) => (AuditLines::new(), Err(StoreError::Task(e.to_string()))),
                }
            }
        }
    }
}

/// Inserts `lines` in one transaction on the SQLite file at `path`, opening the connection
/// if there is none.
fn sqlite_append(
    path: &std::path::Path,
    conn: &mut Option<rusqlite::Connection>,
    lines: &AuditLines,
    body: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let conn = match conn {
        Some(c) => c,
        None => conn.insert(open_sqlite(path)?),
    };
    let (first, last) = lines.span();
    let tx = conn.transaction()?;
    {
        let mut st = tx.prepare_cached(INSERT_SEGMENT)?;
        for start in lines.segment_firsts() {
            let events = lines.segment(start, body) as i64;
            let text = utf8(body);
            st.execute((first, last, events, text.as_ref()))?;
        }
    }
    // Dropped uncommitted on any error above: the whole batch is rolled back.
    tx.commit()?;
    Ok(())
}

/// The audit connection: the store's file, which exists and is migrated (the pool opened it
/// first); WAL is the file's own setting, `synchronous` each connection's.
fn open_sqlite(path: &std::path::Path) -> Result<rusqlite::Connection, StoreError> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(SQLITE_BUSY)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycard_core::Method;

    fn event(i: usize, ts_ms: i64) -> AuditEvent {
        AuditEvent {
            ts_ms,
            request_id: format!("r{i}"),
            route: Some("/api/".into()),
            method: Some(Method::ApiKey),
            outcome: Outcome::Success,
            reason: None,
            subject: Some("svc".into()),
            credential_id: None,
            ip: None,
        }
    }

    fn ids(body: &str) -> Vec<String> {
        let docs: Vec<serde_json::Value> = serde_json::from_str(body).unwrap();
        docs.iter()
            .map(|d| d["request_id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_batch_is_cut_into_segments_of_whole_json_documents() {
        let mut lines = AuditLines::new();
        let n = SEGMENT_EVENTS * 2 + 3;
        for i in 0..n {
            lines.push(&event(i, 1_000 + (i % 7) as i64));
        }
        assert_eq!(lines.len(), n);
        assert_eq!(lines.span(), (1_000, 1_006));
        let segments = lines.segments();
        let counts: Vec<i64> = segments.iter().map(|(c, _)| *c).collect();
        assert_eq!(counts, [SEGMENT_EVENTS as i64, SEGMENT_EVENTS as i64, 3]);
        let all: Vec<String> = segments.iter().flat_map(|(_, b)| ids(b)).collect();
        assert_eq!(all, (0..n).map(|i| format!("r{i}")).collect::<Vec<_>>());
        // The file's bytes: one document per line.
        assert_eq!(lines.as_bytes().split(|b| *b == b'\n').count(), n + 1);
    }

    /// A document written with a byte that is not UTF-8 is stored with U+FFFD in its place:
    /// the rest of the batch is kept, not replaced by an empty segment.
    #[test]
    fn a_stray_byte_never_empties_a_segment() {
        let mut lines = AuditLines::new();
        lines.push(&event(0, 1));
        lines.push_with(2, |out| {
            out.extend_from_slice(b"{\"request_id\":\"r\xff1\"}")
        });
        let mut body = Vec::new();
        assert_eq!(lines.segment(0, &mut body), 2);
        let docs: Vec<serde_json::Value> = serde_json::from_str(&utf8(&body)).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["request_id"], "r\u{fffd}1");
    }

    #[test]
    fn batches_join_and_lose_their_oldest_events_whole() {
        let (mut a, mut b) = (AuditLines::new(), AuditLines::new());
        for i in 0..5 {
            a.push(&event(i, 50 - i as i64));
        }
        for i in 5..9 {
            b.push(&event(i, 100 + i as i64));
        }
        a.append(&mut b);
        assert!(b.is_empty());
        assert_eq!(a.len(), 9);
        assert_eq!(a.span(), (46, 108));
        a.drop_oldest(3);
        let (count, body) = a.segments().remove(0);
        assert_eq!(count, 6);
        assert_eq!(ids(&body), ["r3", "r4", "r5", "r6", "r7", "r8"]);
        a.drop_oldest(100);
        assert!(a.is_empty() && a.segments().is_empty());
        // A document written without its newline gets one.
        a.push_with(7, |out| out.extend_from_slice(br#"{"request_id":"x"}"#));
        assert_eq!(a.as_bytes(), b"{\"request_id\":\"x\"}\n");
    }
}
