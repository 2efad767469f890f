//! Users (passwords, TOTP, sessions and grants) and subjects (disabled or not).

use keycard_core::password::check_policy;
use keycard_core::user::DigestSecrets;
use keycard_core::{SecretString, new_id};
use keycard_store::NewUser;

use super::{
    GrantView, ManageError, Manager, NewUserRequest, SignedOut, SubjectView, TotpEnrolled,
    UserView, check_subject, check_user_name, internal, rfc3339, scopes, subject_view, user_view,
};
use crate::now_secs;

impl Manager {
    /// argon2id of the password (off the async threads) and, with `digest`, the sealed
    /// RFC 7616 hashes for this realm.
    async fn hash_and_seal(
        &self,
        name: &str,
        pw: &SecretString,
        digest: bool,
    ) -> Result<(String, Option<Vec<u8>>), ManageError> {
        let for_hash = pw.clone();
        let hash = tokio::task::spawn_blocking(move || {
            keycard_core::password::hash(for_hash.expose_secret().as_bytes())
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let sealed = if digest {
            let secrets = DigestSecrets::derive(name, &self.realm, pw.expose_secret());
            Some(secrets.seal(&self.sealer, name).map_err(internal)?)
        } else {
            None
        };
        Ok((hash, sealed))
    }

    /// Adds a user with a password.
    pub async fn add_user(&self, req: NewUserRequest) -> Result<UserView, ManageError> {
        self.audited("user.add", None, async {
            let NewUserRequest {
                name,
                password,
                scopes: list,
                digest,
            } = req;
            let password = SecretString::new(password);
            check_user_name("name", &name)?;
            let scopes = scopes(&list)?;
            if self.store.find_client(&name).await?.is_some() {
                return Err(ManageError::Invalid(format!(
                    "name: `{}` is an OAuth client's id; a user and a client must not share a name (RFC 9700 4.15: tokens would name either as their subject)",
                    name.escape_debug()
                )));
            }
            if self.store.find_user(&name).await?.is_some() {
                return Err(ManageError::Conflict(format!(
                    "user `{name}` already exists"
                )));
            }
            check_policy(&name, password.expose_secret())
                .map_err(|e| ManageError::Invalid(format!("password: {e}")))?;
            let (hash, sealed) = self.hash_and_seal(&name, &password, digest).await?;
            self.store
                .create_user(&NewUser {
                    name: name.clone(),
                    password_id: new_id("pwd").map_err(internal)?,
                    password_hash: hash,
                    digest_sealed: sealed,
                    scopes: scopes.as_str().to_owned(),
                    created_at: now_secs(),
                })
                .await?;
            Ok(user_view(self.store.get_user(&name).await?))
        })
        .await
    }

    /// Sets a user's password (Digest hashes too, when the user has them).
    pub async fn set_password(
        &self,
        name: &str,
        password: SecretString,
    ) -> Result<UserView, ManageError> {
        self.audited("user.password", Some(name), async {
            let user = self.store.get_user(name).await?;
            check_policy(name, password.expose_secret())
                .map_err(|e| ManageError::Invalid(format!("password: {e}")))?;
            let digest = user.digest_sealed.is_some();
            let (hash, sealed) = self.hash_and_seal(name, &password, digest).await?;
            self.store
                .set_password(
                    name,
                    &new_id("pwd").map_err(internal)?,
                    &hash,
                    sealed.as_deref(),
                    now_secs(),
                )
                .await?;
            Ok(user_view(self.store.get_user(name).await?))
        })
        .await
    }

    /// Creates the user with `password`, or gives the existing user that password.
    pub async fn ensure_user(&self, req: NewUserRequest) -> Result<UserView, ManageError> {
        if self.store.find_user(&req.name).await?.is_some() {
            let name = req.name.clone();
            return self
                .set_password(&name, SecretString::new(req.password))
                .await;
        }
        self.add_user(req).await
    }

    /// Enrols (or re-enrols) TOTP for a user: the login page asks for a code from then on.
    pub async fn enroll_totp(&self, name: &str) -> Result<TotpEnrolled, ManageError> {
        self.audited("user.totp", Some(name), async {
            self.store.get_user(name).await?;
            let seed = keycard_core::totp::generate_seed().map_err(internal)?;
            let sealed =
                keycard_core::user::seal_totp_seed(&self.sealer, name, seed.expose_secret())
                    .map_err(internal)?;
            self.store.set_totp(name, &sealed, now_secs()).await?;
            Ok(TotpEnrolled {
                name: name.to_owned(),
                secret: keycard_core::totp::base32_encode(seed.expose_secret()),
                uri: keycard_core::totp::otpauth_uri("keycard", name, seed.expose_secret()),
            })
        })
        .await
    }

    /// Ends every login session of a user and revokes every grant it holds: the user signs
    /// in again everywhere, and applications' refresh tokens stop working.
    pub async fn logout_user(&self, name: &str) -> Result<SignedOut, ManageError> {
        self.audited("user.logout", Some(name), async {
            let ended = self.store.end_user_sessions(name, now_secs()).await?;
            Ok(SignedOut {
                name: name.to_owned(),
                sessions: ended.sessions,
                grants: ended.grants,
            })
        })
        .await
    }

    /// The grants of a user still in force.
    pub async fn list_grants(&self, name: &str) -> Result<Vec<GrantView>, ManageError> {
        self.store.get_user(name).await?;
        Ok(self
            .store
            .list_grants(name, now_secs())
            .await?
            .into_iter()
            .map(|g| GrantView {
                id: g.grant_id,
                client_id: g.client_id,
                subject: g.subject,
                scopes: g.scopes.split_whitespace().map(str::to_owned).collect(),
                created_at: rfc3339(g.created_at),
                auth_time: rfc3339(g.auth_time),
                expires_at: rfc3339(g.expires_at),
            })
            .collect())
    }

    /// Revokes one grant of a user (`id`), or every one (`None`).
    pub async fn revoke_grants(
        &self,
        name: &str,
        id: Option<&str>,
    ) -> Result<Vec<GrantView>, ManageError> {
        self.audited("user.grants.revoke", Some(name), async {
            let grants = self.list_grants(name).await?;
            let now = now_secs();
            let mut revoked = Vec::new();
            for g in grants {
                if id.is_some_and(|id| id != g.id) {
                    continue;
                }
                if self.store.revoke_grant(name, &g.id, now).await? {
                    revoked.push(g);
                }
            }
            if let Some(id) = id
                && revoked.is_empty()
            {
                return Err(ManageError::NotFound(format!(
                    "user `{name}` holds no grant `{id}`"
                )));
            }
            Ok(revoked)
        })
        .await
    }

    /// A user.
    pub async fn get_user(&self, name: &str) -> Result<UserView, ManageError> {
        Ok(user_view(self.store.get_user(name).await?))
    }

    /// Every user.
    pub async fn list_users(&self) -> Result<Vec<UserView>, ManageError> {
        Ok(self
            .store
            .list_users()
            .await?
            .into_iter()
            .map(user_view)
            .collect())
    }

    /// Every subject.
    pub async fn list_subjects(&self) -> Result<Vec<SubjectView>, ManageError> {
        Ok(self
            .store
            .list_subjects()
            .await?
            .into_iter()
            .map(subject_view)
            .collect())
    }

    /// Disables (or enables) a subject: all its credentials stop (or start) working.
    pub async fn set_subject_disabled(
        &self,
        name: &str,
        disabled: bool,
    ) -> Result<SubjectView, ManageError> {
        let operation = if disabled {
            "subject.disable"
        } else {
            "subject.enable"
        };
        self.audited(operation, Some(name), async {
            check_subject("name", name)?;
            self.store
                .set_subject_disabled(name, disabled, now_secs())
                .await?;
            self.store
                .list_subjects()
                .await?
                .into_iter()
                .find(|s| s.name == name)
                .map(subject_view)
                .ok_or_else(|| ManageError::NotFound(format!("subject `{name}` not found")))
        })
        .await
    }
}
