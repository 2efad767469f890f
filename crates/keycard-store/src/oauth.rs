//! The OAuth 2.0 authorization server's state: clients, authorization codes, grants with
//! their rotating refresh tokens, access tokens revoked before expiry, remembered consent
//! and users' TOTP seeds. Codes, refresh tokens and client secrets arrive as keyed hashes.
//!
//! Redeeming a code and rotating a refresh token are single conditional updates, so two
//! racing redemptions cannot both win; the loser's presentation counts as reuse and
//! revokes the grant (RFC 9700 §4.14.2, RFC 6749 §4.1.2).

use sqlx::Row;

use crate::BeginWrite;
use crate::changes::{ChangeKind, record_changes};
use crate::grants::{GrantRow, revoke_grant_in_tx, row_to_grant, select_grant};
use crate::{Store, StoreError, with_pool};

/// A registered client. `Debug` leaves out the secret's hash.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRow {
    /// The `client_id`.
    pub client_id: String,
    /// The keyed hash of the secret; `None` for a public client.
    pub secret_hash: Option<Vec<u8>>,
    /// `client_secret_basic`, `client_secret_post` or `none`.
    pub auth_method: String,
    /// Registered redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
    /// Grant types it may use.
    pub grants: Vec<String>,
    /// Space-separated: the most it may ask for.
    pub scopes: String,
    /// Consent is not asked for first-party clients.
    pub first_party: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, when revoked.
    pub revoked_at: Option<i64>,
    /// `tls_client_auth`: the RFC 4514 subject DN of its certificate.
    pub tls_subject_dn: Option<String>,
    /// `self_signed_tls_client_auth` (or a pinned `tls_client_auth`): the SHA-256
    /// fingerprint of its certificate, lowercase hex.
    pub cert_fingerprint: Option<String>,
}

impl std::fmt::Debug for ClientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRow")
            .field("client_id", &self.client_id)
            .field("confidential", &self.secret_hash.is_some())
            .field("auth_method", &self.auth_method)
            .field("redirect_uris", &self.redirect_uris)
            .field("grants", &self.grants)
            .field("scopes", &self.scopes)
            .field("first_party", &self.first_party)
            .field("tls_subject_dn", &self.tls_subject_dn)
            .field("cert_fingerprint", &self.cert_fingerprint)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// An authorization code to store (its hash), with what redeeming it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRow {
    /// The keyed hash of the code.
    pub code_hash: Vec<u8>,
    /// The grant its tokens will belong to.
    pub grant_id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The user who approved it.
    pub subject: String,
    /// The redirect URI of the authorization request (must be repeated at the token endpoint).
    pub redirect_uri: String,
    /// Space-separated granted scopes.
    pub scopes: String,
    /// The access tokens' audience.
    pub audience: String,
    /// The PKCE `S256` challenge.
    pub code_challenge: String,
    /// The OIDC `nonce`, for the ID token.
    pub nonce: Option<String>,
    /// When the user authenticated (Unix seconds).
    pub auth_time: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// The login session it was issued in (its public id).
    pub session_id: Option<String>,
}

/// The answer to redeeming a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// First use: here is what it grants.
    Code(Box<CodeRow>),
    /// Used before: its grant was revoked now.
    Reused {
        /// The client it was issued to.
        client_id: String,
    },
    /// No such code.
    Unknown,
    /// Issued to another client: refused, and left as it was (unspent if unused), so that a
    /// client cannot spend, or revoke the grant of, a code it did not get.
    WrongClient,
    /// Issued in a login session that has ended since: spent, and refused.
    SessionEnded,
}

/// The answer to rotating a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotated {
    /// Rotated: the grant it belongs to (still valid).
    Grant(GrantRow),
    /// Used before: the whole grant was revoked now.
    Reused {
        /// The client it was issued to.
        client_id: String,
    },
    /// Unknown, or its grant is revoked or past its absolute lifetime.
    Invalid,
}

/// Tokens issued now under a grant: the refresh token's hash and the access token's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The new refresh token's keyed hash, when the client may refresh.
    pub refresh_hash: Option<Vec<u8>>,
    /// The new access token's `jti`.
    pub jti: String,
    /// Its `exp`.
    pub access_expires_at: i64,
}

