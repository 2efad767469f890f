//! OAuth 2.0 clients.

use keycard_core::{HashDomain, SecretString};
use keycard_store::ClientRow;

use super::{
    ClientCreated, ClientView, GRANTS, MAX_REDIRECT_URIS, ManageError, Manager, NewClientRequest,
    check_client_id, check_redirect_uri, client_view, internal, read_cert_pem, scopes,
};
use crate::now_secs;

impl Manager {
    /// Registers a client; a confidential one with a secret gets it in the answer only.
    pub async fn create_client(&self, req: NewClientRequest) -> Result<ClientCreated, ManageError> {
        self.audited("client.create", None, async {
        let invalid = |m: &str| Err(ManageError::Invalid(m.to_owned()));
        check_client_id(&req.client_id)?;
        if self.store.find_user(&req.client_id).await?.is_some() {
            return Err(ManageError::Invalid(format!(
                "client id: `{}` is a user's name; a user and a client must not share a name (RFC 9700 4.15: tokens would name either as their subject)",
                req.client_id.escape_debug()
            )));
        }
        let auth = match (req.public, req.auth.as_deref()) {
            (true, None) => "none",
            (true, Some(_)) => {
                return invalid("a public client has no auth method: it sends no secret");
            }
            (false, None | Some("client_secret_basic")) => "client_secret_basic",
            (false, Some("client_secret_post")) => "client_secret_post",
            (false, Some("tls_client_auth")) => "tls_client_auth",
            (false, Some("self_signed_tls_client_auth")) => "self_signed_tls_client_auth",
            (false, Some(other)) => {
                return Err(ManageError::Invalid(format!(
                    "auth `{}`: one of client_secret_basic, client_secret_post, tls_client_auth, self_signed_tls_client_auth",
                    other.escape_debug()
                )));
            }
        };
        let uses_cert = matches!(auth, "tls_client_auth" | "self_signed_tls_client_auth");
        if !uses_cert && (req.cert_pem.is_some() || req.tls_subject_dn.is_some()) {
            return invalid(
                "a certificate or subject DN goes with auth tls_client_auth or self_signed_tls_client_auth",
            );
        }
        let tls_subject_dn = match &req.tls_subject_dn {
            Some(_) if auth == "self_signed_tls_client_auth" => {
                return invalid(
                    "the subject DN goes with tls_client_auth; a self-signed client registers its certificate",
                );
            }
            Some(dn) => Some(keycard_core::cert::normalize_dn(dn).map_err(|e| {
                ManageError::Invalid(format!("tls subject DN: {e} (write it as `CN=svc,O=Example`, most specific first: openssl x509 -noout -subject -nameopt RFC2253)"))
            })?),
            None => None,
        };
        let cert_fingerprint = match &req.cert_pem {
            Some(pem) => Some(read_cert_pem("certificate", pem.as_bytes())?.fingerprint_hex()),
            None => None,
        };
        if auth == "tls_client_auth" && tls_subject_dn.is_none() && cert_fingerprint.is_none() {
            return invalid(
                "tls_client_auth needs the subject DN its certificates carry (or a certificate to pin)",
            );
        }
        if auth == "self_signed_tls_client_auth" && cert_fingerprint.is_none() {
            return invalid("self_signed_tls_client_auth needs the client's certificate");
        }
        if req.redirect_uris.len() > MAX_REDIRECT_URIS {
            return invalid("at most 16 redirect URIs");
        }
        for uri in &req.redirect_uris {
            check_redirect_uri(uri)?;
        }
        let grants = if req.grants.is_empty() {
            if req.redirect_uris.is_empty() {
                vec!["client_credentials".to_owned()]
            } else {
                vec!["authorization_code".to_owned(), "refresh_token".to_owned()]
            }
        } else {
            req.grants.clone()
        };
        for g in &grants {
            if !GRANTS.contains(&g.as_str()) {
                return Err(ManageError::Invalid(format!(
                    "grant `{}`: keycard issues authorization_code, refresh_token and client_credentials (no implicit or password grant, RFC 9700 §2.4)",
                    g.escape_debug()
                )));
            }
        }
        if req.public && grants.iter().any(|g| g == "client_credentials") {
            return invalid(
                "the client_credentials grant needs a confidential client (not public)",
            );
        }
        if grants.iter().any(|g| g == "authorization_code") && req.redirect_uris.is_empty() {
            return invalid("the authorization_code grant needs at least one redirect URI");
        }
        let scopes = scopes(&req.scopes)?;
        let secret = if req.public || uses_cert {
            None
        } else {
            let s = keycard_core::random_base62(43).map_err(internal)?;
            Some(SecretString::new(format!("kcs_{s}")))
        };
        let row = ClientRow {
            client_id: req.client_id,
            secret_hash: secret.as_ref().map(|s| {
                self.hasher
                    .hash(HashDomain::ClientSecret, s.expose_secret().as_bytes())
                    .to_vec()
            }),
            auth_method: auth.to_owned(),
            redirect_uris: req.redirect_uris,
            grants,
            scopes: scopes.as_str().to_owned(),
            first_party: req.first_party,
            created_at: now_secs(),
            revoked_at: None,
            tls_subject_dn,
            cert_fingerprint,
        };
        if self.store.find_client(&row.client_id).await?.is_some() {
            return Err(ManageError::Conflict(format!(
                "client `{}` already exists",
                row.client_id
            )));
        }
        self.store.create_client(&row).await?;
        Ok(ClientCreated {
            client: client_view(row),
            client_secret: secret.map(|s| s.expose_secret().to_owned()),
        })
    })
        .await
    }

    /// Every client.
    pub async fn list_clients(&self) -> Result<Vec<ClientView>, ManageError> {
        Ok(self
            .store
            .list_clients()
            .await?
            .into_iter()
            .map(client_view)
            .collect())
    }

    /// Revokes a client and every token it holds.
    pub async fn revoke_client(&self, client_id: &str) -> Result<(), ManageError> {
        self.audited("client.revoke", Some(client_id), async {
            Ok(self.store.revoke_client(client_id, now_secs()).await?)
        })
        .await
    }
}
