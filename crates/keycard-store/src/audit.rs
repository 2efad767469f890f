//! The audit trail in the store (the server also appends it to a JSON-lines file).

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use crate::BeginWrite;
use keycard_core::{AuditEvent, Method, Outcome};
use sqlx::{QueryBuilder, Row};

use crate::{Backend, Store, StoreError, with_pool};

/// Rows per PostgreSQL statement (nine array parameters whatever the count).
const PG_CHUNK: usize = 4096;

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

impl Store {
    /// Appends events, in one transaction: all of them or none.
    ///
    /// The server's audit writer goes through an [`AuditAppender`] instead, which keeps its
    /// SQLite connection between batches; this is the same code for an occasional batch.
    pub async fn insert_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Postgres(p) => insert_pg(p, events).await,
            Backend::Sqlite(_) => {
                let (_, result) = self.audit_appender().append(events.to_vec()).await;
                result
            }
        }
    }

    /// An appender for a stream of audit batches (the server's audit writer).
    pub fn audit_appender(&self) -> AuditAppender {
        match &self.backend {
            Backend::Postgres(p) => AuditAppender(Appender::Postgres(p.clone())),
            Backend::Sqlite(p) => AuditAppender(Appender::Sqlite {
                path: p.connect_options().get_filename().to_path_buf(),
                conn: None,
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

    /// As [`Store::query_audit`], each event with its row id (a paging cursor: pass the
    /// smallest as `before_id` for the page before).
    pub async fn query_audit_ids(
        &self,
        q: &AuditQuery,
    ) -> Result<Vec<(i64, AuditEvent)>, StoreError> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(
                "SELECT id, ts_ms, request_id, route, method, outcome, reason, subject, credential_id, ip FROM audit_events WHERE 1 = 1",
            );
            if let Some(before) = q.before_id {
                qb.push(" AND id < ").push_bind(before);
            }
            if let Some(since) = q.since_ms {
                qb.push(" AND ts_ms >= ").push_bind(since);
            }
            if let Some(subject) = &q.subject {
                qb.push(" AND subject = ").push_bind(subject.as_str());
            }
            if let Some(outcome) = q.outcome {
                qb.push(" AND outcome = ").push_bind(outcome.as_str());
            }
            qb.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit.max(0));
            let rows = qb.build().fetch_all(p).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows.into_iter().rev() {
                let method: Option<String> = row.try_get("method")?;
                let outcome: String = row.try_get("outcome")?;
                let id: i64 = row.try_get("id")?;
                out.push((id, AuditEvent {
                    ts_ms: row.try_get("ts_ms")?,
                    request_id: row.try_get("request_id")?,
                    route: row.try_get("route")?,
                    method: method.and_then(|m| m.parse().ok()),
                    outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Failure),
                    reason: row.try_get("reason")?,
                    subject: row.try_get("subject")?,
                    credential_id: row.try_get("credential_id")?,
                    ip: row.try_get("ip")?,
                }));
            }
            Ok(out)
        })
    }
}

