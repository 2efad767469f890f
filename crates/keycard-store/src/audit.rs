//! The audit trail in the store (the server also appends it to a JSON-lines file).
//!
//! Kept in segments (schema v8): one row per batch the server's audit writer appends.
//! Every authenticated request adds an event, so the store's share of a request is what
//! matters: a few bytes of a large row, instead of a B-tree insert and an index entry per
//! event (on SQLite that alone was about 0.9 µs of CPU per request, measured). Schema v9
//! writes a segment's events compactly (see [`AuditBatch::segment`]): each event's time and
//! request id, and the fields most events of a batch have in common named once — about 30
//! bytes an event where the reference §7 document takes 200, and what the store writes, its WAL
//! copies and its checkpoint copies again costs system time by the byte (measured: the
//! writer's system time per request fell from about 0.55 µs to 0.1). Segments v8 wrote —
//! a JSON array of the reference §7 documents — are read as they are. Reading back
//! is rarer and scans segments newest first. The `audit_events` view shows one row per
//! event, the reference §7 fields, whichever form its segment has, for SQL readers.

use std::sync::Arc;
use std::time::Duration;

use crate::BeginWrite;
use std::collections::HashMap;

use keycard_core::audit::{json_opt, json_str};
use keycard_core::time::parse_rfc3339_millis;
use keycard_core::{AuditEvent, AuditEventRef, CertSource, Management, Method, Outcome};
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

/// A batch of audit events on its way to the store, kept as the compact segment body of
/// schema v9 is written (see [`AuditBatch::segment`]): each event's time and request id, and
/// an index into the batch's distinct *shared parts* — the rest of its fields, which most
/// events of a batch have in common (the same route, key, subject and address for one
/// client's requests).
#[derive(Debug, Default, Clone)]
pub struct AuditBatch {
    events: Vec<Entry>,
    /// The events' request ids as JSON strings, one after another (each entry has its end).
    ids: Vec<u8>,
    /// The distinct shared parts as JSON arrays, one after another, in order of first use.
    shared: Vec<u8>,
    /// Where each shared part ends in `shared`.
    shared_ends: Vec<usize>,
    /// A shared part's position, by its JSON text.
    index: HashMap<Box<[u8]>, u32>,
    /// The shared part of the event pushed last, and its position: consecutive events share
    /// theirs nearly always, found by comparing fields, without encoding or hashing.
    last: Option<(Shared, u32)>,
    /// Earliest and latest `ts` of the batch (Unix milliseconds).
    span: Option<(i64, i64)>,
    scratch: Vec<u8>,
}

/// One event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    ts_ms: i64,
    /// Where its request id ends in [`AuditBatch::ids`].
    id_end: usize,
    /// Its shared part's position.
    shared: u32,
}

/// An event's fields but `ts` and `request_id`, owned: the last one a batch encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Shared {
    route: Option<String>,
    method: Option<Method>,
    outcome: Option<Outcome>,
    reason: Option<String>,
    subject: Option<String>,
    credential_id: Option<String>,
    ip: Option<String>,
    operation: Option<(String, Option<String>)>,
    cert_source: Option<CertSource>,
}

impl Shared {
    fn matches(&self, e: &AuditEventRef<'_>) -> bool {
        self.outcome == Some(e.outcome)
            && self.method == e.method
            && self.route.as_deref() == e.route
            && self.reason.as_deref() == e.reason
            && self.subject.as_deref() == e.subject
            && self.credential_id.as_deref() == e.credential_id
            && self.ip.as_deref() == e.ip
            && self
                .operation
                .as_ref()
                .map(|(op, target)| (op.as_str(), target.as_deref()))
                == e.operation
            && self.cert_source == e.cert_source
    }