macro_rules! select_client {
    ($tail:literal) => {
        concat!(
            "SELECT client_id, secret_hash, auth_method, redirect_uris, grants, scopes, first_party, ",
            "created_at, revoked_at, tls_subject_dn, cert_fingerprint FROM oauth_clients ",
            $tail
        )
    };
}

macro_rules! row_to_client {
    ($row:expr) => {{
        let row = $row;
        let uris: String = row.try_get("redirect_uris")?;
        let grants: String = row.try_get("grants")?;
        ClientRow {
            client_id: row.try_get("client_id")?,
            secret_hash: row.try_get("secret_hash")?,
            auth_method: row.try_get("auth_method")?,
            redirect_uris: uris.lines().map(str::to_owned).collect(),
            grants: grants.split_whitespace().map(str::to_owned).collect(),
            scopes: row.try_get("scopes")?,
            first_party: row.try_get("first_party")?,
            created_at: row.try_get("created_at")?,
            revoked_at: row.try_get("revoked_at")?,
            tls_subject_dn: row.try_get("tls_subject_dn")?,
            cert_fingerprint: row.try_get("cert_fingerprint")?,
        }
    }};
}

/// Records, inside transaction `$tx`, the tokens issued now under grant `$grant`.
macro_rules! insert_issued {
    ($tx:expr, $grant:expr, $issued:expr, $now:expr) => {{
        if let Some(hash) = &$issued.refresh_hash {
            sqlx::query("INSERT INTO oauth_refresh_tokens (token_hash, grant_id, created_at) VALUES ($1, $2, $3)")
                .bind(hash)
                .bind($grant)
                .bind($now)
                .execute(&mut *$tx)
                .await?;
        }
        sqlx::query("INSERT INTO oauth_grant_tokens (jti, grant_id, expires_at) VALUES ($1, $2, $3)")
            .bind(&$issued.jti)
            .bind($grant)
            .bind($issued.access_expires_at)
            .execute(&mut *$tx)
            .await?;
    }};
}

