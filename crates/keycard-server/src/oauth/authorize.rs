//! `/oauth2/authorize` and the pages of the authorization code flow.
//!
//! The flow is stateless on the server until a code is issued: the authorization request
//! travels as a hidden form field, and is validated again at every step (a forged one
//! gains nothing: the user is the session's, the client's redirect URI is re-checked).
//! - Sessions: kept in the store, so that they can be ended (logout, `keycard user
//!   logout`, a new password or second factor, disabling). The cookie `kc_session` holds
//!   a random secret, the store its keyed hash. `HttpOnly; SameSite=Lax; Path=/`; over
//!   TLS `Secure` and the `__Host-` prefix, so that no other host or path can set it. The
//!   gateway removes keycard's cookies from requests it forwards and from the answers.
//! - CSRF: the login form carries a MAC of a random `kc_csrf` cookie (double submit, so an
//!   attacker cannot log a victim in as themselves); the consent and logout forms a MAC of
//!   the session secret.
//! - Errors before the client and its redirect URI are known are shown on a page; after,
//!   they are redirected to that URI with `state` and `iss` (RFC 6749 §4.1.2.1, RFC 9207).

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use keycard_core::{HashDomain, Outcome, Reason, Scopes, constant_time_eq, new_id};
use keycard_store::{CodeRow, SessionRow};

use super::form::{ErrorCode, FormError, Params, read_form};
use super::request::{AuthError, AuthRequest, LOGIN_ROUTE, redirect, without_prompt};
use super::{Caller, OAuth, html};
use crate::clock::now_secs;
use crate::upstream::body::Body;