    /// Becomes `e`'s, reusing its strings' memory.
    fn set(&mut self, e: &AuditEventRef<'_>) {
        fn put(slot: &mut Option<String>, v: Option<&str>) {
            match (slot.as_mut(), v) {
                (Some(s), Some(v)) => {
                    s.clear();
                    s.push_str(v);
                }
                (_, v) => *slot = v.map(str::to_owned),
            }
        }
        put(&mut self.route, e.route);
        self.method = e.method;
        self.outcome = Some(e.outcome);
        put(&mut self.reason, e.reason);
        put(&mut self.subject, e.subject);
        put(&mut self.credential_id, e.credential_id);
        put(&mut self.ip, e.ip);
        self.operation = e
            .operation
            .map(|(op, target)| (op.to_owned(), target.map(str::to_owned)));
        self.cert_source = e.cert_source;
    }
}

/// A shared part as JSON: `[route, method, outcome, reason, subject, credential_id, ip]`,
/// then, when the event has any, `{"cert_source", "operation", "target"}`.
fn write_shared(out: &mut Vec<u8>, e: &AuditEventRef<'_>) {
    out.push(b'[');
    json_opt(out, e.route);
    out.push(b',');
    json_opt(out, e.method.map(Method::as_str));
    out.push(b',');
    json_str(out, e.outcome.as_str());
    out.push(b',');
    json_opt(out, e.reason);
    out.push(b',');
    json_opt(out, e.subject);
    out.push(b',');
    json_opt(out, e.credential_id);
    out.push(b',');
    json_opt(out, e.ip);
    // What only some events have, as one object after the seven: readers of the seven-field
    // form ignore nothing they know, and new fields join the object.
    if e.cert_source.is_some() || e.operation.is_some() {
        out.extend_from_slice(b",{");
        let mut first = true;
        let mut field = |out: &mut Vec<u8>, name: &[u8]| {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(name);
        };
        if let Some(source) = e.cert_source {
            field(out, b"\"cert_source\":");
            json_str(out, source.as_str());
        }
        if let Some((operation, target)) = e.operation {
            field(out, b"\"operation\":");
            json_str(out, operation);
            field(out, b"\"target\":");
            json_opt(out, target);
        }
        out.push(b'}');
    }
    out.push(b']');
}

/// Appends `n` in decimal.
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

/// Appends `n` in decimal, with its sign.
fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

impl PartialEq for AuditBatch {
    /// The same events in the same order, with the same shared parts.
    fn eq(&self, other: &Self) -> bool {
        self.events == other.events
            && self.ids == other.ids
            && self.shared == other.shared
            && self.shared_ends == other.shared_ends
            && self.span == other.span
    }
}

impl Eq for AuditBatch {}