impl Store {
    /// Registers a client. Errors when the id is taken.
    pub async fn create_client(&self, c: &ClientRow) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let inserted = sqlx::query(
                "INSERT INTO oauth_clients (client_id, secret_hash, auth_method, redirect_uris, grants, scopes, first_party, created_at, tls_subject_dn, cert_fingerprint) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (client_id) DO NOTHING",
            )
            .bind(&c.client_id)
            .bind(&c.secret_hash)
            .bind(&c.auth_method)
            .bind(c.redirect_uris.join("\n"))
            .bind(c.grants.join(" "))
            .bind(&c.scopes)
            .bind(c.first_party)
            .bind(c.created_at)
            .bind(&c.tls_subject_dn)
            .bind(&c.cert_fingerprint)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("client `{}` already exists", c.client_id)));
            }
            record_changes!(tx, c.created_at, [(ChangeKind::Client, c.client_id.clone())]);
            tx.commit().await?;
            Ok(())
        })
    }

    /// The client `client_id`, revoked or not.
    pub async fn find_client(&self, client_id: &str) -> Result<Option<ClientRow>, StoreError> {
        with_pool!(self, p => {
            let row = sqlx::query(select_client!("WHERE client_id = $1"))
                .bind(client_id)
                .fetch_optional(p)
                .await?;
            match row {
                Some(row) => Ok(Some(row_to_client!(row))),
                None => Ok(None),
            }
        })
    }

    /// Every client, by id.
    pub async fn list_clients(&self) -> Result<Vec<ClientRow>, StoreError> {
        with_pool!(self, p => {
            let rows = sqlx::query(select_client!("ORDER BY client_id")).fetch_all(p).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(row_to_client!(row));
            }
            Ok(out)
        })
    }

    /// Revokes a client and every grant it holds (their refresh tokens stop at once; its
    /// access tokens are refused by the gateway, which follows the client's state).
    pub async fn revoke_client(&self, client_id: &str, now: i64) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let changed = sqlx::query(
                "UPDATE oauth_clients SET revoked_at = COALESCE(revoked_at, $2) WHERE client_id = $1",
            )
            .bind(client_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                return Err(StoreError::NotFound { kind: "client", id: client_id.to_owned() });
            }
            record_changes!(tx, now, [(ChangeKind::Client, client_id.to_owned())]);
            let grants: Vec<String> = sqlx::query_scalar(
                "SELECT grant_id FROM oauth_grants WHERE client_id = $1 AND revoked_at IS NULL",
            )
            .bind(client_id)
            .fetch_all(&mut *tx)
            .await?;
            for g in &grants {
                revoke_grant_in_tx!(tx, g, now);
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Stores an authorization code (its hash).
    pub async fn insert_code(&self, c: &CodeRow) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO oauth_codes (code_hash, grant_id, client_id, subject, redirect_uri, scopes, audience, code_challenge, nonce, auth_time, expires_at, session_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(&c.code_hash)
            .bind(&c.grant_id)
            .bind(&c.client_id)
            .bind(&c.subject)
            .bind(&c.redirect_uri)
            .bind(&c.scopes)
            .bind(&c.audience)
            .bind(&c.code_challenge)
            .bind(&c.nonce)
            .bind(c.auth_time)
            .bind(c.expires_at)
            .bind(&c.session_id)
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// Marks a code of `client_id` used. A code presented a second time by its client
    /// revokes its grant; one presented by another client changes nothing. An expired code
    /// is marked used too and returned: the caller refuses it by `expires_at`.
    pub async fn redeem_code(
        &self,
        code_hash: &[u8],
        client_id: &str,
        now: i64,
    ) -> Result<Redeemed, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let row = sqlx::query(
                "UPDATE oauth_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL AND client_id = $3 \
                 RETURNING grant_id, client_id, subject, redirect_uri, scopes, audience, code_challenge, nonce, auth_time, expires_at, session_id",
            )
            .bind(code_hash)
            .bind(now)
            .bind(client_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                let code = CodeRow {
                    code_hash: code_hash.to_vec(),
                    grant_id: row.try_get("grant_id")?,
                    client_id: row.try_get("client_id")?,
                    subject: row.try_get("subject")?,
                    redirect_uri: row.try_get("redirect_uri")?,
                    scopes: row.try_get("scopes")?,
                    audience: row.try_get("audience")?,
                    code_challenge: row.try_get("code_challenge")?,
                    nonce: row.try_get("nonce")?,
                    auth_time: row.try_get("auth_time")?,
                    expires_at: row.try_get("expires_at")?,
                    session_id: row.try_get("session_id")?,
                };
                // A code outlives the session it was issued in by at most its lifetime:
                // one whose session has ended (logout, a new password) grants nothing.
                let ended = match &code.session_id {
                    Some(id) => sqlx::query_scalar::<_, Option<i64>>(
                        "SELECT ended_at FROM oauth_sessions WHERE session_id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some_and(|e| e.is_some()),
                    None => false,
                };
                tx.commit().await?;
                if ended {
                    return Ok(Redeemed::SessionEnded);
                }
                return Ok(Redeemed::Code(Box::new(code)));
            }
            let used = sqlx::query("SELECT grant_id, client_id FROM oauth_codes WHERE code_hash = $1")
                .bind(code_hash)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(used) = used else {
                return Ok(Redeemed::Unknown);
            };
            let grant_id: String = used.try_get("grant_id")?;
            let owner: String = used.try_get("client_id")?;
            if owner != client_id {
                return Ok(Redeemed::WrongClient);
            }
            revoke_grant_in_tx!(tx, &grant_id, now);
            tx.commit().await?;
            Ok(Redeemed::Reused { client_id: owner })
        })
    }

    /// Starts a grant (from a redeemed code) with its first refresh token and access token.
    pub async fn start_grant(&self, g: &GrantRow, issued: &Issued) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "INSERT INTO oauth_grants (grant_id, client_id, subject, scopes, audience, auth_time, created_at, expires_at, session_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&g.grant_id)
            .bind(&g.client_id)
            .bind(&g.subject)
            .bind(&g.scopes)
            .bind(&g.audience)
            .bind(g.auth_time)
            .bind(g.created_at)
            .bind(g.expires_at)
            .bind(&g.session_id)
            .execute(&mut *tx)
            .await?;
            insert_issued!(tx, &g.grant_id, issued, g.created_at);
            // Its session ended while the code was redeemed: the grant ends with it (the
            // logout's revocation ran before this grant existed).
            if let Some(id) = &g.session_id {
                let ended: Option<Option<i64>> =
                    sqlx::query_scalar("SELECT ended_at FROM oauth_sessions WHERE session_id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if ended.is_some_and(|e| e.is_some()) {
                    revoke_grant_in_tx!(tx, &g.grant_id, g.created_at);
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Rotates a refresh token of `client_id`: marks `old_hash` used and records the new
    /// tokens, if the old one is unused, was issued after `idle_since` (RFC 9700 §4.14.2:
    /// a refresh token unused for the idle time has expired) and its grant is valid at
    /// `now`. A used one revokes the grant. A token of another client changes nothing and
    /// is `Invalid`.
    pub async fn rotate_refresh(
        &self,
        old_hash: &[u8],
        client_id: &str,
        issued: &Issued,
        now: i64,
        idle_since: i64,
    ) -> Result<Rotated, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let idle: Option<i64> = sqlx::query_scalar(
                "SELECT created_at FROM oauth_refresh_tokens WHERE token_hash = $1 AND used_at IS NULL AND created_at <= $2",
            )
            .bind(old_hash)
            .bind(idle_since)
            .fetch_optional(&mut *tx)
            .await?;
            if idle.is_some() {
                return Ok(Rotated::Invalid);
            }
            let grant_id: Option<String> = sqlx::query_scalar(
                "UPDATE oauth_refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL RETURNING grant_id",
            )
            .bind(old_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(grant_id) = grant_id else {
                let used: Option<String> = sqlx::query_scalar(
                    "SELECT grant_id FROM oauth_refresh_tokens WHERE token_hash = $1",
                )
                .bind(old_hash)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(grant_id) = used else {
                    return Ok(Rotated::Invalid);
                };
                let owner: Option<String> = sqlx::query_scalar("SELECT client_id FROM oauth_grants WHERE grant_id = $1")
                    .bind(&grant_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if owner.as_deref() != Some(client_id) {
                    return Ok(Rotated::Invalid);
                }
                revoke_grant_in_tx!(tx, &grant_id, now);
                tx.commit().await?;
                return Ok(Rotated::Reused { client_id: client_id.to_owned() });
            };
            let row = sqlx::query(select_grant!("WHERE grant_id = $1"))
                .bind(&grant_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Ok(Rotated::Invalid);
            };
            let grant = row_to_grant!(row);
            if grant.client_id != client_id || grant.revoked_at.is_some() || grant.expires_at <= now {
                // Leave the token unused: nothing was issued.
                return Ok(Rotated::Invalid);
            }
            insert_issued!(tx, &grant_id, issued, now);
            tx.commit().await?;
            Ok(Rotated::Grant(grant))
        })
    }

    /// The grant a refresh token belongs to, and whether that token is spent: used
    /// already, or unused since it was issued at or before `idle_since` (idle too long).
    pub async fn find_refresh(
        &self,
        hash: &[u8],
        idle_since: i64,
    ) -> Result<Option<(GrantRow, bool)>, StoreError> {
        with_pool!(self, p => {
            let used: Option<(String, Option<i64>, i64)> = sqlx::query_as(
                "SELECT grant_id, used_at, created_at FROM oauth_refresh_tokens WHERE token_hash = $1",
            )
            .bind(hash)
            .fetch_optional(p)
            .await?;
            let Some((grant_id, used_at, created_at)) = used else {
                return Ok(None);
            };
            let spent = used_at.is_some() || created_at <= idle_since;
            let row = sqlx::query(select_grant!("WHERE grant_id = $1"))
                .bind(&grant_id)
                .fetch_optional(p)
                .await?;
            match row {
                Some(row) => Ok(Some((row_to_grant!(row), spent))),
                None => Ok(None),
            }
        })
    }

    /// Revokes the grant a refresh token belongs to (RFC 7009). `false` when unknown.
    pub async fn revoke_by_refresh(&self, hash: &[u8], now: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let grant_id: Option<String> = sqlx::query_scalar(
                "SELECT grant_id FROM oauth_refresh_tokens WHERE token_hash = $1",
            )
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(grant_id) = grant_id else {
                return Ok(false);
            };
            revoke_grant_in_tx!(tx, &grant_id, now);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Revokes one access token until its expiry.
    pub async fn revoke_access_token(
        &self,
        jti: &str,
        exp: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let inserted = sqlx::query(
                "INSERT INTO oauth_revoked_tokens (jti, expires_at, revoked_at) VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING",
            )
            .bind(jti)
            .bind(exp)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted > 0 {
                record_changes!(tx, now, [(ChangeKind::Token, format!("{jti} {exp}"))]);
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Access tokens revoked and not yet expired at `now`: `(jti, exp)`.
    pub async fn revoked_tokens(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_as("SELECT jti, expires_at FROM oauth_revoked_tokens WHERE expires_at > $1")
                .bind(now)
                .fetch_all(p)
                .await?)
        })
    }

    /// The scopes `subject` consented to for `client_id`, if any.
    pub async fn consent(
        &self,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<String>, StoreError> {
        with_pool!(self, p => {
            Ok(sqlx::query_scalar("SELECT scopes FROM oauth_consents WHERE subject = $1 AND client_id = $2")
                .bind(subject)
                .bind(client_id)
                .fetch_optional(p)
                .await?)
        })
    }

    /// Remembers consent (replacing what was remembered).
    pub async fn set_consent(
        &self,
        subject: &str,
        client_id: &str,
        scopes: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            sqlx::query(
                "INSERT INTO oauth_consents (subject, client_id, scopes, granted_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (subject, client_id) DO UPDATE SET scopes = $3, granted_at = $4",
            )
            .bind(subject)
            .bind(client_id)
            .bind(scopes)
            .bind(now)
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// Enrols a user in TOTP (replacing an earlier seed).
    pub async fn set_totp(&self, name: &str, sealed: &[u8], now: i64) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let changed = sqlx::query(
                "UPDATE subjects SET totp_sealed = $2, totp_last_step = NULL WHERE name = $1 AND kind = 'user'",
            )
            .bind(name)
            .bind(sealed)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                return Err(StoreError::NotFound { kind: "user", id: name.to_owned() });
            }
            record_changes!(tx, now, [(ChangeKind::Subject, name.to_owned())]);
            // A new second factor ends what the old one let in.
            crate::sessions::end_user_in_tx!(tx, name, now);
            tx.commit().await?;
            Ok(())
        })
    }

    /// Records TOTP time step `step` as used by `name`; `false` when that step or a later
    /// one was used already (each code works once, RFC 6238 §5.2).
    pub async fn use_totp_step(&self, name: &str, step: i64) -> Result<bool, StoreError> {
        with_pool!(self, p => {
            let changed = sqlx::query(
                "UPDATE subjects SET totp_last_step = $2 WHERE name = $1 AND totp_sealed IS NOT NULL \
                 AND (totp_last_step IS NULL OR totp_last_step < $2)",
            )
            .bind(name)
            .bind(step)
            .execute(p)
            .await?
            .rows_affected();
            Ok(changed == 1)
        })
    }

    /// Deletes what can never be used again: codes and revoked-token rows past their
    /// expiry, grants (with their tokens) past their absolute lifetime.
    pub async fn prune_oauth(&self, now: i64) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            // A used code is kept a little longer than its life: a late second redemption
            // still finds it and revokes the grant.
            sqlx::query("DELETE FROM oauth_codes WHERE expires_at < $1").bind(now - 3600).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM oauth_revoked_tokens WHERE expires_at < $1").bind(now).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM oauth_grant_tokens WHERE expires_at < $1").bind(now).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM oauth_refresh_tokens WHERE grant_id IN (SELECT grant_id FROM oauth_grants WHERE expires_at < $1)")
                .bind(now).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM oauth_grants WHERE expires_at < $1").bind(now).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM oauth_sessions WHERE expires_at < $1").bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        })
    }
}