/// PostgreSQL takes a whole batch as nine array parameters (UNNEST), far cheaper to bind
/// than thousands of scalar ones, so a busy audit trail does not crowd out the reads the
/// request path waits on.
async fn insert_pg(p: &sqlx::PgPool, events: &[AuditEvent]) -> Result<(), StoreError> {
    let mut tx = p.begin_write().await?;
    for chunk in events.chunks(PG_CHUNK) {
        sqlx::query(
                "INSERT INTO audit_events (ts_ms, request_id, route, method, outcome, reason, subject, credential_id, ip) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])",
            )
            .bind(chunk.iter().map(|e| e.ts_ms).collect::<Vec<i64>>())
            .bind(chunk.iter().map(|e| e.request_id.as_str()).collect::<Vec<&str>>())
            .bind(chunk.iter().map(|e| e.route.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(chunk.iter().map(|e| e.method.map(Method::as_str)).collect::<Vec<Option<&str>>>())
            .bind(chunk.iter().map(|e| e.outcome.as_str()).collect::<Vec<&str>>())
            .bind(chunk.iter().map(|e| e.reason.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(chunk.iter().map(|e| e.subject.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(chunk.iter().map(|e| e.credential_id.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(chunk.iter().map(|e| e.ip.as_deref()).collect::<Vec<Option<&str>>>())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Appends audit batches to the store, one transaction each, keeping what it needs between
/// batches. On SQLite that is its own connection (`rusqlite`), used from a blocking thread:
/// the insert of a few thousand rows runs as plain C calls with no per-statement hop between
/// threads, about half the CPU per event of going through the async pool — and the audit
/// trail takes a share of every authenticated request's budget. On PostgreSQL the batch goes
/// through the pool as nine arrays ([`Store::insert_audit`]).
#[derive(Debug)]
pub struct AuditAppender(Appender);

enum Appender {
    Postgres(sqlx::PgPool),
    Sqlite {
        path: PathBuf,
        /// Opened at the first batch, dropped after an error (opened again at the next).
        conn: Option<rusqlite::Connection>,
    },
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Appender::Postgres(_) => f.write_str("Appender::Postgres"),
            Appender::Sqlite { path, conn } => f
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
    /// Appends `events` in one transaction — all or none — and hands them back, so that the
    /// caller can keep them for a retry when the store refused them.
    pub async fn append(
        &mut self,
        events: Vec<AuditEvent>,
    ) -> (Vec<AuditEvent>, Result<(), StoreError>) {
        if events.is_empty() {
            return (events, Ok(()));
        }
        match &mut self.0 {
            Appender::Postgres(p) => {
                let result = match tokio::time::timeout(PG_TIMEOUT, insert_pg(p, &events)).await {
                    Ok(r) => r,
                    Err(_) => Err(StoreError::Timeout),
                };
                (events, result)
            }
            Appender::Sqlite { path, conn } => {
                let (path, taken) = (path.clone(), conn.take());
                let job = tokio::task::spawn_blocking(move || {
                    let mut conn = taken;
                    let result = sqlite_append(&path, &mut conn, &events);
                    if result.is_err() {
                        conn = None;
                    }
                    (conn, events, result)
                });
                match job.await {
                    Ok((back, events, result)) => {
                        *conn = back;
                        (events, result)
                    }
                    // The blocking task panicked or was cancelled at shutdown: its batch
                    // is gone with it (the audit file has it).
                    Err(e) => (Vec::new(), Err(StoreError::Task(e.to_string()))),
                }
            }
        }
    }
}

/// Inserts `events` in one transaction on the SQLite file at `path`, opening the connection
/// if there is none.
fn sqlite_append(
    path: &std::path::Path,
    conn: &mut Option<rusqlite::Connection>,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    let conn = match conn {
        Some(c) => c,
        None => conn.insert(open_sqlite(path)?),
    };
    let tx = conn.transaction()?;
    let mut rest = events;
    while let Some((sql, rows)) = sqlite_shape(rest.len()) {
        let (chunk, tail) = rest.split_at(rows);
        let mut st = tx.prepare_cached(sql)?;
        let mut i = 1;
        for e in chunk {
            st.raw_bind_parameter(i, e.ts_ms)?;
            st.raw_bind_parameter(i + 1, e.request_id.as_str())?;
            st.raw_bind_parameter(i + 2, e.route.as_deref())?;
            st.raw_bind_parameter(i + 3, e.method.map(Method::as_str))?;
            st.raw_bind_parameter(i + 4, e.outcome.as_str())?;
            st.raw_bind_parameter(i + 5, e.reason.as_deref())?;
            st.raw_bind_parameter(i + 6, e.subject.as_deref())?;
            st.raw_bind_parameter(i + 7, e.credential_id.as_deref())?;
            st.raw_bind_parameter(i + 8, e.ip.as_deref())?;
            i += 9;
        }
        st.raw_execute()?;
        rest = tail;
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

/// Rows per SQLite statement, largest first: a batch is cut into these, so only this many
/// statement texts exist (each prepared once per connection and cached), 9 parameters a row.
const SQLITE_ROWS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// The statement for the next rows of a batch with `left` events to go, and how many rows
/// it takes; `None` when none are left.
fn sqlite_shape(left: usize) -> Option<(&'static str, usize)> {
    // `OR FAIL` keeps SQLite from copying every page a multi-row statement touches to a
    // statement journal first (it does for one that may abort, in a transaction); a failure
    // still rolls the whole batch back, since the transaction is then dropped uncommitted.
    static SHAPES: LazyLock<Vec<(String, usize)>> = LazyLock::new(|| {
        SQLITE_ROWS
            .iter()
            .map(|&rows| {
                let mut sql = String::from(
                    "INSERT OR FAIL INTO audit_events (ts_ms, request_id, route, method, outcome, reason, subject, credential_id, ip) VALUES ",
                );
                for i in 0..rows {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str("(?,?,?,?,?,?,?,?,?)");
                }
                (sql, rows)
            })
            .collect()
    });
    SHAPES
        .iter()
        .find(|(_, rows)| *rows <= left)
        .map(|(sql, rows)| (sql.as_str(), *rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_batch_size_is_cut_into_whole_statements() {
        assert_eq!(sqlite_shape(0), None);
        for n in 1..=1100 {
            let (mut left, mut statements) = (n, 0);
            while let Some((sql, rows)) = sqlite_shape(left) {
                assert!(rows <= left);
                assert_eq!(sql.matches('?').count(), rows * 9, "{sql}");
                left -= rows;
                statements += 1;
            }
            assert_eq!(left, 0);
            // At most one statement per full 256 rows plus one per bit of the remainder.
            assert!(statements <= n / 256 + 8, "{n}: {statements}");
        }
    }
}