impl AuditBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an event.
    pub fn push(&mut self, e: &AuditEventRef<'_>) {
        let shared = match &self.last {
            Some((last, at)) if last.matches(e) => *at,
            _ => {
                let mut text = std::mem::take(&mut self.scratch);
                text.clear();
                write_shared(&mut text, e);
                let at = self.intern(&text);
                self.scratch = text;
                let (mut last, _) = self.last.take().unwrap_or_default();
                last.set(e);
                self.last = Some((last, at));
                at
            }
        };
        json_str(&mut self.ids, e.request_id);
        self.events.push(Entry {
            ts_ms: e.ts_ms,
            id_end: self.ids.len(),
            shared,
        });
        self.span = Some(match self.span {
            Some((lo, hi)) => (lo.min(e.ts_ms), hi.max(e.ts_ms)),
            None => (e.ts_ms, e.ts_ms),
        });
    }

    /// The position of the shared part `text`, added if new.
    fn intern(&mut self, text: &[u8]) -> u32 {
        if let Some(at) = self.index.get(text) {
            return *at;
        }
        // A batch is bounded far below 2^32 events (the writer's retry cap), so are its parts.
        let at = u32::try_from(self.shared_ends.len()).unwrap_or(u32::MAX);
        self.shared.extend_from_slice(text);
        self.shared_ends.push(self.shared.len());
        self.index.insert(text.into(), at);
        at
    }

    /// The JSON text of shared part `i`.
    fn shared_part(&self, i: usize) -> &[u8] {
        let from = match i.checked_sub(1) {
            Some(p) => self.shared_ends.get(p).copied().unwrap_or(0),
            None => 0,
        };
        let to = self.shared_ends.get(i).copied().unwrap_or(from);
        self.shared.get(from..to).unwrap_or_default()
    }

    /// The JSON string of event `i`'s request id.
    fn id(&self, i: usize) -> &[u8] {
        let from = match i.checked_sub(1) {
            Some(p) => self.events.get(p).map_or(0, |e| e.id_end),
            None => 0,
        };
        let to = self.events.get(i).map_or(from, |e| e.id_end);
        self.ids.get(from..to).unwrap_or_default()
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.events.clear();
        self.ids.clear();
        self.shared.clear();
        self.shared_ends.clear();
        self.index.clear();
        self.last = None;
        self.span = None;
    }

    /// Moves every event of `other` after these.
    pub fn append(&mut self, other: &mut AuditBatch) {
        let parts: Vec<u32> = (0..other.shared_ends.len())
            .map(|i| self.intern(other.shared_part(i)))
            .collect();
        let base = self.ids.len();
        self.ids.extend_from_slice(&other.ids);
        self.events.extend(other.events.iter().map(|e| Entry {
            ts_ms: e.ts_ms,
            id_end: e.id_end + base,
            shared: parts.get(e.shared as usize).copied().unwrap_or(e.shared),
        }));
        self.span = match (self.span, other.span) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (x, y) => x.or(y),
        };
        other.clear();
    }

    /// Drops the `n` oldest events, and the shared parts only they had (the span stays as it
    /// was: wider, never wrong).
    pub fn drop_oldest(&mut self, n: usize) {
        if n >= self.len() {
            self.clear();
            return;
        }
        let cut = n
            .checked_sub(1)
            .and_then(|p| self.events.get(p))
            .map_or(0, |e| e.id_end);
        self.ids.drain(..cut);
        self.events.drain(..n);
        // The parts still used, in their order; the others go (a long store outage under
        // varied traffic must not keep every part it ever saw).
        let mut keep: Vec<Option<u32>> = vec![None; self.shared_ends.len()];
        let (old_shared, old_ends) = (
            std::mem::take(&mut self.shared),
            std::mem::take(&mut self.shared_ends),
        );
        self.index.clear();
        self.last = None;
        let old = AuditBatch {
            shared: old_shared,
            shared_ends: old_ends,
            ..AuditBatch::default()
        };
        let mut events = std::mem::take(&mut self.events);
        for e in &mut events {
            e.id_end -= cut;
            let i = e.shared as usize;
            let at = match keep.get(i).copied().flatten() {
                Some(at) => at,
                None => {
                    let at = self.intern(old.shared_part(i));
                    if let Some(slot) = keep.get_mut(i) {
                        *slot = Some(at);
                    }
                    at
                }
            };
            e.shared = at;
        }
        self.events = events;
    }

    /// Writes into `body` the segment whose first event is the batch's `first` — at most
    /// [`SEGMENT_EVENTS`] events — and returns how many it holds. Its form (schema v9):
    ///
    /// `{"v":2,"t0":T,"shared":[[route,method,outcome,reason,subject,credential_id,ip],…],
    /// "events":[[dt,request_id,s],…]}`
    ///
    /// — an event's `ts` is `t0 + dt` Unix milliseconds (`t0` is the segment's earliest) and
    /// its other fields are the `s`th (from 0) shared part's. About 30 bytes an event
    /// where its reference §7 document takes 200.
    pub fn segment(&self, first: usize, body: &mut Vec<u8>) -> usize {
        let end = (first + SEGMENT_EVENTS).min(self.len());
        let events = self.events.get(first..end).unwrap_or_default();
        let t0 = events.iter().map(|e| e.ts_ms).min().unwrap_or(0);
        body.clear();
        body.extend_from_slice(b"{\"v\":2,\"t0\":");
        write_i64(body, t0);
        body.extend_from_slice(b",\"shared\":[");
        for i in 0..self.shared_ends.len() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(self.shared_part(i));
        }
        body.extend_from_slice(b"],\"events\":[");
        for (i, e) in events.iter().enumerate() {
            body.extend_from_slice(if i == 0 { b"[" } else { b",[" });
            // t0 is the least: the difference is in 0..2^64.
            write_u64(body, e.ts_ms.wrapping_sub(t0) as u64);
            body.push(b',');
            body.extend_from_slice(self.id(first + i));
            body.push(b',');
            write_u64(body, u64::from(e.shared));
            body.push(b']');
        }
        body.extend_from_slice(b"]}");
        end - first
    }

    /// The first event of each segment the batch is cut into.
    fn segment_firsts(&self) -> impl Iterator<Item = usize> + use<> {
        (0..self.len()).step_by(SEGMENT_EVENTS)
    }

    /// The batch cut into segments: (events, body).
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

