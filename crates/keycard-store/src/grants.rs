//! The grants of the authorization server — the tokens of one authorization — as the
//! token endpoint, logout and `user logout` all revoke them.

/// A grant (the tokens of one authorization).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    /// Its id.
    pub grant_id: String,
    /// The client.
    pub client_id: String,
    /// The user.
    pub subject: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// The access tokens' audience.
    pub audience: String,
    /// When the user authenticated.
    pub auth_time: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// The refresh tokens' absolute end.
    pub expires_at: i64,
    /// Unix seconds, when revoked.
    pub revoked_at: Option<i64>,
    /// The login session it was granted in (its public id): ending that session revokes it.
    pub session_id: Option<String>,
}

macro_rules! select_grant {
    ($tail:literal) => {
        concat!(
            "SELECT grant_id, client_id, subject, scopes, audience, auth_time, created_at, expires_at, ",
            "revoked_at, session_id FROM oauth_grants ",
            $tail
        )
    };
}
pub(crate) use select_grant;

macro_rules! row_to_grant {
    ($row:expr) => {{
        let row = $row;
        $crate::grants::GrantRow {
            grant_id: row.try_get("grant_id")?,
            client_id: row.try_get("client_id")?,
            subject: row.try_get("subject")?,
            scopes: row.try_get("scopes")?,
            audience: row.try_get("audience")?,
            auth_time: row.try_get("auth_time")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            session_id: row.try_get("session_id")?,
        }
    }};
}
pub(crate) use row_to_grant;

/// Revokes grant `$grant` inside transaction `$tx`: marks it, and lists every unexpired
/// access token issued under it as revoked (with a feed change each).
macro_rules! revoke_grant_in_tx {
    ($tx:expr, $grant:expr, $now:expr) => {{
        sqlx::query("UPDATE oauth_grants SET revoked_at = COALESCE(revoked_at, $2) WHERE grant_id = $1")
            .bind($grant)
            .bind($now)
            .execute(&mut *$tx)
            .await?;
        let rows = sqlx::query(
            "SELECT jti, expires_at FROM oauth_grant_tokens WHERE grant_id = $1 AND expires_at > $2",
        )
        .bind($grant)
        .bind($now)
        .fetch_all(&mut *$tx)
        .await?;
        let mut changes = Vec::with_capacity(rows.len());
        for row in rows {
            let jti: String = row.try_get("jti")?;
            let exp: i64 = row.try_get("expires_at")?;
            sqlx::query(
                "INSERT INTO oauth_revoked_tokens (jti, expires_at, revoked_at) VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING",
            )
            .bind(&jti)
            .bind(exp)
            .bind($now)
            .execute(&mut *$tx)
            .await?;
            changes.push(($crate::changes::ChangeKind::Token, format!("{jti} {exp}")));
        }
        $crate::changes::record_changes!($tx, $now, changes);
    }};
}
pub(crate) use revoke_grant_in_tx;
