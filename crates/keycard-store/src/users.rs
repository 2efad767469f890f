//! Users: subjects of kind `user` with an argon2id password hash, and for those who opted in,
//! sealed Digest secrets. The store never sees a password; callers hand it the hash.

use crate::BeginWrite;
use sqlx::Row;

use crate::changes::{ChangeKind, record_changes};
use crate::{Store, StoreError, with_pool};

/// A user to create. `Debug` leaves out the hash and the sealed secrets.
#[derive(Clone)]
pub struct NewUser {
    /// The user name (a subject name).
    pub name: String,
    /// The id of the password (`pwd_…`).
    pub password_id: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// Sealed Digest secrets, for `--digest`.
    pub digest_sealed: Option<Vec<u8>>,
    /// Space-separated scopes.
    pub scopes: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("password_id", &self.password_id)
            .field("digest", &self.digest_sealed.is_some())
            .field("scopes", &self.scopes)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A subject (a user or a service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRow {
    /// The name.
    pub name: String,
    /// `user` or `service`.
    pub kind: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, when disabled.
    pub disabled_at: Option<i64>,
}

/// A stored user.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRow {
    /// The user name.
    pub name: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// The id of the current password.
    pub password_id: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// Sealed Digest secrets, when Digest is enabled for the user.
    pub digest_sealed: Option<Vec<u8>>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, when disabled.
    pub disabled_at: Option<i64>,
    /// Unix seconds of the last password change.
    pub password_changed_at: i64,
    /// The sealed TOTP seed, when enrolled.
    pub totp_sealed: Option<Vec<u8>>,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("password_id", &self.password_id)
            .field("digest", &self.digest_sealed.is_some())
            .field("created_at", &self.created_at)
            .field("disabled_at", &self.disabled_at)
            .field("totp", &self.totp_sealed.is_some())
            .finish_non_exhaustive()
    }
}

macro_rules! select {
    ($tail:literal) => {
        concat!(
            "SELECT name, scopes, password_id, password_hash, digest_sealed, created_at, ",
            "disabled_at, password_changed_at, totp_sealed FROM subjects ",
            "WHERE kind = 'user' AND password_hash IS NOT NULL ",
            $tail
        )
    };
}

macro_rules! row_to_user {
    ($row:expr) => {{
        let row = $row;
        UserRow {
            name: row.try_get("name")?,
            scopes: row.try_get("scopes")?,
            password_id: row.try_get("password_id")?,
            password_hash: row.try_get("password_hash")?,
            digest_sealed: row.try_get("digest_sealed")?,
            created_at: row.try_get("created_at")?,
            disabled_at: row.try_get("disabled_at")?,
            password_changed_at: row.try_get("password_changed_at")?,
            totp_sealed: row.try_get("totp_sealed")?,
        }
    }};
}

impl Store {
    /// Creates a user. Errors when the name is taken by any subject.
    pub async fn create_user(&self, user: &NewUser) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let inserted = sqlx::query(
                "INSERT INTO subjects (name, kind, created_at, scopes, password_id, password_hash, digest_sealed, password_changed_at) \
                 VALUES ($1, 'user', $2, $3, $4, $5, $6, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&user.name)
            .bind(user.created_at)
            .bind(&user.scopes)
            .bind(&user.password_id)
            .bind(&user.password_hash)
            .bind(&user.digest_sealed)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("subject `{}` already exists", user.name)));
            }
            record_changes!(tx, user.created_at, [(ChangeKind::Subject, user.name.clone())]);
            tx.commit().await?;
            Ok(())
        })
    }

    /// The user `name`, if there is one.
    pub async fn find_user(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        with_pool!(self, p => {
            let row = sqlx::query(select!("AND name = $1")).bind(name).fetch_optional(p).await?;
            match row {
                Some(row) => Ok(Some(row_to_user!(row))),
                None => Ok(None),
            }
        })
    }

    /// The user `name`, or a not-found error for the operator.
    pub async fn get_user(&self, name: &str) -> Result<UserRow, StoreError> {
        self.find_user(name)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: "user",
                id: name.to_owned(),
            })
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        with_pool!(self, p => {
            let rows = sqlx::query(select!("ORDER BY name")).fetch_all(p).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(row_to_user!(row));
            }
            Ok(out)
        })
    }

    /// The names of users with Digest enabled (for `userhash` lookups).
    pub async fn digest_user_names(&self) -> Result<Vec<String>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_scalar(
                "SELECT name FROM subjects WHERE kind = 'user' AND digest_sealed IS NOT NULL ORDER BY name",
            )
            .fetch_all(p)
            .await?)
        })
    }

    /// Replaces a user's password (and Digest secrets: `None` turns Digest off).
    pub async fn set_password(
        &self,
        name: &str,
        password_id: &str,
        password_hash: &str,
        digest_sealed: Option<&[u8]>,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let changed = sqlx::query(
                "UPDATE subjects SET password_id = $2, password_hash = $3, digest_sealed = $4, password_changed_at = $5 \
                 WHERE name = $1 AND kind = 'user'",
            )
            .bind(name)
            .bind(password_id)
            .bind(password_hash)
            .bind(digest_sealed)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                return Err(StoreError::NotFound { kind: "user", id: name.to_owned() });
            }
            record_changes!(tx, now, [(ChangeKind::Subject, name.to_owned())]);
            // A new password ends every session and grant the old one opened.
            crate::sessions::end_user_in_tx!(tx, name, now);
            tx.commit().await?;
            Ok(())
        })
    }

    /// Every subject (users and services), by name.
    pub async fn list_subjects(&self) -> Result<Vec<SubjectRow>, StoreError> {
        with_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT name, kind, created_at, disabled_at FROM subjects ORDER BY name",
            )
            .fetch_all(p)
            .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(SubjectRow {
                        name: r.try_get("name")?,
                        kind: r.try_get("kind")?,
                        created_at: r.try_get("created_at")?,
                        disabled_at: r.try_get("disabled_at")?,
                    })
                })
                .collect()
        })
    }

    /// The names of every disabled subject.
    pub async fn disabled_subjects(&self) -> Result<Vec<String>, StoreError> {
        with_pool!(self, p => {
            let rows = sqlx::query(
                "SELECT name FROM subjects WHERE disabled_at IS NOT NULL ORDER BY created_at, name",
            )
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| r.try_get::<String, _>("name").map_err(StoreError::from))
                .collect()
        })
    }

    /// Disables (or enables) a subject: every credential of it stops (or starts) working.
    /// Idempotent. Disabling a name the store does not hold records it (kind `external`);
    /// enabling one is an error.
    pub async fn set_subject_disabled(
        &self,
        name: &str,
        disabled: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let changed = sqlx::query(
                "UPDATE subjects SET disabled_at = CASE WHEN $2 THEN COALESCE(disabled_at, $3) ELSE NULL END WHERE name = $1",
            )
            .bind(name)
            .bind(disabled)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                // A name no credential of keycard's carries — one a certificate rule or an
                // external issuer gives — is disabled by recording it (kind `external`).
                if !disabled {
                    return Err(StoreError::NotFound { kind: "subject", id: name.to_owned() });
                }
                sqlx::query(
                    "INSERT INTO subjects (name, kind, created_at, disabled_at) VALUES ($1, 'external', $2, $3)",
                )
                .bind(name)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            record_changes!(tx, now, [(ChangeKind::Subject, name.to_owned())]);
            if disabled {
                crate::sessions::end_user_in_tx!(tx, name, now);
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