/// An event as schema v8 stored it: its reference §7 document, in a JSON array per segment.
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
            management: None,
            cert_source: None,
        })
    }
}

/// A segment as schema v9 stores it (see [`AuditBatch::segment`]).
#[derive(Deserialize)]
struct Compact {
    v: u32,
    t0: i64,
    shared: Vec<SharedDoc>,
    events: Vec<(u64, String, usize)>,
}

/// `[route, method, outcome, reason, subject, credential_id, ip]`, and an object of what only
/// some events have.
#[derive(Deserialize)]
#[serde(untagged)]
enum SharedDoc {
    Plain(
        Option<String>,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    Extended(
        Option<String>,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Extra,
    ),
}

/// The object after a shared part's seven fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Extra {
    cert_source: Option<String>,
    operation: Option<String>,
    target: Option<String>,
}

/// A shared part read back: its text shared by the events that use it.
struct SharedEvent {
    route: Option<Arc<str>>,
    method: Option<Method>,
    outcome: Outcome,
    reason: Option<String>,
    subject: Option<Arc<str>>,
    credential_id: Option<Arc<str>>,
    ip: Option<String>,
    management: Option<Management>,
    cert_source: Option<CertSource>,
}

impl SharedDoc {
    fn parse(self) -> Option<SharedEvent> {
        let (route, method, outcome, reason, subject, credential_id, ip, extra) = match self {
            SharedDoc::Plain(route, method, outcome, reason, subject, credential_id, ip) => (
                route,
                method,
                outcome,
                reason,
                subject,
                credential_id,
                ip,
                None,
            ),
            SharedDoc::Extended(
                route,
                method,
                outcome,
                reason,
                subject,
                credential_id,
                ip,
                extra,
            ) => (
                route,
                method,
                outcome,
                reason,
                subject,
                credential_id,
                ip,
                Some(extra),
            ),
        };
        let (cert_source, management) = match extra {
            None => (None, None),
            Some(x) => (
                match x.cert_source {
                    Some(c) => Some(CertSource::parse(&c)?),
                    None => None,
                },
                match (x.operation, x.target) {
                    (Some(operation), target) => Some(Management { operation, target }),
                    (None, None) => None,
                    (None, Some(_)) => return None,
                },
            ),
        };
        Some(SharedEvent {
            management,
            cert_source,
            route: route.map(Arc::from),
            method: match method {
                Some(m) => Some(m.parse().ok()?),
                None => None,
            },
            outcome: Outcome::parse(&outcome)?,
            reason,
            subject: subject.map(Arc::from),
            credential_id: credential_id.map(Arc::from),
            ip,
        })
    }
}

