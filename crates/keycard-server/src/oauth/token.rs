//! The token endpoint (RFC 6749 §3.2, RFC 7636 §4.5, RFC 9700), introspection (RFC 7662),
//! revocation (RFC 7009) and userinfo (OIDC Core §5.3); and the `oauth2` method of the
//! gateway, which verifies keycard's own access tokens without touching the store.

use http::header::WWW_AUTHENTICATE;
use http::{HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use keycard_core::access_token::{self, IdTokenClaims};
use keycard_core::signing::{AccessTokenClaims, Confirmation, SigningKey, mint_access_token};
use keycard_core::{HashDomain, Outcome, Reason, Scopes, SecretString, new_id};
use keycard_store::{GrantRow, Issued, Redeemed, Rotated};
use serde_json::json;

use super::clients::ClientError;
use super::form::{ErrorCode, Params, json_answer, oauth_error, put};
use super::form::{invalid_request, unavailable};
use super::{Caller, OAuth};
use crate::clock::now_secs;
use crate::state::client::ClientRecord;
use crate::upstream::body::Body;

const TOKEN: &str = "/oauth2/token";

impl OAuth {
    pub(super) async fn token(
        &self,
        req: http::Request<Incoming>,
        caller: Caller,
    ) -> Response<Body> {
        let (parts, form) = match self.client_form(req).await {
            Ok(f) => f,
            Err(refused) => return refused,
        };
        let grant = match form.get("grant_type") {
            None => return invalid_request("grant_type is required"),
            Some(g @ ("authorization_code" | "client_credentials" | "refresh_token")) => g,
            // No password grant, no implicit, no device or token exchange (RFC 9700 §2.4).
            Some(_) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::UnsupportedGrantType,
                    None,
                );
            }
        };
        let client = match self.client_of(&parts, &form, &caller, true).await {
            Ok(c) => c,
            Err(refused) => return refused,
        };
        if !client.allows_grant(grant) {
            return oauth_error(StatusCode::BAD_REQUEST, ErrorCode::UnauthorizedClient, None);
        }
        // A disabled name gets no new tokens, whatever the grant (the client's own, for
        // client_credentials; the grant's user below, in issue_for_grant).
        if self.authn.cache().is_disabled(&client.client_id) {
            return self.client_error(
                ClientError::Refused(Reason::Disabled, Some(client.client_id.to_string())),
                caller,
            );
        }
        match grant {
            "client_credentials" => self.client_credentials(&client, &form, caller),
            "authorization_code" => self.authorization_code(&client, &form, caller).await,
            _ => self.refresh(&client, &form, caller).await,
        }
    }

    pub(super) fn client_error(&self, e: ClientError, caller: Caller) -> Response<Body> {
        match e {
            ClientError::Malformed => invalid_request("send client credentials one way only"),
            ClientError::Unavailable => unavailable(),
            ClientError::Throttled(retry) => {
                self.record(
                    TOKEN,
                    Outcome::Throttled,
                    Some(Reason::TooManyFailures),
                    None,
                    None,
                    &caller,
                );
                crate::http::answer::too_many_requests(self.authn.throttle().limit(), retry)
            }
            ClientError::Refused(reason, client_id) => {
                // An unknown client id may be a secret pasted in the wrong place: not logged.
                let known = reason != Reason::UnknownCredential;
                let client_id = client_id.as_deref().filter(|_| known);
                self.record(
                    TOKEN,
                    Outcome::Failure,
                    Some(reason),
                    client_id,
                    client_id,
                    &caller,
                );
                let mut r = oauth_error(StatusCode::UNAUTHORIZED, ErrorCode::InvalidClient, None);
                if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{}\"", self.realm)) {
                    r.headers_mut().insert(WWW_AUTHENTICATE, v);
                }
                r
            }
        }
    }

    fn client_credentials(
        &self,
        client: &ClientRecord,
        form: &Params,
        caller: Caller,
    ) -> Response<Body> {
        if client.is_public() {
            return oauth_error(StatusCode::BAD_REQUEST, ErrorCode::UnauthorizedClient, None);
        }
        let scopes = match super::form::scope_param(form.get("scope")) {
            Err(()) => return oauth_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidScope, None),
            Ok(None) => client.scopes.clone(),
            Ok(Some(s)) if super::form::subset(&s, &client.scopes) => s,
            Ok(Some(_)) => {
                return oauth_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidScope, None);
            }
        };
        let Ok(audience) = self.audience(form.get("resource")) else {
            return oauth_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidTarget, None);
        };
        let now = now_secs();
        let Some(key) = self.authn.keyring().current().signer.clone() else {
            return unavailable();
        };
        let Ok(jti) = new_id("at") else {
            return unavailable();
        };
        let Ok(access_token) = self.mint(
            &key,
            &client.client_id,
            &client.client_id,
            &scopes,
            &audience,
            jti,
            now,
            bound_cert(client, &caller),
            true,
        ) else {
            return unavailable();
        };
        self.record(
            TOKEN,
            Outcome::Success,
            None,
            Some(&client.client_id),
            Some(&client.client_id),
            &caller,
        );
        json_answer(
            StatusCode::OK,
            &json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": self.access_ttl,
                "scope": scopes.as_str(),
            }),
        )
    }

    async fn authorization_code(
        &self,
        client: &ClientRecord,
        form: &Params,
        caller: Caller,
    ) -> Response<Body> {
        let Some(code) = form.get("code") else {
            return invalid_request("code is required");
        };
        let Some(verifier) = form.get("code_verifier") else {
            return invalid_request("code_verifier is required (PKCE)");
        };
        let now = now_secs();
        let hash = self
            .authn
            .hasher()
            .hash(HashDomain::AuthCode, code.as_bytes())
            .to_vec();
        let cid = client.client_id.to_string();
        let redeemed = self
            .authn
            .read_store(None, move |store| async move {
                store.redeem_code(&hash, &cid, now).await
            })
            .await;
        let code = match redeemed {
            Err(_) => return unavailable(),
            Ok(Redeemed::Unknown | Redeemed::WrongClient | Redeemed::SessionEnded) => {
                return self.invalid_grant(Reason::UnknownCredential, client, caller);
            }
            Ok(Redeemed::Reused { .. }) => {
                // RFC 6749 §4.1.2: a code used twice revokes what it granted.
                return self.invalid_grant(Reason::Replay, client, caller);
            }
            Ok(Redeemed::Code(c)) => c,
        };
        if code.client_id != *client.client_id {
            return self.invalid_grant(Reason::UnknownCredential, client, caller);
        }
        if code.expires_at <= now {
            return self.invalid_grant(Reason::Expired, client, caller);
        }
        // RFC 6749 §4.1.3: the redirect URI is required, and must be identical, when the
        // authorization request named it; when it did not (the client has one), a token
        // request that names it anyway must name that one.
        let redirect_ok = match (code.redirect_uri.as_str(), form.get("redirect_uri")) {
            ("", None) => true,
            ("", Some(sent)) => matches!(client.redirect_uris.as_slice(), [only] if only == sent),
            (named, sent) => sent == Some(named),
        };
        if !redirect_ok {
            return self.invalid_grant(Reason::UriMismatch, client, caller);
        }
        if !keycard_core::pkce::verify_s256(verifier, &code.code_challenge) {
            return self.invalid_grant(Reason::BadCodeVerifier, client, caller);
        }
        if !self.user_is_active(&code.subject).await {
            return self.invalid_grant(Reason::Disabled, client, caller);
        }
        let Ok(scopes) = Scopes::parse(&code.scopes) else {
            return self.invalid_grant(Reason::Malformed, client, caller);
        };
        let grant = GrantRow {
            grant_id: code.grant_id.clone(),
            client_id: code.client_id.clone(),
            subject: code.subject.clone(),
            scopes: code.scopes.clone(),
            audience: code.audience.clone(),
            auth_time: code.auth_time,
            created_at: now,
            expires_at: now.saturating_add(self.refresh_ttl),
            revoked_at: None,
            session_id: code.session_id.clone(),
        };
        self.issue_for_grant(
            client,
            &grant,
            &scopes,
            code.nonce.as_deref(),
            true,
            None,
            caller,
        )
        .await
    }

    async fn refresh(
        &self,
        client: &ClientRecord,
        form: &Params,
        caller: Caller,
    ) -> Response<Body> {
        let Some(token) = form.get("refresh_token") else {
            return invalid_request("refresh_token is required");
        };
        let requested = match super::form::scope_param(form.get("scope")) {
            Ok(s) => s,
            Err(()) => return oauth_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidScope, None),
        };
        let old = self
            .authn
            .hasher()
            .hash(HashDomain::RefreshToken, token.as_bytes())
            .to_vec();
        // What would refuse the refresh is judged before the token is rotated: a refused
        // refresh leaves the presented token usable (rotating first spent it, and the
        // client's retry then counted as a reuse that revoked the whole grant).
        let presented = old.clone();
        let idle_since = now_secs().saturating_sub(self.refresh_idle);
        let found = self
            .authn
            .read_store(None, move |store| async move {
                store.find_refresh(&presented, idle_since).await
            })
            .await;
        match found {
            Err(_) => return unavailable(),
            Ok(Some((g, false))) if g.client_id == *client.client_id && g.revoked_at.is_none() => {
                let Ok(granted) = Scopes::parse(&g.scopes) else {
                    return self.invalid_grant(Reason::Malformed, client, caller);
                };
                if requested
                    .as_ref()
                    .is_some_and(|s| !super::form::subset(s, &granted))
                {
                    return oauth_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidScope, None);
                }
                if self.authn.cache().is_disabled(&g.subject)
                    || !self.user_is_active(&g.subject).await
                {
                    return self.invalid_grant(Reason::Disabled, client, caller);
                }
            }
            // Unknown, used, another client's or revoked: rotation says which.
            Ok(_) => {}
        }
        let grant = GrantRow {
            grant_id: String::new(),
            client_id: client.client_id.to_string(),
            subject: String::new(),
            scopes: String::new(),
            audience: String::new(),
            auth_time: 0,
            created_at: 0,
            expires_at: 0,
            revoked_at: None,
            session_id: None,
        };
        self.issue_for_grant(
            client,
            &grant,
            &Scopes::empty(),
            None,
            false,
            Some((old, requested)),
            caller,
        )
        .await
    }

    /// Mints tokens under a grant: the first ones from a code (`first`), or by rotating a
    /// refresh token (`rotate`: the old token's hash and the requested scopes).
    #[allow(clippy::too_many_arguments)]
    async fn issue_for_grant(
        &self,
        client: &ClientRecord,
        grant: &GrantRow,
        code_scopes: &Scopes,
        nonce: Option<&str>,
        first: bool,
        rotate: Option<(Vec<u8>, Option<Scopes>)>,
        caller: Caller,
    ) -> Response<Body> {
        if self.authn.cache().is_disabled(&grant.subject) {
            return self.invalid_grant(Reason::Disabled, client, caller);
        }
        let now = now_secs();
        let Some(key) = self.authn.keyring().current().signer.clone() else {
            return unavailable();
        };
        let jti = match new_id("at") {
            Ok(j) => j,
            Err(_) => return unavailable(),
        };
        let refresh = if client.allows_grant("refresh_token") {
            match keycard_core::random_base62(43) {
                Ok(r) => Some(SecretString::new(format!("kcr_{r}"))),
                Err(_) => return unavailable(),
            }
        } else {
            None
        };
        let issued = Issued {
            refresh_hash: refresh.as_ref().map(|r| {
                self.authn
                    .hasher()
                    .hash(HashDomain::RefreshToken, r.expose_secret().as_bytes())
                    .to_vec()
            }),
            jti: jti.clone(),
            access_expires_at: now.saturating_add(self.access_ttl),
        };
        let (grant, scopes) = if first {
            let (g, i) = (grant.clone(), issued.clone());
            let stored = self
                .authn
                .read_store(
                    None,
                    move |store| async move { store.start_grant(&g, &i).await },
                )
                .await;
            if stored.is_err() {
                return unavailable();
            }
            (grant.clone(), code_scopes.clone())
        } else {
            let Some((old, requested)) = rotate else {
                return unavailable();
            };
            let (i, cid) = (issued.clone(), client.client_id.to_string());
            let idle_since = now.saturating_sub(self.refresh_idle);
            let rotated = self
                .authn
                .read_store(None, move |store| async move {
                    store.rotate_refresh(&old, &cid, &i, now, idle_since).await
                })
                .await;
            let g = match rotated {
                Err(_) => return unavailable(),
                Ok(Rotated::Invalid) => {
                    return self.invalid_grant(Reason::UnknownCredential, client, caller);
                }
                // RFC 9700 §4.14.2: a refresh token used twice revokes the whole grant.
                Ok(Rotated::Reused { .. }) => {
                    return self.invalid_grant(Reason::Replay, client, caller);
                }
                Ok(Rotated::Grant(g)) => g,
            };
            let Ok(granted) = Scopes::parse(&g.scopes) else {
                return self.invalid_grant(Reason::Malformed, client, caller);
            };
            let scopes = match requested {
                None => granted,
                Some(s) if super::form::subset(&s, &granted) => s,
                Some(_) => {
                    return oauth_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidScope, None);
                }
            };
            if !self.user_is_active(&g.subject).await {
                return self.invalid_grant(Reason::Disabled, client, caller);
            }
            (g, scopes)
        };
        let Ok(access_token) = self.mint(
            &key,
            &grant.subject,
            &client.client_id,
            &scopes,
            &grant.audience,
            jti,
            now,
            bound_cert(client, &caller),
            false,
        ) else {
            return unavailable();
        };
        let mut body = json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
            "scope": scopes.as_str(),
        });
        if let Some(r) = &refresh {
            put(&mut body, "refresh_token", json!(r.expose_secret()));
        }
        if scopes.contains("openid") {
            let id = IdTokenClaims {
                iss: self.issuer.clone(),
                sub: grant.subject.clone(),
                aud: client.client_id.to_string(),
                exp: now.saturating_add(self.access_ttl),
                iat: now,
                auth_time: grant.auth_time,
                nonce: nonce.map(str::to_owned),
                azp: client.client_id.to_string(),
                jti: new_id("id").unwrap_or_default(),
                at_hash: Some(access_token::at_hash(key.alg(), &access_token)),
            };
            match key.sign_jwt("JWT", &id) {
                Ok(t) => put(&mut body, "id_token", json!(t)),
                Err(_) => return unavailable(),
            }
        }
        self.record(
            TOKEN,
            Outcome::Success,
            None,
            Some(&grant.subject),
            Some(&client.client_id),
            &caller,
        );
        json_answer(StatusCode::OK, &body)
    }

    fn invalid_grant(
        &self,
        reason: Reason,
        client: &ClientRecord,
        caller: Caller,
    ) -> Response<Body> {
        self.record(
            TOKEN,
            Outcome::Failure,
            Some(reason),
            None,
            Some(&client.client_id),
            &caller,
        );
        oauth_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidGrant, None)
    }

    /// Signs an access token.
    #[allow(clippy::too_many_arguments)]
    fn mint(
        &self,
        key: &SigningKey,
        sub: &str,
        client_id: &str,
        scopes: &Scopes,
        audience: &str,
        jti: String,
        now: i64,
        bound_to: Option<&crate::tls::PeerCert>,
        client_credentials: bool,
    ) -> Result<String, ()> {
        let claims = AccessTokenClaims {
            iss: self.issuer.clone(),
            sub: sub.to_owned(),
            aud: audience.to_owned(),
            exp: now.saturating_add(self.access_ttl),
            iat: now,
            jti,
            client_id: client_id.to_owned(),
            scope: scopes.as_str().to_owned(),
            cnf: bound_to.map(|c| Confirmation {
                x5t_s256: c.identity.x5t_s256(),
            }),
            gty: client_credentials.then_some("client_credentials"),
        };
        mint_access_token(key, &claims).map_err(|_| ())
    }

    /// The audience of tokens for `resource` (RFC 8707): keycard's own URL by default, or a
    /// resource under it (a path the gateway serves).
    pub(super) fn audience(&self, resource: Option<&str>) -> Result<String, ()> {
        match resource {
            None => Ok(self.issuer.clone()),
            Some(r) if r == self.issuer => Ok(r.to_owned()),
            Some(r)
                if r.strip_prefix(self.issuer.as_str())
                    .is_some_and(|p| p.starts_with('/'))
                    && !r.contains(['?', '#'])
                    && !r.contains("/../")
                    && !r.ends_with("/..") =>
            {
                Ok(r.to_owned())
            }
            Some(_) => Err(()),
        }
    }
}

/// The certificate a client's tokens are bound to: the one it authenticated with, when it
/// authenticates with one (RFC 8705 §3).
fn bound_cert<'a>(client: &ClientRecord, caller: &'a Caller) -> Option<&'a crate::tls::PeerCert> {
    if client.auth.uses_certificate() {
        caller.cert.as_deref()
    } else {
        None
    }
}
