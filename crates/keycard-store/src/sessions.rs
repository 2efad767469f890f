//! Login sessions of the authorization server, and ending what a user was granted.
//!
//! A session row is found by the keyed hash of the browser's secret; its public id is
//! what codes and grants name. Ending a user (a new password, a second factor, disabling,
//! `keycard user logout`) ends every session and revokes every grant of that user in the
//! same transaction as the change that caused it.

use sqlx::Row;

use crate::changes::record_changes;
use crate::grants::revoke_grant_in_tx;
use crate::{BeginWrite, ChangeKind, GrantRow, Store, StoreError, with_pool};

/// A login session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The keyed hash of the browser's session secret.
    pub session_hash: Vec<u8>,
    /// Its public id (named by the codes and grants issued in it).
    pub session_id: String,
    /// The user.
    pub subject: String,
    /// What the user's credentials were at sign-in (the caller's MAC of them).
    pub credential_tag: String,
    /// When the user authenticated (Unix seconds).
    pub auth_time: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

/// What ending sessions ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ended {
    /// Sessions ended.
    pub sessions: u64,
    /// Grants revoked (their refresh tokens and access tokens).
    pub grants: u64,
}

/// Ends, inside transaction `$tx`, every session of `$subject` and revokes every grant it
/// holds; evaluates to [`Ended`].
macro_rules! end_user_in_tx {
    ($tx:expr, $subject:expr, $now:expr) => {{
        let sessions = sqlx::query(
            "UPDATE oauth_sessions SET ended_at = $2 WHERE subject = $1 AND ended_at IS NULL",
        )
        .bind($subject)
        .bind($now)
        .execute(&mut *$tx)
        .await?
        .rows_affected();
        let grants: Vec<String> = sqlx::query_scalar(
            "SELECT grant_id FROM oauth_grants WHERE subject = $1 AND revoked_at IS NULL",
        )
        .bind($subject)
        .fetch_all(&mut *$tx)
        .await?;
        for g in &grants {
            $crate::grants::revoke_grant_in_tx!($tx, g, $now);
        }
        $crate::sessions::Ended {
            sessions,
            grants: grants.len() as u64,
        }
    }};
}
pub(crate) use end_user_in_tx;

impl Store {
    /// Starts a session of a user whose credentials were checked as `password_id` and
    /// `totp_sealed` (the sealed seed, if enrolled): `false`, and no session, when the store
    /// holds others by now, or the user is disabled. The check and the insert are one
    /// statement, so a sign-in checked against credentials that changed a moment before
    /// (the checker's copy was not yet told) starts nothing, and a change committed after
    /// it finds the session and ends it.
    pub async fn start_session(
        &self,
        s: &SessionRow,
        password_id: &str,
        totp_sealed: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let inserted = sqlx::query(
                "INSERT INTO oauth_sessions (session_hash, session_id, subject, credential_tag, auth_time, expires_at) \
                 SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM subjects WHERE name = $3 AND kind = 'user' \
                 AND disabled_at IS NULL AND password_id = $7 AND COALESCE(totp_sealed, $8) = $9)",
            )
            .bind(&s.session_hash)
            .bind(&s.session_id)
            .bind(&s.subject)
            .bind(&s.credential_tag)
            .bind(s.auth_time)
            .bind(s.expires_at)
            .bind(password_id)
            .bind(Vec::<u8>::new())
            .bind(totp_sealed.unwrap_or_default())
            .execute(p)
            .await?
            .rows_affected();
            Ok(inserted == 1)
        })
    }

    /// The session whose secret hashes to `hash`, when it has neither ended nor expired.
    pub async fn find_session(
        &self,
        hash: &[u8],
        now: i64,
    ) -> Result<Option<SessionRow>, StoreError> {
        with_pool!(self, p => {
            let row = sqlx::query(
                "SELECT session_id, subject, credential_tag, auth_time, expires_at FROM oauth_sessions \
                 WHERE session_hash = $1 AND ended_at IS NULL AND expires_at > $2",
            )
            .bind(hash)
            .bind(now)
            .fetch_optional(p)
            .await?;
            match row {
                None => Ok(None),
                Some(row) => Ok(Some(SessionRow {
                    session_hash: hash.to_vec(),
                    session_id: row.try_get("session_id")?,
                    subject: row.try_get("subject")?,
                    credential_tag: row.try_get("credential_tag")?,
                    auth_time: row.try_get("auth_time")?,
                    expires_at: row.try_get("expires_at")?,
                })),
            }
        })
    }

    /// Ends one session and revokes the grants made in it (RP-initiated logout). The
    /// subject of the session ended, or `None` when there was no live one.
    pub async fn end_session(&self, hash: &[u8], now: i64) -> Result<Option<String>, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let row: Option<(String, String)> = sqlx::query_as(
                "UPDATE oauth_sessions SET ended_at = $2 WHERE session_hash = $1 AND ended_at IS NULL \
                 RETURNING session_id, subject",
            )
            .bind(hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((session_id, subject)) = row else {
                return Ok(None);
            };
            let grants: Vec<String> = sqlx::query_scalar(
                "SELECT grant_id FROM oauth_grants WHERE session_id = $1 AND revoked_at IS NULL",
            )
            .bind(&session_id)
            .fetch_all(&mut *tx)
            .await?;
            for g in &grants {
                revoke_grant_in_tx!(tx, g, now);
            }
            tx.commit().await?;
            Ok(Some(subject))
        })
    }

    /// Ends every session of user `name` and revokes every grant of it (`keycard user
    /// logout`). Errors when there is no such user.
    pub async fn end_user_sessions(&self, name: &str, now: i64) -> Result<Ended, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let exists: Option<String> = sqlx::query_scalar(
                "SELECT name FROM subjects WHERE name = $1 AND kind = 'user'",
            )
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound { kind: "user", id: name.to_owned() });
            }
            record_changes!(tx, now, [(ChangeKind::Subject, name.to_owned())]);
            let ended = end_user_in_tx!(tx, name, now);
            tx.commit().await?;
            Ok(ended)
        })
    }

    /// The grants of `subject` still in force at `now` (not revoked, not past their
    /// absolute lifetime), oldest first.
    pub async fn list_grants(&self, subject: &str, now: i64) -> Result<Vec<GrantRow>, StoreError> {
        with_pool!(self, p => {
            let rows = sqlx::query(crate::grants::select_grant!(
                "WHERE subject = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at, grant_id"
            ))
            .bind(subject)
            .bind(now)
            .fetch_all(p)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(crate::grants::row_to_grant!(row));
            }
            Ok(out)
        })
    }

    /// Revokes one grant of `subject`. `false` when it has none of that id in force.
    pub async fn revoke_grant(
        &self,
        subject: &str,
        grant_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let found: Option<String> = sqlx::query_scalar(
                "SELECT grant_id FROM oauth_grants WHERE grant_id = $1 AND subject = $2 AND revoked_at IS NULL",
            )
            .bind(grant_id)
            .bind(subject)
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_none() {
                return Ok(false);
            }
            revoke_grant_in_tx!(tx, grant_id, now);
            tx.commit().await?;
            Ok(true)
        })
    }
}
