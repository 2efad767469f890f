//! The login page (`/_keycard/login`): a user's password and one-time code checked under
//! the failed-attempt throttle, then a session started and the authorization request
//! resumed.

use std::sync::Arc;

use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use keycard_core::user::UserRecord;
use keycard_core::{Method, Outcome, Reason, constant_time_eq};

use super::form::{FormError, Params, read_form};
use super::request::{AUTHORIZE_ROUTE, AuthRequest, LOGIN_ROUTE, redirect, without_prompt};
use super::{Caller, OAuth, html};
use crate::authn::throttle::Verdict;
use crate::clock::{now_millis, now_secs};
use crate::upstream::body::Body;

/// Why a login failed.
enum LoginError {
    /// Wrong user, password or code (the reason is for the audit log).
    Refused(Reason),
    /// The store or the hashing pool.
    Unavailable,
}

impl OAuth {
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
            Err(FormError::Method) => return super::form::method_not_allowed("GET, POST"),
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
        let throttle = self.authn.throttle();
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
            None => self.authn.dummy_password_hash().to_owned(),
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
}
