//! The machine credentials: API keys, RFC 9421 signing keys, certificate bindings.

use keycard_core::{HashDomain, SecretBytes, SecretString, api_key, new_id};
use keycard_store::{CredentialKind, NewApiKey, NewCertBinding, NewHmacKey};

use super::{
    CertView, HMAC_SECRET_LEN, HmacCreated, HmacView, KeyCreated, KeyView, Lifecycle, ManageError,
    Manager, NewCertRequest, NewHmacRequest, NewKeyRequest, cert_view, check_subject, expiry,
    hmac_view, internal, key_created, key_view, read_cert_pem, rfc3339, scopes,
};
use crate::now_secs;

impl Manager {
    /// Creates an API key; its text is in the answer only.
    pub async fn create_api_key(&self, req: NewKeyRequest) -> Result<KeyCreated, ManageError> {
        self.audited("key.create", None, async {
            check_subject("subject", &req.subject)?;
            let scopes = scopes(&req.scopes)?;
            if let Some(n) = &req.name {
                check_subject("name", n)?;
            }
            let now = now_secs();
            let expires_at = expiry(now, req.expires_in.as_deref())?;
            let key = api_key::generate().map_err(internal)?;
            let new = NewApiKey {
                id: new_id("key").map_err(internal)?,
                subject: req.subject,
                lookup: api_key::lookup_handle(&self.hasher, key.expose_secret()),
                name: req.name,
                scopes: scopes.as_str().to_owned(),
                created_at: now,
                expires_at,
            };
            self.store.create_api_key(&new).await?;
            Ok(key_created(new, key.expose_secret(), None))
        })
        .await
    }

    /// API keys, of one subject or all.
    pub async fn list_api_keys(&self, subject: Option<&str>) -> Result<Vec<KeyView>, ManageError> {
        let now = now_secs();
        Ok(self
            .store
            .list_api_keys(subject)
            .await?
            .into_iter()
            .map(|r| key_view(r, now))
            .collect())
    }

    /// Revokes an API key (every instance refuses it within a second).
    pub async fn revoke_api_key(&self, id: &str) -> Result<(), ManageError> {
        self.audited("key.revoke", Some(id), async {
            Ok(self
                .store
                .revoke_credential(CredentialKind::ApiKey, id, now_secs())
                .await?)
        })
        .await
    }

    /// Replaces an API key; the old one works for `grace_secs` more (0: revoked now).
    pub async fn rotate_api_key(
        &self,
        id: &str,
        grace_secs: i64,
    ) -> Result<KeyCreated, ManageError> {
        self.audited("key.rotate", Some(id), async {
            if grace_secs < 0 {
                return Err(ManageError::Invalid("grace: must not be negative".into()));
            }
            let old = self.store.get_api_key(id).await?;
            let now = now_secs();
            // The new key lives as long as the old one was meant to, counted from now.
            let expires_at = old.expires_at.map(|e| now + (e - old.created_at).max(0));
            let key = api_key::generate().map_err(internal)?;
            let new = NewApiKey {
                id: new_id("key").map_err(internal)?,
                subject: old.subject.clone(),
                lookup: api_key::lookup_handle(&self.hasher, key.expose_secret()),
                name: old.name.clone(),
                scopes: old.scopes.clone(),
                created_at: now,
                expires_at,
            };
            let grace_until = now + grace_secs;
            self.store.rotate_api_key(id, &new, grace_until).await?;
            Ok(key_created(
                new,
                key.expose_secret(),
                Some(rfc3339(grace_until)),
            ))
        })
        .await
    }

