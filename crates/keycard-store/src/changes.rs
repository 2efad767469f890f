//! The change feed: a monotonic revision bumped by every writing transaction, with a row per
//! change naming what changed, so every instance can drop exactly the cached entries affected.

use sqlx::Row;

use crate::{Store, StoreError, with_pool};

/// What a change row names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A credential changed; `reference` is the hex of its lookup handle.
    Credential,
    /// A subject changed (disabled, enabled, password…); `reference` is its name.
    Subject,
    /// An OAuth client changed (revoked); `reference` is its `client_id`.
    Client,
    /// An access token was revoked before its expiry; `reference` is `"{jti} {exp}"`.
    Token,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Credential => "credential",
            ChangeKind::Subject => "subject",
            ChangeKind::Client => "client",
            ChangeKind::Token => "token",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "credential" => Some(ChangeKind::Credential),
            "subject" => Some(ChangeKind::Subject),
            "client" => Some(ChangeKind::Client),
            "token" => Some(ChangeKind::Token),
            _ => None,
        }
    }
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its revision (strictly increasing, committed in order).
    pub revision: i64,
    /// What changed.
    pub kind: ChangeKind,
    /// Which one.
    pub reference: String,
}

/// Bumps the feed head (taking its row lock until commit) and records the changes under the
/// new revision numbers. Call first in a writing transaction.
macro_rules! record_changes {
    ($tx:expr, $now:expr, $changes:expr) => {{
        for (kind, reference) in $changes {
            let revision: i64 = sqlx::query_scalar(
                "UPDATE feed_head SET revision = revision + 1 WHERE id = 1 RETURNING revision",
            )
            .fetch_one(&mut *$tx)
            .await?;
            sqlx::query("INSERT INTO changes (revision, kind, ref, at) VALUES ($1, $2, $3, $4)")
                .bind(revision)
                .bind($crate::changes::kind_str(kind))
                .bind(reference)
                .bind($now)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}
pub(crate) use record_changes;

/// Lowercase hex, as credential changes name their lookup handle.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn kind_str(kind: ChangeKind) -> &'static str {
    kind.as_str()
}

impl Store {
    /// The newest revision (0 on a new store).
    pub async fn latest_revision(&self) -> Result<i64, StoreError> {
        with_pool!(self, p => {
            let rev: i64 = sqlx::query_scalar("SELECT revision FROM feed_head WHERE id = 1")
                .fetch_one(p)
                .await?;
            Ok(rev)
        })
    }

    /// Whether a subject (a user, its password, its Digest secrets…) changed after
    /// `revision`.
    pub async fn subject_changed_since(&self, revision: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM (SELECT 1 FROM changes WHERE revision > $1 AND kind = $2 LIMIT 1) c",
            )
            .bind(revision)
            .bind(ChangeKind::Subject.as_str())
            .fetch_one(p)
            .await?;
            Ok(n > 0)
        })
    }

    /// Changes after `revision`, oldest first, at most `limit`.
    pub async fn changes_since(
        &self,
        revision: i64,
        limit: i64,
    ) -> Result<Vec<Change>, StoreError> {
        with_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT revision, kind, ref FROM changes WHERE revision > $1 ORDER BY revision LIMIT $2",
            )
            .bind(revision)
            .bind(limit)
            .fetch_all(p)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let kind: String = row.try_get("kind")?;
                // A kind from a newer keycard: treat as "anything may have changed".
                let kind = ChangeKind::parse(&kind).unwrap_or(ChangeKind::Subject);
                out.push(Change { revision: row.try_get("revision")?, kind, reference: row.try_get("ref")? });
            }
            Ok(out)
        })
    }

    /// Deletes change rows older than `before` (Unix seconds). Followers that fell further
    /// behind than that notice the gap and drop their whole cache.
    pub async fn prune_changes(&self, before: i64) -> Result<u64, StoreError> {
        with_pool!(self, p => {
            let r = sqlx::query("DELETE FROM changes WHERE at < $1 AND revision < (SELECT revision FROM feed_head WHERE id = 1)")
                .bind(before)
                .execute(p)
                .await?;
            Ok(r.rows_affected())
        })
    }

    /// The oldest revision still kept (0 when none), to detect a gap.
    pub async fn oldest_revision(&self) -> Result<i64, StoreError> {
        with_pool!(self, p => {
            let rev: Option<i64> = sqlx::query_scalar("SELECT MIN(revision) FROM changes").fetch_one(p).await?;
            Ok(rev.unwrap_or(0))
        })
    }
}
