//! `/oauth2/authorize` and the pages of the authorization code flow.
//!
//! The flow is stateless on the server until a code is issued: the authorization request
//! travels as a hidden form field, and is validated again at every step (a forged one
//! gains nothing: the user is the session's, the client's redirect URI is re-checked).
//! - Sessions: a cookie `kc_session` holding the user, the password id (a password change
//!   ends every session), the time of login and an expiry, MACed with a key derived from
//!   the master key. `HttpOnly; SameSite=Lax; Path=/`, plus `Secure` over TLS.
//! - CSRF: the login form carries a MAC of a random `kc_csrf` cookie (double submit, so an
//!   attacker cannot log a victim in as themselves); the consent form a MAC of the session.
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
use keycard_store::CodeRow;
use serde::{Deserialize, Serialize};

use super::{Caller, ClientRecord, FormError, OAuth, Params, html, read_form};
use crate::body::Body;
use crate::clock::{now_millis, now_secs};
use crate::throttle::Verdict;

/// Authorization codes live this long (RFC 9700 §4.5: short; the issue says ≤ 60 s).
const CODE_TTL_SECS: i64 = 60;
/// A login session lasts this long.
const SESSION_SECS: i64 = 8 * 3600;
const SESSION_COOKIE: &str = "kc_session";
const CSRF_COOKIE: &str = "kc_csrf";
/// keycard's own cookies: never forwarded to an upstream, never set by one.
pub(crate) const OWN_COOKIES: [&str; 2] = [SESSION_COOKIE, CSRF_COOKIE];
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

    fn tag(&self, purpose: &str, value: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(purpose.as_bytes());
        ctx.update(b"\0");
        ctx.update(value.as_bytes());
        URL_SAFE_NO_PAD.encode(ctx.sign())
    }

    fn cookie(&self, name: &str, value: &str, max_age: i64, tls: bool) -> Option<HeaderValue> {
        let secure = if self.secure || tls { "; Secure" } else { "" };
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

/// What a session cookie says.
#[derive(Debug, Serialize, Deserialize)]
struct Session {
    /// The user.
    u: String,
    /// The password id at login.
    p: String,
    /// When the user logged in.
    t: i64,
    /// Expiry.
    e: i64,
}

/// A validated authorization request.
struct AuthRequest {
    client: Arc<ClientRecord>,
    redirect_uri: String,
    state: Option<String>,
    scopes: Scopes,
    challenge: String,
    nonce: Option<String>,
    audience: String,
    prompt: Vec<String>,
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
    fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The session of the request, if its cookie is genuine, unexpired, and its user still
    /// enabled with the same password.
    async fn session(&self, headers: &HeaderMap) -> Option<(Session, Arc<UserRecord>)> {
        let raw = Self::cookie_value(headers, SESSION_COOKIE)?;
        let (payload, tag) = raw.split_once('.')?;
        if !constant_time_eq(
            self.pages.tag("session", payload).as_bytes(),
            tag.as_bytes(),
        ) {
            return None;
        }
        let s: Session = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        if s.e <= now_secs() {
            return None;
        }
        let user = self.authn.user(&s.u, Some(Method::Oauth2)).await.ok()??;
        (!user.disabled && *user.password_id == s.p).then_some((s, user))
    }

    fn session_cookie(&self, user: &UserRecord, tls: bool) -> Option<HeaderValue> {
        let now = now_secs();
        let s = Session {
            u: user.name.to_string(),
            p: user.password_id.to_string(),
            t: now,
            e: now + SESSION_SECS,
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&s).ok()?);
        let tag = self.pages.tag("session", &payload);
        self.pages.cookie(
            SESSION_COOKIE,
            &format!("{payload}.{tag}"),
            SESSION_SECS,
            tls,
        )
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
        Ok(AuthRequest {
            client,
            redirect_uri,
            state,
            scopes,
            challenge,
            nonce,
            audience,
            prompt,
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
    fn unavailable_page(&self) -> Response<Body> {
        self.page(
            StatusCode::SERVICE_UNAVAILABLE,
            html::error("Sign-in is unavailable right now. Try again in a moment."),
        )
    }

    /// An HTML page with the pages' security headers.
    fn page(&self, status: StatusCode, html: String) -> Response<Body> {
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

    /// Issues a code for a validated request approved by `user`, and redirects to the client.
    async fn issue_code(
        &self,
        req: &AuthRequest,
        user: &str,
        auth_time: i64,
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
            subject: user.to_owned(),
            redirect_uri: req.redirect_uri.clone(),
            scopes: req.scopes.as_str().to_owned(),
            audience: req.audience.clone(),
            code_challenge: req.challenge.clone(),
            nonce: req.nonce.clone(),
            auth_time,
            expires_at: now + CODE_TTL_SECS,
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
    async fn request_params(
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
        _caller: Caller,
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
        let session = if prompt("login") {
            None
        } else {
            self.session(&parts.headers).await
        };
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
        let consented = match self.has_consent(&auth, &session.u).await {
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
        self.issue_code(&auth, &session.u, session.t, StatusCode::FOUND)
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
        let csrf_ok = Self::cookie_value(&parts.headers, CSRF_COOKIE).is_some_and(|c| {
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
        let throttled = match self.authn.throttle.check_ip(caller.ip, now_ms) {
            Verdict::Throttled { retry_after_secs } => Some(retry_after_secs),
            Verdict::Allow => match self
                .authn
                .throttle
                .check_subject(username, caller.ip, now_ms)
            {
                Verdict::Throttled { retry_after_secs } => Some(retry_after_secs),
                Verdict::Allow => None,
            },
        };
        if let Some(retry) = throttled {
            self.record(
                LOGIN_ROUTE,
                Outcome::Throttled,
                Some(Reason::TooManyFailures),
                None,
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
                if let Some(c) = self.session_cookie(&user, caller.tls) {
                    r.headers_mut().append(SET_COOKIE, c);
                }
                r
            }
            Err(LoginError::Unavailable) => self.unavailable_page(),
            Err(LoginError::Refused(reason)) => {
                self.authn.count_failure(caller.ip, Some(username), now_ms);
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
                self.login_page(
                    &parts.headers,
                    &auth,
                    request,
                    username,
                    Some("The username, password or one-time code is not right."),
                    StatusCode::UNAUTHORIZED,
                    caller,
                )
            }
        }
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
        let existing = Self::cookie_value(headers, CSRF_COOKIE)
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
        if fresh && let Some(c) = self.pages.cookie(CSRF_COOKIE, &cookie, 3600, caller.tls) {
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
        let session_cookie = Self::cookie_value(&parts.headers, SESSION_COOKIE)
            .unwrap_or("")
            .to_owned();
        let session = self.session(&parts.headers).await;
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
        auth.scopes = held_by(&auth.scopes, &user.scopes);
        let token = self.pages.tag("consent", &session_cookie);
        if !post {
            let scopes: Vec<&str> = auth.scopes.iter().collect();
            return self.page(
                StatusCode::OK,
                html::consent(
                    &auth.client.client_id,
                    &session.u,
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
                Some(&session.u),
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
                    session.u.clone(),
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
                self.issue_code(&auth, &session.u, session.t, StatusCode::SEE_OTHER)
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

/// The request parameters with `value` taken out of `prompt` (so a login does not loop).
fn without_prompt(p: &Params, value: &str) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &p.0 {
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

fn redirect(status: StatusCode, location: &str) -> Response<Body> {
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