/// Authorization codes live this long (RFC 9700 §4.5: short; the issue says ≤ 60 s).
const CODE_TTL_SECS: i64 = 60;
/// The OpenID Connect scopes: about the user's own identity, granted to any client the
/// user signs in to (they name no right at the gateway).
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Of the `requested` scopes (already within the client's), those the user holds, and the
/// OpenID Connect ones: a token carries only what its user holds, whatever the client may
/// ask for (a user without `admin` signing in through a client allowed `admin` gets none).
fn held_by(requested: &Scopes, user: &Scopes) -> Scopes {
    let kept: Vec<&str> = requested
        .iter()
        .filter(|s| OIDC_SCOPES.contains(s) || user.contains(s))
        .collect();
    Scopes::parse(&kept.join(" ")).unwrap_or_default()
}

impl OAuth {
    /// Validates an authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3, RFC 9700 §2.1).
    pub(super) async fn validate(&self, p: &Params) -> Result<AuthRequest, AuthError> {
        let Some(client_id) = p.get("client_id") else {
            return Err(AuthError::Page(
                StatusCode::BAD_REQUEST,
                "The request names no client.",
            ));
        };
        let client = match self.authn.client(client_id).await {
            Ok(Some(c)) if !c.revoked => c,
            Ok(_) => {
                return Err(AuthError::Page(
                    StatusCode::BAD_REQUEST,
                    "The request names an unknown client.",
                ));
            }
            Err(_) => {
                return Err(AuthError::Page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sign-in is unavailable right now. Try again in a moment.",
                ));
            }
        };
        let redirect_uri = match p.get("redirect_uri") {
            Some(u) if client.redirect_uri_matches(u) => u.to_owned(),
            Some(_) => {
                return Err(AuthError::Page(
                    StatusCode::BAD_REQUEST,
                    "The redirect URI is not registered for this client.",
                ));
            }
            None => match client.redirect_uris.as_slice() {
                [only] => only.clone(),
                _ => {
                    return Err(AuthError::Page(
                        StatusCode::BAD_REQUEST,
                        "The request names no redirect URI.",
                    ));
                }
            },
        };
        let state = p.get("state").map(str::to_owned);
        let fail = |error: ErrorCode| AuthError::Redirect {
            redirect_uri: redirect_uri.clone(),
            error,
            state: state.clone(),
        };
        match p.get("response_type") {
            None => return Err(fail(ErrorCode::InvalidRequest)),
            Some("code") => {}
            // No implicit or hybrid flows (RFC 9700 §2.1.2).
            Some(_) => return Err(fail(ErrorCode::UnsupportedResponseType)),
        }
        // The code comes back in the query, the one mode keycard answers in: another one
        // asked for is refused rather than silently ignored (the client would look for
        // the code where it is not).
        match p.get("response_mode") {
            None | Some("query") => {}
            Some(_) => return Err(fail(ErrorCode::InvalidRequest)),
        }
        if p.get("request").is_some() || p.get("request_uri").is_some() {
            return Err(fail(ErrorCode::RequestNotSupported));
        }
        if !client.allows_grant("authorization_code") {
            return Err(fail(ErrorCode::UnauthorizedClient));
        }
        // PKCE S256 for every client; `plain` and a missing method are refused.
        if p.get("code_challenge_method") != Some("S256") {
            return Err(fail(ErrorCode::InvalidRequest));
        }
        let challenge = match p.get("code_challenge") {
            Some(c) if keycard_core::pkce::challenge_is_valid(c) => c.to_owned(),
            _ => return Err(fail(ErrorCode::InvalidRequest)),
        };
        let scopes = match super::form::scope_param(p.get("scope")) {
            Err(()) => return Err(fail(ErrorCode::InvalidScope)),
            Ok(None) => client.scopes.clone(),
            Ok(Some(s)) if super::form::subset(&s, &client.scopes) => s,
            Ok(Some(_)) => return Err(fail(ErrorCode::InvalidScope)),
        };
        let Ok(audience) = self.audience(p.get("resource")) else {
            return Err(fail(ErrorCode::InvalidTarget));
        };
        let nonce = p.get("nonce").map(str::to_owned);
        if nonce.as_ref().is_some_and(|n| n.len() > 512)
            || state.as_ref().is_some_and(|s| s.len() > 2048)
        {
            return Err(fail(ErrorCode::InvalidRequest));
        }
        let prompt: Vec<String> = p
            .get("prompt")
            .map(|s| {
                s.split(' ')
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if prompt.iter().any(|x| x == "none") && prompt.len() > 1 {
            return Err(fail(ErrorCode::InvalidRequest));
        }
        let max_age = match p.get("max_age") {
            None => None,
            Some(m) => match m.parse::<u32>() {
                Ok(secs) => Some(i64::from(secs)),
                Err(_) => return Err(fail(ErrorCode::InvalidRequest)),
            },
        };
        Ok(AuthRequest {
            client,
            redirect_uri_sent: p.get("redirect_uri").is_some(),
            redirect_uri,
            state,
            scopes,
            challenge,
            nonce,
            audience,
            prompt,
            max_age,
        })
    }

    /// A redirect to the client with `params`, `state` and `iss` added to its query.
    pub(super) fn redirect_to_client(
        &self,
        redirect_uri: &str,
        params: &[(&str, &str)],
        state: Option<&str>,
        status: StatusCode,
    ) -> Response<Body> {
        let Ok(mut url) = url::Url::parse(redirect_uri) else {
            return self.page(
                StatusCode::BAD_REQUEST,
                html::error("The redirect URI is not valid."),
            );
        };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(s) = state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", &self.issuer);
        }
        redirect(status, url.as_str())
    }

    pub(super) fn auth_error(&self, e: AuthError, status: StatusCode) -> Response<Body> {
        match e {
            AuthError::Page(code, message) => self.page(code, html::error(message)),
            AuthError::Redirect {
                redirect_uri,
                error,
                state,
            } => self.redirect_to_client(
                &redirect_uri,
                &[("error", error.as_str())],
                state.as_deref(),
                status,
            ),
        }
    }

    /// 503: the store (or the hashing pool) cannot be used right now.
    pub(super) fn unavailable_page(&self) -> Response<Body> {
        self.page(
            StatusCode::SERVICE_UNAVAILABLE,
            html::error("Sign-in is unavailable right now. Try again in a moment."),
        )
    }

    /// An HTML page with the pages' security headers.
    pub(super) fn page(&self, status: StatusCode, html: String) -> Response<Body> {
        let mut r = Response::new(Body::from_bytes(html));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert("content-security-policy", self.pages.csp.clone());
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        r
    }

    /// Issues a code for a validated request approved in `session`, and redirects to the
    /// client.
    pub(super) async fn issue_code(
        &self,
        req: &AuthRequest,
        session: &SessionRow,
        status: StatusCode,
    ) -> Response<Body> {
        let (Ok(code), Ok(grant_id)) = (keycard_core::random_base62(32), new_id("gr")) else {
            return self.unavailable_page();
        };
        let code = keycard_core::SecretString::new(format!("kcc_{code}"));
        let now = now_secs();
        let row = CodeRow {
            code_hash: self
                .authn
                .hasher()
                .hash(HashDomain::AuthCode, code.expose_secret().as_bytes())
                .to_vec(),
            grant_id,
            client_id: req.client.client_id.to_string(),
            subject: session.subject.clone(),
            // Empty when the request did not name it: the token request need not either.
            redirect_uri: if req.redirect_uri_sent {
                req.redirect_uri.clone()
            } else {
                String::new()
            },
            scopes: req.scopes.as_str().to_owned(),
            audience: req.audience.clone(),
            code_challenge: req.challenge.clone(),
            nonce: req.nonce.clone(),
            auth_time: session.auth_time,
            expires_at: now + CODE_TTL_SECS,
            session_id: Some(session.session_id.clone()),
        };
        let stored = self
            .authn
            .read_store(
                None,
                move |store| async move { store.insert_code(&row).await },
            )
            .await;
        if stored.is_err() {
            return self.unavailable_page();
        }
        self.redirect_to_client(
            &req.redirect_uri,
            &[("code", code.expose_secret())],
            req.state.as_deref(),
            status,
        )
    }

    /// Whether `user` already consented to everything `req` asks.
    pub(super) async fn has_consent(&self, req: &AuthRequest, user: &str) -> Result<bool, ()> {
        if req.client.first_party {
            return Ok(true);
        }
        let (u, c) = (user.to_owned(), req.client.client_id.to_string());
        let stored = self
            .authn
            .read_store(
                None,
                move |store| async move { store.consent(&u, &c).await },
            )
            .await
            .map_err(|_| ())?;
        Ok(stored
            .and_then(|s| Scopes::parse(&s).ok())
            .is_some_and(|granted| super::form::subset(&req.scopes, &granted)))
    }

    /// The parameters of a request to a page: the query of a GET, or the form of a POST.
    pub(super) async fn request_params(
        req: http::Request<Incoming>,
    ) -> Result<(http::request::Parts, Params), Response<Body>> {
        if req.method() == http::Method::GET {
            let (parts, _) = req.into_parts();
            let q = parts.uri.query().unwrap_or("");
            return match Params::parse(q.as_bytes()) {
                Some(p) => Ok((parts, p)),
                None => Err(super::form::oauth_error(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    Some("repeated parameter"),
                )),
            };
        }
        match read_form(req).await {
            Ok(x) => Ok(x),
            Err(FormError::Method) => Err(super::form::method_not_allowed("GET, POST")),
            Err(FormError::Invalid) => Err(super::form::oauth_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                None,
            )),
        }
    }

    pub(super) async fn authorize(
        &self,
        req: http::Request<Incoming>,
        caller: Caller,
    ) -> Response<Body> {
        let (parts, params) = match Self::request_params(req).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let mut auth = match self.validate(&params).await {
            Ok(a) => a,
            Err(e) => return self.auth_error(e, StatusCode::FOUND),
        };
        let prompt = |v: &str| auth.prompt.iter().any(|p| p == v);
        // `max_age=0` asks for a sign-in now, as `prompt=login` does (OIDC Core §3.1.2.1).
        let session = if prompt("login") || auth.max_age == Some(0) {
            None
        } else {
            match self.session(&parts.headers, caller.tls).await {
                Ok(s) => s,
                Err(()) => return self.unavailable_page(),
            }
        };
        // A login older than `max_age` counts as none: the user signs in again.
        let session = session.filter(|(s, _)| {
            auth.max_age
                .is_none_or(|m| now_secs().saturating_sub(s.row.auth_time) <= m)
        });
        let Some((session, user)) = session else {
            if prompt("none") {
                return self.auth_error(
                    self.redirect_error(&auth, ErrorCode::LoginRequired),
                    StatusCode::FOUND,
                );
            }
            return redirect(
                StatusCode::FOUND,
                &format!("{LOGIN_ROUTE}?{}", without_prompt(&params, "login")),
            );
        };
        auth.scopes = held_by(&auth.scopes, &user.scopes);
        let consented = match self.has_consent(&auth, &session.row.subject).await {
            Ok(c) => c && !prompt("consent"),
            Err(()) => {
                return self.unavailable_page();
            }
        };
        if !consented {
            if prompt("none") {
                return self.auth_error(
                    self.redirect_error(&auth, ErrorCode::ConsentRequired),
                    StatusCode::FOUND,
                );
            }
            return redirect(
                StatusCode::FOUND,
                &format!("/_keycard/consent?{}", params.encode()),
            );
        }
        self.issue_code(&auth, &session.row, StatusCode::FOUND)
            .await
    }

    pub(super) fn redirect_error(&self, auth: &AuthRequest, error: ErrorCode) -> AuthError {
        AuthError::Redirect {
            redirect_uri: auth.redirect_uri.clone(),
            error,
            state: auth.state.clone(),
        }
    }

    pub(super) async fn consent(
        &self,
        req: http::Request<Incoming>,
        caller: Caller,
    ) -> Response<Body> {
        let post = req.method() == http::Method::POST;
        let (parts, form) = match Self::request_params(req).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let session = match self.session(&parts.headers, caller.tls).await {
            Ok(s) => s,
            Err(()) => return self.unavailable_page(),
        };
        let (params, request) = if post {
            let request = form.get("request").unwrap_or("").to_owned();
            match Params::parse(request.as_bytes()) {
                Some(p) => (p, request),
                None => {
                    return self.page(
                        StatusCode::BAD_REQUEST,
                        html::error("The request could not be read."),
                    );
                }
            }
        } else {
            let encoded = form.encode();
            (
                Params::parse(encoded.as_bytes()).unwrap_or_default(),
                encoded,
            )
        };
        let status = if post {
            StatusCode::SEE_OTHER
        } else {
            StatusCode::FOUND
        };
        let mut auth = match self.validate(&params).await {
            Ok(a) => a,
            Err(e) => return self.auth_error(e, status),
        };
        let Some((session, user)) = session else {
            if post {
                return self.page(
                    StatusCode::FORBIDDEN,
                    html::error(
                        "Your sign-in has expired. Go back to the application and try again.",
                    ),
                );
            }
            return redirect(StatusCode::FOUND, &format!("{LOGIN_ROUTE}?{request}"));
        };
        // The sign-in may have aged past `max_age` on this page: ask for it again.
        if auth
            .max_age
            .is_some_and(|m| now_secs().saturating_sub(session.row.auth_time) > m)
        {
            return redirect(
                status,
                &format!("{LOGIN_ROUTE}?{}", without_prompt(&params, "login")),
            );
        }
        auth.scopes = held_by(&auth.scopes, &user.scopes);
        let token = self.pages.tag("consent", session.secret.expose_secret());
        if !post {
            let scopes: Vec<&str> = auth.scopes.iter().collect();
            return self.page(
                StatusCode::OK,
                html::consent(
                    &auth.client.client_id,
                    &session.row.subject,
                    &scopes,
                    &request,
                    &token,
                ),
            );
        }
        if !params_csrf_ok(&form, &token) {
            self.record(
                "/_keycard/consent",
                Outcome::Failure,
                Some(Reason::Malformed),
                Some(&session.row.subject),
                None,
                &caller,
            );
            return self.page(
                StatusCode::FORBIDDEN,
                html::error("This form has expired. Go back to the application and try again."),
            );
        }
        match form.get("decision") {
            Some("allow") => {
                let (u, c, s) = (
                    session.row.subject.clone(),
                    auth.client.client_id.to_string(),
                    auth.scopes.as_str().to_owned(),
                );
                let now = now_secs();
                let saved = self
                    .authn
                    .read_store(None, move |store| async move {
                        store.set_consent(&u, &c, &s, now).await
                    })
                    .await;
                if saved.is_err() {
                    return self.unavailable_page();
                }
                self.issue_code(&auth, &session.row, StatusCode::SEE_OTHER)
                    .await
            }
            Some("deny") => self.auth_error(
                self.redirect_error(&auth, ErrorCode::AccessDenied),
                StatusCode::SEE_OTHER,
            ),
            _ => self.page(
                StatusCode::BAD_REQUEST,
                html::error("Choose Allow or Deny."),
            ),
        }
    }
}

fn params_csrf_ok(form: &Params, expected: &str) -> bool {
    form.get("csrf")
        .is_some_and(|t| constant_time_eq(expected.as_bytes(), t.as_bytes()))
}