/// The events of segment `id`, in order, from its body in either schema's form: a JSON array
/// of documents (v8) or the compact object (v9).
fn segment_events(id: i64, body: &str) -> Result<Vec<AuditEvent>, StoreError> {
    let bad = |why: String| StoreError::BadAuditSegment { id, why };
    if body.trim_start().starts_with('[') {
        let docs: Vec<Doc> = serde_json::from_str(body).map_err(|e| bad(e.to_string()))?;
        return docs
            .into_iter()
            .enumerate()
            .map(|(pos, doc)| {
                doc.into_event()
                    .ok_or_else(|| bad(format!("event {pos} has a field out of range")))
            })
            .collect();
    }
    let c: Compact = serde_json::from_str(body).map_err(|e| bad(e.to_string()))?;
    if c.v != 2 {
        return Err(bad(format!("unknown segment form {}", c.v)));
    }
    let shared = c
        .shared
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse()
                .ok_or_else(|| bad(format!("shared part {i} has a field out of range")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    c.events
        .into_iter()
        .enumerate()
        .map(|(pos, (dt, request_id, s))| {
            let out_of_range = || bad(format!("event {pos} has a field out of range"));
            let ts_ms =
                i64::try_from(i128::from(c.t0) + i128::from(dt)).map_err(|_| out_of_range())?;
            let part = shared.get(s).ok_or_else(out_of_range)?;
            Ok(AuditEvent {
                ts_ms,
                request_id,
                route: part.route.clone(),
                method: part.method,
                outcome: part.outcome,
                reason: part.reason.clone(),
                subject: part.subject.clone(),
                credential_id: part.credential_id.clone(),
                ip: part.ip.clone(),
                management: part.management.clone(),
                cert_source: part.cert_source,
            })
        })
        .collect()
}

impl Store {
    /// Appends events, in one transaction: all of them or none.
    ///
    /// The server's audit writer goes through an [`AuditAppender`] instead, which keeps its
    /// SQLite connection between batches; this is the same code for an occasional batch.
    pub async fn insert_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut batch = AuditBatch::new();
        for e in events {
            batch.push(&e.borrowed());
        }
        self.audit_appender().append(batch).await.1
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
                let events = segment_events(segment, &body)?;
                for (pos, event) in events.into_iter().enumerate().rev() {
                    let id = segment * per_segment + pos as i64;
                    if q.before_id.is_some_and(|b| id >= b) {
                        continue;
                    }
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

async fn insert_pg(p: &sqlx::PgPool, batch: &AuditBatch) -> Result<(), StoreError> {
    let (first, last) = batch.span();
    let mut tx = p.begin_write().await?;
    let mut body = Vec::new();
    for start in batch.segment_firsts() {
        let events = batch.segment(start, &mut body) as i64;
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
    /// Appends `batch` in one transaction — all or none — and hands them back, so that the
    /// caller can keep them for a retry when the store refused them.
    pub async fn append(&mut self, batch: AuditBatch) -> (AuditBatch, Result<(), StoreError>) {
        if batch.is_empty() {
            return (batch, Ok(()));
        }
        match &mut self.0 {
            Appender::Postgres(p) => {
                let result = match tokio::time::timeout(PG_TIMEOUT, insert_pg(p, &batch)).await {
                    Ok(r) => r,
                    Err(_) => Err(StoreError::Timeout),
                };
                (batch, result)
            }
            Appender::Sqlite { path, conn, body } => {
                let (path, taken, mut scratch) = (path.clone(), conn.take(), std::mem::take(body));
                let job = tokio::task::spawn_blocking(move || {
                    let mut conn = taken;
                    let result = sqlite_append(&path, &mut conn, &batch, &mut scratch);
                    if result.is_err() {
                        conn = None;
                    }
                    (conn, batch, result, scratch)
                });
                match job.await {
                    Ok((back, batch, result, scratch)) => {
                        *conn = back;
                        *body = scratch;
                        (batch, result)
                    }
                    // The blocking task panicked or was cancelled at shutdown: its batch
                    // is gone with it (the audit file has it).
                    Err(e) => (AuditBatch::new(), Err(StoreError::Task(e))),
                }
            }
        }
    }
}

/// Inserts `batch` in one transaction on the SQLite file at `path`, opening the connection
/// if there is none.
fn sqlite_append(
    path: &std::path::Path,
    conn: &mut Option<rusqlite::Connection>,
    batch: &AuditBatch,
    body: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let conn = match conn {
        Some(c) => c,
        None => conn.insert(open_sqlite(path)?),
    };
    let (first, last) = batch.span();
    let tx = conn.transaction()?;
    {
        let mut st = tx.prepare_cached(INSERT_SEGMENT)?;
        for start in batch.segment_firsts() {
            let events = batch.segment(start, body) as i64;
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
            management: None,
            cert_source: None,
        }
    }

    /// The request ids of a segment body, in order.
    fn ids(body: &str) -> Vec<String> {
        segment_events(1, body)
            .unwrap()
            .into_iter()
            .map(|e| e.request_id)
            .collect()
    }

    fn batch_of(events: &[AuditEvent]) -> AuditBatch {
        let mut b = AuditBatch::new();
        events.iter().for_each(|e| b.push(&e.borrowed()));
        b
    }

    #[test]
    fn a_batch_is_cut_into_segments_of_whole_events() {
        let n = SEGMENT_EVENTS * 2 + 3;
        let events: Vec<AuditEvent> = (0..n).map(|i| event(i, 1_000 + (i % 7) as i64)).collect();
        let batch = batch_of(&events);
        assert_eq!(batch.len(), n);
        assert_eq!(batch.span(), (1_000, 1_006));
        let segments = batch.segments();
        let counts: Vec<i64> = segments.iter().map(|(c, _)| *c).collect();
        assert_eq!(counts, [SEGMENT_EVENTS as i64, SEGMENT_EVENTS as i64, 3]);
        let back: Vec<AuditEvent> = segments
            .iter()
            .flat_map(|(_, b)| segment_events(1, b).unwrap())
            .collect();
        assert!(back == events, "events lost, changed or out of order");
    }

    /// The point of the v9 form: the fields events share are written once. A typical
    /// API-key batch (one client, one key) takes well under a fifth of its reference §7 lines.
    #[test]
    fn a_segment_names_what_its_events_share_once() {
        let events: Vec<AuditEvent> = (0..1000)
            .map(|i| AuditEvent {
                ts_ms: 1_795_868_261_000 + i / 20,
                request_id: format!("McLVlwmjXk-{:06x}", 0x1e5a8f + i),
                route: Some("/api/".into()),
                method: Some(Method::ApiKey),
                outcome: Outcome::Success,
                reason: None,
                subject: Some("bench".into()),
                credential_id: Some("key_omlB7XGiiEBtxBIt".into()),
                ip: Some("127.0.0.1".into()),
                management: None,
                cert_source: None,
            })
            .collect();
        let mut lines = Vec::new();
        events.iter().for_each(|e| e.write_json_line(&mut lines));
        let (_, body) = batch_of(&events).segments().remove(0);
        assert!(
            body.len() * 5 < lines.len(),
            "{} bytes for {} of JSON lines",
            body.len(),
            lines.len()
        );
        assert_eq!(body.matches("key_omlB7XGiiEBtxBIt").count(), 1);
        assert!(segment_events(1, &body).unwrap() == events);
    }

    /// Events alternating between parts, parts coming back after others, every field's
    /// awkward values: each event reads back as it went in.
    #[test]
    fn shared_parts_are_found_again_and_kept_apart() {
        let awkward = "q\"uote b\\ack n\nl c\u{1}trl José 🗝 ]},[ null";
        let kinds = [
            event(0, 5),
            AuditEvent {
                reason: Some(awkward.into()),
                subject: Some(awkward.into()),
                ..event(0, 5)
            },
            AuditEvent {
                method: None,
                outcome: Outcome::Failure,
                route: None,
                subject: None,
                ..event(0, 5)
            },
            AuditEvent {
                ip: Some("2001:db8::1".into()),
                ..event(0, 5)
            },
            AuditEvent {
                outcome: Outcome::Throttled,
                ..event(0, 5)
            },
        ];
        let events: Vec<AuditEvent> = (0..40usize)
            .map(|i| AuditEvent {
                request_id: format!("{awkward}{i}"),
                ts_ms: 1_000 - i as i64,
                ..kinds[(i * 7 + i / 5) % kinds.len()].clone()
            })
            .collect();
        let batch = batch_of(&events);
        assert_eq!(batch.shared_ends.len(), kinds.len());
        let (_, body) = batch.segments().remove(0);
        assert!(segment_events(1, &body).unwrap() == events);
    }

    /// The extreme times a segment may hold (its least is `t0`, the others an unsigned
    /// difference) read back exactly.
    #[test]
    fn extreme_times_survive_a_segment() {
        let events = [
            event(0, i64::MAX),
            event(1, i64::MIN),
            event(2, 0),
            event(3, -1),
        ];
        let (_, body) = batch_of(&events).segments().remove(0);
        assert!(segment_events(1, &body).unwrap() == events);
    }

    /// A damaged body is reported with its segment's id, not read as something else.
    #[test]
    fn a_damaged_segment_is_an_error_naming_it() {
        for body in [
            "",
            "{",
            r#"{"v":3,"t0":0,"shared":[],"events":[]}"#,
            r#"{"v":2,"t0":0,"shared":[],"events":[[0,"r",0]]}"#,
            r#"{"v":2,"t0":0,"shared":[[null,"nope","success",null,null,null,null]],"events":[]}"#,
            r#"{"v":2,"t0":0,"shared":[[null,null,"maybe",null,null,null,null]],"events":[]}"#,
            r#"{"v":2,"t0":9223372036854775807,"shared":[[null,null,"success",null,null,null,null]],"events":[[1,"r",0]]}"#,
            r#"[{"ts":"x","request_id":"r","outcome":"success"}]"#,
        ] {
            match segment_events(42, body) {
                Err(StoreError::BadAuditSegment { id: 42, .. }) => {}
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    /// A text that is not UTF-8 is stored with U+FFFD in its place: never an empty segment.
    #[test]
    fn a_stray_byte_never_empties_a_segment() {
        assert_eq!(utf8(b"[\"r\xff1\"]"), "[\"r\u{fffd}1\"]");
        assert!(matches!(utf8(b"[\"r1\"]"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn batches_join_and_lose_their_oldest_events_whole() {
        let first: Vec<AuditEvent> = (0..5)
            .map(|i| AuditEvent {
                subject: Some(format!("s{i}").into()),
                ..event(i, 50 - i as i64)
            })
            .collect();
        let second: Vec<AuditEvent> = (5..9).map(|i| event(i, 100 + i as i64)).collect();
        let (mut a, mut b) = (batch_of(&first), batch_of(&second));
        a.append(&mut b);
        assert!(b.is_empty() && b.shared_ends.is_empty());
        assert_eq!(a.len(), 9);
        assert_eq!(a.span(), (46, 108));
        a.drop_oldest(3);
        let (count, body) = a.segments().remove(0);
        assert_eq!(count, 6);
        assert_eq!(ids(&body), ["r3", "r4", "r5", "r6", "r7", "r8"]);
        let all = [first, second].concat();
        assert!(segment_events(1, &body).unwrap() == all[3..]);
        // The parts of the dropped events went with them: s3, s4 and the second batch's.
        assert_eq!(a.shared_ends.len(), 3);
        assert!(!body.contains("\"s0\""));
        // Pushing after a drop finds the kept parts again.
        a.push(&all[8].borrowed());
        assert_eq!(a.shared_ends.len(), 3);
        a.drop_oldest(100);
        assert!(a.is_empty() && a.segments().is_empty());
    }
}
