//! RFC 7662 token introspection, RFC 7009 revocation and the OpenID Connect userinfo
//! endpoint: each answers for keycard's own tokens only.

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use keycard_core::access_token::{self, AccessToken};
use keycard_core::jwt::{self};
use keycard_core::{HashDomain, Method, Outcome};
use serde_json::json;

use super::form::{ErrorCode, invalid_request, unavailable};
use super::form::{json_answer, put};
use super::{Caller, OAuth};
use crate::clock::now_secs;
use crate::upstream::body::Body;

/// The RFC 7662 answer for an active access token of keycard's.
/// The scope that lets a client introspect tokens issued to other clients.
pub(crate) const INTROSPECT_SCOPE: &str = "keycard:introspect";

fn introspection(t: &AccessToken, issuer: &str) -> serde_json::Value {
    let mut body = json!({
        "active": true,
        "token_type": "Bearer",
        "scope": t.scopes.as_str(),
        "client_id": t.client_id,
        "sub": t.subject,
        "exp": t.exp,
        "iat": t.iat,
        "iss": issuer,
        "aud": t.audience,
        "jti": t.jti,
    });
    if let Some(x5t) = &t.x5t_s256 {
        put(&mut body, "cnf", json!({ "x5t#S256": x5t }));
    }
    body
}

impl OAuth {
    pub(super) async fn user_is_active(&self, name: &str) -> bool {
        matches!(self.authn.user(name, Some(Method::Oauth2)).await, Ok(Some(u)) if !u.disabled)
    }

    /// `/oauth2/introspect` (RFC 7662).
    pub(super) async fn introspect(
        &self,
        req: http::Request<Incoming>,
        caller: Caller,
    ) -> Response<Body> {
        let (parts, form) = match self.client_form(req).await {
            Ok(f) => f,
            Err(refused) => return refused,
        };
        // RFC 7662 §2.1: the caller must authenticate (a confidential client).
        let asker = match self.client_of(&parts, &form, &caller, false).await {
            Ok(c) => c,
            Err(refused) => return refused,
        };
        let Some(token) = form.get("token") else {
            return invalid_request("token is required");
        };
        // RFC 7662 §2.2: a client learns about its own tokens only, unless it holds
        // `keycard:introspect` (a resource server's); others' are just inactive to it.
        let may_see =
            |owner: &str| owner == &*asker.client_id || asker.scopes.contains(INTROSPECT_SCOPE);
        let inactive = || json_answer(StatusCode::OK, &json!({ "active": false }));
        if jwt::looks_like_jwt(token) {
            return match self.authn.verify_own_token(token, |_| true).await {
                Ok(t) if may_see(&t.client_id) => {
                    json_answer(StatusCode::OK, &introspection(&t, &self.issuer))
                }
                _ => inactive(),
            };
        }
        let hash = self
            .authn
            .hasher()
            .hash(HashDomain::RefreshToken, token.as_bytes())
            .to_vec();
        let idle_since = now_secs().saturating_sub(self.refresh_idle);
        let found = self
            .authn
            .read_store(None, move |store| async move {
                store.find_refresh(&hash, idle_since).await
            })
            .await;
        match found {
            Err(_) => unavailable(),
            Ok(Some((g, used)))
                if !used
                    && may_see(&g.client_id)
                    && g.revoked_at.is_none()
                    && g.expires_at > now_secs()
                    && self.client_is_active(&g.client_id).await
                    && self.user_is_active(&g.subject).await =>
            {
                json_answer(
                    StatusCode::OK,
                    &json!({
                        "active": true,
                        "token_type": "refresh_token",
                        "scope": g.scopes,
                        "client_id": g.client_id,
                        "sub": g.subject,
                        "exp": g.expires_at,
                        "iat": g.created_at,
                        "iss": self.issuer,
                    }),
                )
            }
            Ok(_) => inactive(),
        }
    }

    async fn client_is_active(&self, client_id: &str) -> bool {
        matches!(self.authn.client(client_id).await, Ok(Some(c)) if !c.revoked)
    }

