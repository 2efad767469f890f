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

use std::sync::Arc;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use keycard_core::user::UserRecord;
use keycard_core::{
    HashDomain, MasterKey, Method, Outcome, Reason, Scopes, constant_time_eq, new_id,
};
use keycard_store::{CodeRow, SessionRow};

use super::{Caller, ClientRecord, FormError, OAuth, Params, html, read_form};
use crate::body::Body;
use crate::clock::{now_millis, now_secs};
use crate::throttle::Verdict;

/// Authorization codes live this long (RFC 9700 §4.5: short; the issue says ≤ 60 s).
const CODE_TTL_SECS: i64 = 60;
/// A login session lasts this long.
pub(super) const SESSION_SECS: i64 = 8 * 3600;
const SESSION_COOKIE: &str = "kc_session";
const CSRF_COOKIE: &str = "kc_csrf";
const SECURE_SESSION_COOKIE: &str = "__Host-kc_session";
const SECURE_CSRF_COOKIE: &str = "__Host-kc_csrf";
/// keycard's own cookies: never forwarded to an upstream, never set by one.
pub(crate) const OWN_COOKIES: [&str; 4] = [
    SESSION_COOKIE,
    CSRF_COOKIE,
    SECURE_SESSION_COOKIE,
    SECURE_CSRF_COOKIE,
];
/// The length of a session secret (base62).
const SESSION_SECRET_LEN: usize = 43;
const LOGIN_ROUTE: &str = "/_keycard/login";
const AUTHORIZE_ROUTE: &str = "/oauth2/authorize";

/// The keys and settings of the pages.
pub(super) struct PageKeys {
    mac: hmac::Key,
    secure: bool,
    csp: HeaderValue,
}

impl std::fmt::Debug for PageKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageKeys([redacted])")
    }
}

impl PageKeys {
    pub(super) fn new(master: &MasterKey, secure: bool) -> Self {
        Self {
            mac: master.session_key(),
            secure,
            csp: HeaderValue::from_str(&html::content_security_policy())
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
        }
    }

    /// A MAC of the credentials `user` signs in with (the password's id, the TOTP seed):
    /// it changes when either does.
    fn credential_tag(&self, user: &UserRecord) -> String {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(b"credentials\0");
        ctx.update(user.password_id.as_bytes());
        ctx.update(b"\0");
        if let Some(seed) = &user.totp_seed {
            ctx.update(b"totp\0");
            ctx.update(seed.expose_secret());
        }
        URL_SAFE_NO_PAD.encode(ctx.sign())
    }

    pub(super) fn tag(&self, purpose: &str, value: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(purpose.as_bytes());
        ctx.update(b"\0");
        ctx.update(value.as_bytes());
        URL_SAFE_NO_PAD.encode(ctx.sign())
    }

    /// Whether cookies of a request on a connection that is (or is not) `tls` are `Secure`
    /// and `__Host-` named.
    fn secure(&self, tls: bool) -> bool {
        self.secure || tls
    }

    /// The names of the session and CSRF cookies.
    pub(super) fn names(&self, tls: bool) -> (&'static str, &'static str) {
        if self.secure(tls) {
            (SECURE_SESSION_COOKIE, SECURE_CSRF_COOKIE)
        } else {
            (SESSION_COOKIE, CSRF_COOKIE)
        }
    }

    pub(super) fn cookie(
        &self,
        name: &str,
        value: &str,
        max_age: i64,
        tls: bool,
    ) -> Option<HeaderValue> {
        let secure = if self.secure(tls) { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
        ))
        .ok()
    }
}

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

/// A live login session of the request's browser.
pub(super) struct Session {
    /// The secret of its cookie (the key of the consent and logout forms' MACs).
    pub(super) secret: keycard_core::SecretString,
    /// What the store says of it.
    pub(super) row: SessionRow,
}

