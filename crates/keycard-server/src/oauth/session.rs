//! The login session: a random secret in a cookie (`__Host-` on TLS), its keyed hash in
//! the store with the user, the sign-in time and a MAC of the credentials signed in with;
//! and the CSRF cookie of the pages' forms.

use std::sync::Arc;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use keycard_core::user::UserRecord;
use keycard_core::{HashDomain, Method, constant_time_eq, new_id};
use keycard_store::SessionRow;

use super::OAuth;
use super::cookies::{SESSION_SECRET_LEN, SESSION_SECS, Session};
use crate::clock::now_secs;

impl OAuth {
    pub(super) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The session of the request: its cookie names a live session in the store whose user
    /// is still enabled. `Err` when the store cannot be asked.
    pub(super) async fn session(
        &self,
        headers: &HeaderMap,
        tls: bool,
    ) -> Result<Option<(Session, Arc<UserRecord>)>, ()> {
        let (name, _) = self.pages.names(tls);
        let Some(secret) = Self::cookie_value(headers, name).filter(|v| {
            v.len() == SESSION_SECRET_LEN && v.bytes().all(|b| b.is_ascii_alphanumeric())
        }) else {
            return Ok(None);
        };
        let hash = self
            .authn
            .hasher()
            .hash(HashDomain::LoginSession, secret.as_bytes())
            .to_vec();
        let now = now_secs();
        let row = self
            .authn
            .read_store(None, move |store| async move {
                store.find_session(&hash, now).await
            })
            .await
            .map_err(|_| ())?;
        let Some(row) = row else {
            return Ok(None);
        };
        let user = self
            .authn
            .user(&row.subject, Some(Method::Oauth2))
            .await
            .map_err(|_| ())?;
        // A session outlives no change of the user's credentials: the change ends the
        // sessions it finds, and this refuses one a sign-in with the old credentials
        // started in the moment around it.
        let current = |u: &UserRecord| {
            constant_time_eq(
                self.pages.credential_tag(u).as_bytes(),
                row.credential_tag.as_bytes(),
            )
        };
        Ok(user
            .filter(|u| !u.disabled && !self.authn.cache().is_disabled(&u.name) && current(u))
            .map(|u| {
                (
                    Session {
                        secret: keycard_core::SecretString::new(secret.to_owned()),
                        row,
                    },
                    u,
                )
            }))
    }

    /// Starts a session of `user` in the store; its cookie. `Ok(None)` when the store holds
    /// other credentials for the user than those just checked (changed a moment ago), or
    /// the user is disabled by now.
    pub(super) async fn start_session(
        &self,
        user: &UserRecord,
        tls: bool,
    ) -> Result<Option<HeaderValue>, ()> {
        let secret = keycard_core::SecretString::new(
            keycard_core::random_base62(SESSION_SECRET_LEN).map_err(|_| ())?,
        );
        let now = now_secs();
        let row = SessionRow {
            session_hash: self
                .authn
                .hasher()
                .hash(HashDomain::LoginSession, secret.expose_secret().as_bytes())
                .to_vec(),
            session_id: new_id("ss").map_err(|_| ())?,
            subject: user.name.to_string(),
            credential_tag: self.pages.credential_tag(user),
            auth_time: now,
            expires_at: now + SESSION_SECS,
        };
        let (password_id, sealed) = (user.password_id.clone(), user.totp_sealed.clone());
        let started = self
            .authn
            .read_store(None, move |store| async move {
                store
                    .start_session(&row, &password_id, sealed.as_deref())
                    .await
            })
            .await
            .map_err(|_| ())?;
        if !started {
            return Ok(None);
        }
        self.pages
            .cookie(
                self.pages.names(tls).0,
                secret.expose_secret(),
                SESSION_SECS,
                tls,
            )
            .map(Some)
            .ok_or(())
    }
}