    pub(super) async fn revoke(
        &self,
        req: http::Request<Incoming>,
        caller: Caller,
    ) -> Response<Body> {
        let (parts, form) = match self.client_form(req).await {
            Ok(f) => f,
            Err(refused) => return refused,
        };
        let client = match self.client_of(&parts, &form, &caller, true).await {
            Ok(c) => c,
            Err(refused) => return refused,
        };
        let Some(token) = form.get("token") else {
            return invalid_request("token is required");
        };
        let now = now_secs();
        let ok = || json_answer(StatusCode::OK, &json!({}));
        if jwt::looks_like_jwt(token) {
            // Expired tokens need no revoking; tokens of other clients are not the caller's
            // to revoke (RFC 7009 §2.1); unknown tokens get 200 all the same.
            let keys = self.authn.keyring().current();
            let Ok(t) =
                access_token::verify_access_token(token, &keys.keys, &self.issuer, |_| true, now)
            else {
                return ok();
            };
            if t.client_id != *client.client_id {
                return ok();
            }
            let (jti, exp) = (t.jti.clone(), t.exp);
            let done = self
                .authn
                .read_store(None, move |store| async move {
                    store.revoke_access_token(&jti, exp, now).await
                })
                .await;
            if done.is_err() {
                return unavailable();
            }
            self.authn.cache().add_revoked(&t.jti, t.exp);
            self.record(
                "/oauth2/revoke",
                Outcome::Success,
                None,
                Some(&t.subject),
                Some(&client.client_id),
                &caller,
            );
            return ok();
        }
        let hash = self
            .authn
            .hasher()
            .hash(HashDomain::RefreshToken, token.as_bytes())
            .to_vec();
        let h2 = hash.clone();
        let found = self
            .authn
            .read_store(None, move |store| async move {
                store.find_refresh(&h2, 0).await
            })
            .await;
        match found {
            Err(_) => unavailable(),
            Ok(Some((g, _))) if g.client_id == *client.client_id => {
                let done = self
                    .authn
                    .read_store(None, move |store| async move {
                        store.revoke_by_refresh(&hash, now).await
                    })
                    .await;
                if done.is_err() {
                    return unavailable();
                }
                self.record(
                    "/oauth2/revoke",
                    Outcome::Success,
                    None,
                    Some(&g.subject),
                    Some(&client.client_id),
                    &caller,
                );
                ok()
            }
            Ok(_) => ok(),
        }
    }

    pub(super) async fn userinfo(
        &self,
        req: http::Request<Incoming>,
        caller: Caller,
    ) -> Response<Body> {
        if !matches!(*req.method(), http::Method::GET | http::Method::POST) {
            return super::form::method_not_allowed("GET, POST");
        }
        let token = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_owned());
        let issuer = self.issuer.clone();
        let verified = match token {
            Some(t) => self
                .authn
                .verify_own_token(&t, |a| a == issuer)
                .await
                .ok()
                .filter(|t| crate::authn::check_binding(t, caller.cert.as_deref()).is_ok()),
            None => None,
        };
        let challenge = |status, code: ErrorCode| {
            let value = code.as_str();
            let mut r = json_answer(status, &json!({ "error": value }));
            if let Ok(v) = HeaderValue::from_str(&format!(
                "Bearer realm=\"{}\", error=\"{value}\"",
                self.realm
            )) {
                r.headers_mut().insert(WWW_AUTHENTICATE, v);
            }
            r
        };
        match verified {
            None => challenge(StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken),
            // A client's token for itself names no end-user to describe (OIDC Core §5.3):
            // never the user who happens to share a name with the client.
            Some(t)
                if !t.scopes.contains("openid")
                    || t.client_credentials
                    || t.subject == t.client_id =>
            {
                challenge(StatusCode::FORBIDDEN, ErrorCode::InsufficientScope)
            }
            Some(t) if !self.user_is_active(&t.subject).await => {
                challenge(StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken)
            }
            Some(t) => {
                let mut body = json!({ "sub": t.subject });
                if t.scopes.contains("profile") {
                    put(&mut body, "preferred_username", json!(t.subject));
                }
                json_answer(StatusCode::OK, &body)
            }
        }
    }
}