/// A validated authorization request.
struct AuthRequest {
    client: Arc<ClientRecord>,
    redirect_uri: String,
    /// Whether the request named the redirect URI (then the token request must repeat it,
    /// RFC 6749 §4.1.3).
    redirect_uri_sent: bool,
    state: Option<String>,
    scopes: Scopes,
    challenge: String,
    nonce: Option<String>,
    audience: String,
    prompt: Vec<String>,
    /// `max_age` (OIDC Core §3.1.2.1): the most seconds since the user authenticated.
    max_age: Option<i64>,
}

/// Why an authorization request failed.
enum AuthError {
    /// Shown on a page: the redirect URI cannot be trusted (or nothing can be read).
    Page(StatusCode, &'static str),
    /// Sent back to the client's redirect URI.
    Redirect {
        redirect_uri: String,
        error: &'static str,
        state: Option<String>,
    },
}

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
            .hasher
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
    async fn start_session(&self, user: &UserRecord, tls: bool) -> Result<Option<HeaderValue>, ()> {
        let secret = keycard_core::SecretString::new(
            keycard_core::random_base62(SESSION_SECRET_LEN).map_err(|_| ())?,
        );
        let now = now_secs();
        let row = SessionRow {
            session_hash: self
                .authn
                .hasher
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

    /// Validates an authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3, RFC 9700 §2.1).
    async fn validate(&self, p: &Params) -> Result<AuthRequest, AuthError> {
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
        let fail = |error: &'static str| AuthError::Redirect {
            redirect_uri: redirect_uri.clone(),
            error,
            state: state.clone(),
        };
        match p.get("response_type") {
            None => return Err(fail("invalid_request")),
            Some("code") => {}
            // No implicit or hybrid flows (RFC 9700 §2.1.2).
            Some(_) => return Err(fail("unsupported_response_type")),
        }
        // The code comes back in the query, the one mode keycard answers in: another one
        // asked for is refused rather than silently ignored (the client would look for
        // the code where it is not).
        match p.get("response_mode") {
            None | Some("query") => {}
            Some(_) => return Err(fail("invalid_request")),
        }
        if p.get("request").is_some() || p.get("request_uri").is_some() {
            return Err(fail("request_not_supported"));
        }
        if !client.allows_grant("authorization_code") {
            return Err(fail("unauthorized_client"));
        }
        // PKCE S256 for every client; `plain` and a missing method are refused.
        if p.get("code_challenge_method") != Some("S256") {
            return Err(fail("invalid_request"));
        }
        let challenge = match p.get("code_challenge") {
            Some(c) if keycard_core::pkce::challenge_is_valid(c) => c.to_owned(),
            _ => return Err(fail("invalid_request")),
        };
        let scopes = match super::scope_param(p.get("scope")) {
            Err(()) => return Err(fail("invalid_scope")),
            Ok(None) => client.scopes.clone(),
            Ok(Some(s)) if super::subset(&s, &client.scopes) => s,
            Ok(Some(_)) => return Err(fail("invalid_scope")),
        };
        let Ok(audience) = self.audience(p.get("resource")) else {
            return Err(fail("invalid_target"));
        };
        let nonce = p.get("nonce").map(str::to_owned);
        if nonce.as_ref().is_some_and(|n| n.len() > 512)
            || state.as_ref().is_some_and(|s| s.len() > 2048)
        {
            return Err(fail("invalid_request"));
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
            return Err(fail("invalid_request"));
        }
        let max_age = match p.get("max_age") {
            None => None,
            Some(m) => match m.parse::<u32>() {
                Ok(secs) => Some(i64::from(secs)),
                Err(_) => return Err(fail("invalid_request")),
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
    fn redirect_to_client(
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

    fn auth_error(&self, e: AuthError, status: StatusCode) -> Response<Body> {
        match e {
            AuthError::Page(code, message) => self.page(code, html::error(message)),
            AuthError::Redirect {
                redirect_uri,
                error,
                state,
            } => self.redirect_to_client(
                &redirect_uri,
                &[("error", error)],
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
    async fn issue_code(
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
                .hasher
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
    async fn has_consent(&self, req: &AuthRequest, user: &str) -> Result<bool, ()> {
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
            .is_some_and(|granted| super::subset(&req.scopes, &granted)))
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
                None => Err(super::oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    Some("repeated parameter"),
                )),
            };
        }
        match read_form(req).await {
            Ok(x) => Ok(x),
            Err(FormError::Method) => Err(super::method_not_allowed("GET, POST")),
            Err(FormError::Invalid) => Err(super::oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
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
                    self.redirect_error(&auth, "login_required"),
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
                    self.redirect_error(&auth, "consent_required"),
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

    fn redirect_error(&self, auth: &AuthRequest, error: &'static str) -> AuthError {
        AuthError::Redirect {
            redirect_uri: auth.redirect_uri.clone(),
            error,
            state: auth.state.clone(),
        }
    }

    pub(super) async fn login(
        &self,
        req: http::Request<Incoming>,
        caller: Caller,
    ) -> Response<Body> {
        if req.method() == http::Method::GET {
            let (parts, params) = match Self::request_params(req).await {
                Ok(x) => x,
                Err(r) => return r,
            };
            let auth = match self.validate(&params).await {
                Ok(a) => a,
                Err(e) => return self.auth_error(e, StatusCode::FOUND),
            };
            return self.login_page(
                &parts.headers,
                &auth,
                &params.encode(),
                "",
                None,
                StatusCode::OK,
                caller,
            );
        }
        let (parts, form) = match read_form(req).await {
            Ok(x) => x,
            Err(FormError::Method) => return super::method_not_allowed("GET, POST"),
            Err(FormError::Invalid) => {
                return self.page(
                    StatusCode::BAD_REQUEST,
                    html::error("The form could not be read."),
                );
            }
        };
        // CSRF: the form must carry the MAC of this browser's csrf cookie.
        let (_, csrf_name) = self.pages.names(caller.tls);
        let csrf_ok = Self::cookie_value(&parts.headers, csrf_name).is_some_and(|c| {
            form.get("csrf").is_some_and(|t| {
                constant_time_eq(self.pages.tag("login", c).as_bytes(), t.as_bytes())
            })
        });
        if !csrf_ok {
            self.record(
                LOGIN_ROUTE,
                Outcome::Failure,
                Some(Reason::Malformed),
                None,
                None,
                &caller,
            );
            return self.page(
                StatusCode::FORBIDDEN,
                html::error(
                    "This sign-in form has expired. Go back to the application and try again.",
                ),
            );
        }
        let request = form.get("request").unwrap_or("");
        let Some(params) = Params::parse(request.as_bytes()) else {
            return self.page(
                StatusCode::BAD_REQUEST,
                html::error("The sign-in request could not be read."),
            );
        };
        let auth = match self.validate(&params).await {
            Ok(a) => a,
            Err(e) => return self.auth_error(e, StatusCode::SEE_OTHER),
        };
        let username = form.get("username").unwrap_or("");
        let password =
            keycard_core::SecretString::new(form.get("password").unwrap_or("").to_owned());
        let totp = form.get("totp").unwrap_or("");
        let now_ms = now_millis();
        let throttle = &self.authn.throttle;
        // The account's count applies whatever the address: the login page is where
        // guesses spread over many addresses would otherwise go on (an interactive user
        // waits out the window; sessions already open go on).
        let throttled = match (
            throttle.check_ip(caller.ip, now_ms),
            throttle.check_subject(username, caller.ip, now_ms),
            throttle.check_account(username, now_ms),
        ) {
            (Verdict::Throttled { retry_after_secs }, ..)
            | (_, Verdict::Throttled { retry_after_secs }, _) => {
                Some((retry_after_secs, Reason::TooManyFailures))
            }
            (.., Verdict::Throttled { retry_after_secs }) => {
                Some((retry_after_secs, Reason::AccountThrottled))
            }
            _ => None,
        };
        if let Some((retry, reason)) = throttled {
            let subject = (reason == Reason::AccountThrottled).then_some(username);
            self.record(
                LOGIN_ROUTE,
                Outcome::Throttled,
                Some(reason),
                subject,
                None,
                &caller,
            );
            let mut r = self.page(
                StatusCode::TOO_MANY_REQUESTS,
                html::error("Too many failed sign-in attempts. Wait a minute and try again."),
            );
            if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
                r.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
            return r;
        }
        match self.check_login(username, password, totp).await {
            Ok(user) => {
                let cookie = match self.start_session(&user, caller.tls).await {
                    Ok(Some(c)) => c,
                    Ok(None) => {
                        // The password or second factor just checked was replaced a
                        // moment ago.
                        self.record(
                            LOGIN_ROUTE,
                            Outcome::Failure,
                            Some(Reason::Revoked),
                            Some(&user.name),
                            Some(&user.password_id),
                            &caller,
                        );
                        return self.login_refused(
                            &parts.headers,
                            &auth,
                            request,
                            username,
                            caller,
                        );
                    }
                    Err(()) => return self.unavailable_page(),
                };
                self.record(
                    LOGIN_ROUTE,
                    Outcome::Success,
                    None,
                    Some(&user.name),
                    Some(&user.password_id),
                    &caller,
                );
                let mut r = redirect(
                    StatusCode::SEE_OTHER,
                    &format!("{AUTHORIZE_ROUTE}?{}", without_prompt(&params, "login")),
                );
                r.headers_mut().append(SET_COOKIE, cookie);
                r
            }
            Err(LoginError::Unavailable) => self.unavailable_page(),
            Err(LoginError::Refused(reason)) => {
                self.authn.count_failure(caller.ip, Some(username), now_ms);
                if matches!(
                    reason,
                    Reason::BadPassword | Reason::BadTotp | Reason::UnknownCredential
                ) {
                    self.authn
                        .count_account_failure(username, caller.ip, now_ms);
                }
                // An unknown name may be a password typed in the wrong field: not logged.
                let subject = (reason != Reason::UnknownCredential).then_some(username);
                self.record(
                    LOGIN_ROUTE,
                    Outcome::Failure,
                    Some(reason),
                    subject,
                    None,
                    &caller,
                );
                self.login_refused(&parts.headers, &auth, request, username, caller)
            }
        }
    }

    /// The login page again, 401, with the one message every refused sign-in gets.
    fn login_refused(
        &self,
        headers: &HeaderMap,
        auth: &AuthRequest,
        request: &str,
        username: &str,
        caller: Caller,
    ) -> Response<Body> {
        self.login_page(
            headers,
            auth,
            request,
            username,
            Some("The username, password or one-time code is not right."),
            StatusCode::UNAUTHORIZED,
            caller,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn login_page(
        &self,
        headers: &HeaderMap,
        auth: &AuthRequest,
        request: &str,
        username: &str,
        error: Option<&str>,
        status: StatusCode,
        caller: Caller,
    ) -> Response<Body> {
        // Keep the browser's csrf cookie if it has a sane one, else make one.
        let (_, csrf_name) = self.pages.names(caller.tls);
        let existing = Self::cookie_value(headers, csrf_name)
            .filter(|c| c.len() == 22 && c.bytes().all(|b| b.is_ascii_alphanumeric()))
            .map(str::to_owned);
        let (cookie, fresh) = match existing {
            Some(c) => (c, false),
            None => match keycard_core::random_base62(22) {
                Ok(c) => (c, true),
                Err(_) => {
                    return self.unavailable_page();
                }
            },
        };
        let token = self.pages.tag("login", &cookie);
        let mut r = self.page(
            status,
            html::login(&auth.client.client_id, request, &token, username, error),
        );
        if fresh && let Some(c) = self.pages.cookie(csrf_name, &cookie, 3600, caller.tls) {
            r.headers_mut().append(SET_COOKIE, c);
        }
        r
    }

    /// Checks a login: the password (argon2id, on the blocking pool; unknown users against
    /// a dummy hash), then the TOTP code for enrolled users (each time step once).
    async fn check_login(
        &self,
        username: &str,
        password: keycard_core::SecretString,
        totp: &str,
    ) -> Result<Arc<UserRecord>, LoginError> {
        let method = Some(Method::Oauth2);
        let user = self
            .authn
            .user(username, method)
            .await
            .map_err(|_| LoginError::Unavailable)?;
        let hash = match &user {
            Some(u) => u.password_hash.clone(),
            None => self.authn.keys.dummy_hash.clone(),
        };
        let matches = self
            .authn
            .run_slow(method, move || {
                keycard_core::password::verify(&hash, password.expose_secret().as_bytes())
            })
            .await
            .map_err(|_| LoginError::Unavailable)?;
        let user = match user {
            None => return Err(LoginError::Refused(Reason::UnknownCredential)),
            Some(_) if !matches => return Err(LoginError::Refused(Reason::BadPassword)),
            Some(u) if u.disabled => return Err(LoginError::Refused(Reason::Disabled)),
            Some(u) => u,
        };
        if let Some(seed) = &user.totp_seed {
            let Some(step) = keycard_core::totp::verify(seed.expose_secret(), totp, now_secs())
            else {
                return Err(LoginError::Refused(Reason::BadTotp));
            };
            let name = user.name.to_string();
            let fresh = self
                .authn
                .read_store(method, move |store| async move {
                    store.use_totp_step(&name, step).await
                })
                .await
                .map_err(|_| LoginError::Unavailable)?;
            if !fresh {
                return Err(LoginError::Refused(Reason::BadTotp));
            }
        }
        Ok(user)
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
                self.redirect_error(&auth, "access_denied"),
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

/// The request parameters with `value` taken out of `prompt`, and without `max_age=0`, so
/// that a login does not loop: the fresh session it starts satisfies both. Another
/// `max_age` stays, to be checked again after the login (by the consent page too).
fn without_prompt(p: &Params, value: &str) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &p.0 {
        if k == "max_age" && v == "0" {
            continue;
        }
        if k == "prompt" {
            let rest: Vec<&str> = v
                .split(' ')
                .filter(|x| !x.is_empty() && *x != value)
                .collect();
            if !rest.is_empty() {
                s.append_pair(k, &rest.join(" "));
            }
        } else {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

pub(super) fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Why a login failed.
enum LoginError {
    /// Wrong user, password or code (the reason is for the audit log).
    Refused(Reason),
    /// The store or the hashing pool.
    Unavailable,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_host_only_and_secure_on_tls() {
        let master = MasterKey::generate().unwrap();
        let https = PageKeys::new(&master, true);
        let (session, csrf) = https.names(false);
        assert_eq!((session, csrf), ("__Host-kc_session", "__Host-kc_csrf"));
        let c = https.cookie(session, "v", 10, false).unwrap();
        assert_eq!(
            c,
            "__Host-kc_session=v; Path=/; Max-Age=10; HttpOnly; SameSite=Lax; Secure"
        );
        // A plain-HTTP deployment (a laptop, a test) cannot use the prefix: the browser
        // would drop a cookie without `Secure`.
        let http = PageKeys::new(&master, false);
        assert_eq!(http.names(false), ("kc_session", "kc_csrf"));
        assert_eq!(http.names(true).0, "__Host-kc_session", "a TLS connection");
        assert!(OWN_COOKIES.contains(&"__Host-kc_session") && OWN_COOKIES.contains(&"kc_csrf"));
    }

    #[test]
    fn a_login_drops_prompt_login_and_max_age_zero() {
        let p = Params::parse(b"client_id=a&prompt=login%20consent&max_age=0&state=s").unwrap();
        assert_eq!(
            without_prompt(&p, "login"),
            "client_id=a&prompt=consent&state=s"
        );
        let p = Params::parse(b"client_id=a&max_age=60").unwrap();
        assert_eq!(without_prompt(&p, "login"), "client_id=a&max_age=60");
    }
}
