//! The audit trail in the store (the server also appends it to a JSON-lines file).

use crate::BeginWrite;
use keycard_core::{AuditEvent, Method, Outcome};
use sqlx::{QueryBuilder, Row};

use crate::{Backend, Store, StoreError, with_pool};

/// Rows per SQLite statement (one JSON text parameter whatever the count).
const SQLITE_CHUNK: usize = 4096;

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
            // SQLite: the batch as one JSON text, unpacked by `jsonb_each` inside SQLite (each row's array stays binary JSON: no text re-parse per column) — one
            // bound value per chunk instead of nine allocated copies per row.
            Backend::Sqlite(p) => {
                let mut tx = p.begin_write().await?;
                let mut rows = Vec::with_capacity(events.len().min(SQLITE_CHUNK) * 160);
                for chunk in events.chunks(SQLITE_CHUNK) {
                    rows.clear();
                    rows.push(b'[');
                    for (i, e) in chunk.iter().enumerate() {
                        if i > 0 {
                            rows.push(b',');
                        }
                        e.write_json_row(&mut rows);
                    }
                    rows.push(b']');
                    let text = String::from_utf8(std::mem::take(&mut rows))
                        .map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))?;
                    sqlx::query(
                        "INSERT INTO audit_events (ts_ms, request_id, route, method, outcome, reason, subject, credential_id, ip) \
                         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8 \
                         FROM jsonb_each(?1) ORDER BY key",
                    )
                    .bind(text)
                    .execute(&mut *tx)
                    .await?;
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