    /// Creates an RFC 9421 key: a fresh shared secret (returned once), or a client's
    /// Ed25519 public key.
    pub async fn create_hmac_key(&self, req: NewHmacRequest) -> Result<HmacCreated, ManageError> {
        self.audited("hmac.create", None, async {
        use base64::Engine;
        check_subject("subject", &req.subject)?;
        let scopes = scopes(&req.scopes)?;
        let now = now_secs();
        let expires_at = expiry(now, req.expires_in.as_deref())?;
        let id = new_id("hmac").map_err(internal)?;
        let key_id = new_id("hk").map_err(internal)?;
        let (sealed, alg, secret) = match &req.public_key_pem {
            Some(pem) => {
                let public = keycard_core::httpsig::ed25519_public_key_from_pem(pem.as_bytes())
                    .ok_or_else(|| {
                        ManageError::Invalid(
                            "public key: not an Ed25519 public key (PEM: openssl pkey -in key.pem -pubout)"
                                .into(),
                        )
                    })?;
                (
                    public.to_vec(),
                    Some(keycard_core::httpsig::ED25519.to_owned()),
                    None,
                )
            }
            None => {
                let mut raw = vec![0u8; HMAC_SECRET_LEN];
                aws_lc_rs::rand::fill(&mut raw)
                    .map_err(|_| internal("the random number generator failed"))?;
                let secret = SecretBytes::new(raw);
                let sealed = keycard_core::httpsig::seal_secret(
                    &self.sealer,
                    &key_id,
                    secret.expose_secret(),
                )
                .map_err(internal)?;
                let b64 = SecretString::new(
                    base64::engine::general_purpose::STANDARD.encode(secret.expose_secret()),
                );
                (sealed, None, Some(b64))
            }
        };
        let new = NewHmacKey {
            id: id.clone(),
            key_id: key_id.clone(),
            subject: req.subject.clone(),
            lookup: self.hasher.hash(HashDomain::HmacKeyId, key_id.as_bytes()),
            sealed,
            alg: alg.clone(),
            scopes: scopes.as_str().to_owned(),
            created_at: now,
            expires_at,
        };
        self.store.create_hmac_key(&new).await?;
        Ok(HmacCreated {
            id,
            key_id,
            secret: secret.map(|s| s.expose_secret().to_owned()),
            alg: alg.unwrap_or_else(|| keycard_core::httpsig::HMAC_SHA256.into()),
            subject: req.subject,
            scopes: scopes.to_vec(),
            expires_at: expires_at.map(rfc3339),
        })
    })
        .await
    }

    /// RFC 9421 keys, of one subject or all.
    pub async fn list_hmac_keys(
        &self,
        subject: Option<&str>,
    ) -> Result<Vec<HmacView>, ManageError> {
        let now = now_secs();
        Ok(self
            .store
            .list_hmac_keys(subject)
            .await?
            .into_iter()
            .map(|r| hmac_view(r, now))
            .collect())
    }

    /// Revokes an RFC 9421 key.
    pub async fn revoke_hmac_key(&self, id: &str) -> Result<(), ManageError> {
        self.audited("hmac.revoke", Some(id), async {
            Ok(self
                .store
                .revoke_credential(CredentialKind::Hmac, id, now_secs())
                .await?)
        })
        .await
    }

    /// Binds a client certificate to a subject (the `mtls` method).
    pub async fn add_cert(&self, req: NewCertRequest) -> Result<CertView, ManageError> {
        self.audited("cert.add", None, async {
            check_subject("subject", &req.subject)?;
            let scopes = scopes(&req.scopes)?;
            let identity = read_cert_pem("certificate", req.cert_pem.as_bytes())?;
            let now = now_secs();
            if identity.not_after < now {
                return Err(ManageError::Invalid(format!(
                    "certificate: it expired on {}",
                    rfc3339(identity.not_after)
                )));
            }
            let expires_at = expiry(now, req.expires_in.as_deref())?;
            let fingerprint = identity.fingerprint_hex();
            let new = NewCertBinding {
                id: new_id("cert").map_err(internal)?,
                subject: req.subject,
                lookup: self
                    .hasher
                    .hash(HashDomain::CertFingerprint, fingerprint.as_bytes()),
                fingerprint,
                scopes: scopes.as_str().to_owned(),
                created_at: now,
                expires_at,
            };
            self.store.create_cert_binding(&new).await?;
            Ok(CertView {
                id: new.id,
                subject: new.subject,
                fingerprint: new.fingerprint,
                scopes: scopes.to_vec(),
                life: Lifecycle::of(now, expires_at, None, false, now),
                last_used_at: None,
            })
        })
        .await
    }

    /// Every certificate binding.
    pub async fn list_certs(&self) -> Result<Vec<CertView>, ManageError> {
        let now = now_secs();
        Ok(self
            .store
            .list_cert_bindings()
            .await?
            .into_iter()
            .map(|r| cert_view(r, now))
            .collect())
    }

    /// Revokes a certificate binding.
    pub async fn revoke_cert(&self, id: &str) -> Result<(), ManageError> {
        self.audited("cert.revoke", Some(id), async {
            Ok(self
                .store
                .revoke_credential(CredentialKind::Cert, id, now_secs())
                .await?)
        })
        .await
    }
}
