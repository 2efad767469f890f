//! The audit trail in the store (the server also appends it to a JSON-lines file).

use std::sync::LazyLock;

use crate::BeginWrite;
use keycard_core::{AuditEvent, Method, Outcome};
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments as _, QueryBuilder, Row};

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
    /// Appends events, in one transaction.
    pub async fn insert_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        match &self.backend {
            // The one place the engines differ: PostgreSQL takes a whole batch as nine array
            // parameters (UNNEST), far cheaper to bind than thousands of scalar ones, so a
            // busy audit trail does not crowd out the reads the request path waits on.
            Backend::Postgres(p) => {
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
            // SQLite: multi-row `VALUES` statements of bound parameters (a few shapes, each
            // prepared once), all in one transaction. `OR FAIL` keeps SQLite from copying every
            // page the batch touches to a statement journal first (it does for a multi-row
            // statement that may abort, in a transaction); a failure still rolls the whole
            // batch back, since the transaction is then dropped uncommitted.
            Backend::Sqlite(p) => {
                let mut tx = p.begin_write().await?;
                let mut rest = events;
                while let Some((sql, rows)) = sqlite_shape(rest.len()) {
                    let (chunk, tail) = rest.split_at(rows);
                    // Arguments gathered first, then one query: `Query::bind` moves the
                    // whole query on every call, nine times a row.
                    let mut args = SqliteArguments::default();
                    args.reserve(rows * 9, rows * 9 * 16);
                    for e in chunk {
                        args.add(e.ts_ms).map_err(sqlx::Error::Encode)?;
                        args.add(e.request_id.as_str())
                            .map_err(sqlx::Error::Encode)?;
                        args.add(e.route.clone()).map_err(sqlx::Error::Encode)?;
                        args.add(e.method.map(Method::as_str))
                            .map_err(sqlx::Error::Encode)?;
                        args.add(e.outcome.as_str()).map_err(sqlx::Error::Encode)?;
                        args.add(e.reason.as_deref()).map_err(sqlx::Error::Encode)?;
                        args.add(e.subject.clone()).map_err(sqlx::Error::Encode)?;
                        args.add(e.credential_id.clone())
                            .map_err(sqlx::Error::Encode)?;
                        args.add(e.ip.as_deref()).map_err(sqlx::Error::Encode)?;
                    }
                    sqlx::query_with(sql, args).execute(&mut *tx).await?;
                    rest = tail;
                }
                tx.commit().await?;
                Ok(())
            }
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

/// Rows per SQLite statement, largest first: a batch is cut into these, so only this many
/// statement texts exist (each prepared once per connection and cached), 9 parameters a row.
const SQLITE_ROWS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// The statement for the next rows of a batch with `left` events to go, and how many rows
/// it takes; `None` when none are left.
fn sqlite_shape(left: usize) -> Option<(&'static str, usize)> {
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
