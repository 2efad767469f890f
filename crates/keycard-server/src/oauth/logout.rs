//! `/oauth2/logout`, the `end_session_endpoint` of OpenID Connect RP-Initiated Logout 1.0.
//!
//! An application sends the browser here with `id_token_hint`, `client_id`,
//! `post_logout_redirect_uri` and `state`. The session ends at once when the hint is an ID
//! token keycard issued to the signed-in user; otherwise the user is asked (a page with a
//! form bound to the session), so that a link on another site cannot sign anyone out. The
//! return address must be one of the client's registered redirect URIs, matched as at the
//! authorization endpoint (exactly, but for the port of a loopback address, RFC 8252
//! §7.3), and is used only when the client is known (from `client_id` or the hint's
//! audience).
//! Ending a session revokes the grants made in it.

use http::header::SET_COOKIE;
use http::{Response, StatusCode};
use hyper::body::Incoming;
use keycard_core::{HashDomain, Outcome, constant_time_eq};

use super::cookies::SESSION_SECS;
use super::form::Params;
use super::request::redirect;
use super::{Caller, OAuth, html};
use crate::clock::now_secs;
use crate::upstream::body::Body;

const LOGOUT: &str = "/oauth2/logout";

impl OAuth {
    pub(super) async fn logout(
        &self,
        req: http::Request<Incoming>,
        caller: Caller,
    ) -> Response<Body> {
        let post = req.method() == http::Method::POST;
        let (parts, form) = match Self::request_params(req).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        // The confirmation page posts the original request back with a MAC of the session.
        let csrf = form.get("csrf").filter(|_| post).map(str::to_owned);
        let confirmation = csrf.is_some();
        let params = if confirmation {
            match Params::parse(form.get("request").unwrap_or("").as_bytes()) {
                Some(p) => p,
                None => return self.logout_error("The sign-out request could not be read."),
            }
        } else {
            form
        };
        let now = now_secs();
        let hint = match params.get("id_token_hint") {
            None => None,
            Some(t) => {
                let keys = self.authn.keyring().current();
                match keycard_core::access_token::verify_id_token_hint(
                    t,
                    &keys.keys,
                    &self.issuer,
                    SESSION_SECS,
                    now,
                ) {
                    Ok(h) => Some(h),
                    Err(_) => return self.logout_error("The ID token hint is not valid."),
                }
            }
        };
        let client_id = match (params.get("client_id"), hint.as_ref().map(|h| h.1.as_str())) {
            (Some(c), Some(a)) if c != a => {
                return self.logout_error("The ID token hint was issued to another client.");
            }
            (Some(c), _) | (None, Some(c)) => Some(c.to_owned()),
            (None, None) => None,
        };
        let client = match &client_id {
            None => None,
            Some(id) => match self.authn.client(id).await {
                Ok(Some(c)) if !c.revoked => Some(c),
                Ok(_) => return self.logout_error("The request names an unknown client."),
                Err(_) => return self.unavailable_page(),
            },
        };
        let return_to = match params.get("post_logout_redirect_uri") {
            None => None,
            Some(uri) => match &client {
                Some(c) if c.redirect_uri_matches(uri) => Some(uri.to_owned()),
                Some(_) => {
                    return self
                        .logout_error("The return address is not registered for this client.");
                }
                None => {
                    return self.logout_error(
                        "The request names a return address but no client (send client_id or id_token_hint).",
                    );
                }
            },
        };
        let state = params.get("state").map(str::to_owned);
        if state.as_ref().is_some_and(|s| s.len() > 2048) {
            return self.logout_error("The request's state is too long.");
        }
        let session = match self.session(&parts.headers, caller.tls).await {
            Ok(s) => s,
            Err(()) => return self.unavailable_page(),
        };
        if let Some((session, user)) = session {
            let token = self.pages.tag("logout", session.secret.expose_secret());
            let asked_by_its_app = hint
                .as_ref()
                .is_some_and(|(sub, _)| *sub == session.row.subject);
            let confirmed = csrf
                .as_ref()
                .is_some_and(|t| constant_time_eq(token.as_bytes(), t.as_bytes()));
            if !asked_by_its_app && !confirmed {
                if confirmation {
                    return self.page(
                        StatusCode::FORBIDDEN,
                        html::error("This form has expired. Sign out from the application again."),
                    );
                }
                return self.page(
                    StatusCode::OK,
                    html::logout(&user.name, &params.encode(), &token),
                );
            }
            let hash = self
                .authn
                .hasher()
                .hash(
                    HashDomain::LoginSession,
                    session.secret.expose_secret().as_bytes(),
                )
                .to_vec();
            let ended = self
                .authn
                .read_store(None, move |store| async move {
                    store.end_session(&hash, now).await
                })
                .await;
            if ended.is_err() {
                return self.unavailable_page();
            }
            self.record(
                LOGOUT,
                Outcome::Success,
                None,
                Some(&session.row.subject),
                client_id.as_deref(),
                &caller,
            );
        }
        let mut r = match return_to {
            Some(uri) => match url::Url::parse(&uri) {
                Ok(mut url) => {
                    if let Some(s) = &state {
                        url.query_pairs_mut().append_pair("state", s);
                    }
                    let status = if post {
                        StatusCode::SEE_OTHER
                    } else {
                        StatusCode::FOUND
                    };
                    redirect(status, url.as_str())
                }
                Err(_) => return self.logout_error("The return address is not valid."),
            },
            None => self.page(StatusCode::OK, html::signed_out()),
        };
        // The browser forgets the session too (an ended one is refused anyway).
        let (name, _) = self.pages.names(caller.tls);
        if let Some(c) = self.pages.cookie(name, "", 0, caller.tls) {
            r.headers_mut().append(SET_COOKIE, c);
        }
        r
    }

    fn logout_error(&self, message: &str) -> Response<Body> {
        self.page(StatusCode::BAD_REQUEST, html::error(message))
    }
}
