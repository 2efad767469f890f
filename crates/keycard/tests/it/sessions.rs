//! The authorization server's seams: login sessions kept in the store and ended by logout,
//! `user logout`, a new password or second factor; grants listed and revoked; refresh
//! tokens that lapse when idle; the account throttle; OIDC details (`max_age`, `at_hash`,
//! an optional `redirect_uri`); subject kinds; `issuer_host`; CORS.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Method;

use crate::common::http::{Http, Resp};
use crate::common::{Keycard, eventually, route, upstream};
use crate::oauth::{
    CHALLENGE, Fixture, PASSWORD, REDIRECT, VERIFIER, authorize_url, cookie, enc, hidden, login,
    post_form, query_param,
};

/// Signs alice in at `web` through the real pages: the session cookie and a code.
async fn sign_in(f: &Fixture, extra: &str) -> (String, String) {
    sign_in_at(f, &authorize_url(&f.s, "web", REDIRECT, extra)).await
}

/// Signs alice in through the pages from the authorization request `authorize`, and
/// follows the page back to `/oauth2/authorize`: the session cookie and the code.
async fn sign_in_at(f: &Fixture, authorize: &str) -> (String, String) {
    let r = login(&f.http, &f.s, authorize, "").await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let session = cookie(&r, "kc_session").unwrap();
    let r = f
        .http
        .get(
            &f.s.url(&r.header("location").unwrap()),
            &[("cookie", &session)],
        )
        .await;
    assert_eq!(r.status, 302, "{}", String::from_utf8_lossy(&r.body));
    let code = query_param(&r.header("location").unwrap(), "code").unwrap();
    (session, code)
}

/// A code for the signed-in `session`, or `None` when keycard asks for a login.
async fn code_in(f: &Fixture, session: &str, extra: &str) -> Option<String> {
    let r = f
        .http
        .get(
            &authorize_url(&f.s, "web", REDIRECT, extra),
            &[("cookie", session)],
        )
        .await;
    assert_eq!(r.status, 302, "{}", String::from_utf8_lossy(&r.body));
    let to = r.header("location").unwrap();
    if to.starts_with("/_keycard/login") {
        return None;
    }
    Some(query_param(&to, "code").unwrap())
}

/// Redeems a code of `web` (with the redirect URI the authorization request named).
async fn tokens(f: &Fixture, code: &str) -> serde_json::Value {
    let r = f
        .token(
            &f.web,
            &format!(
                "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={VERIFIER}",
                enc(REDIRECT)
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn refresh_status(f: &Fixture, refresh: &str) -> u16 {
    f.refresh(refresh).await.status
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_ends_the_session_and_what_it_granted_and_nothing_else() {
    let f = Fixture::new("sqlite").await;
    let (session, code) = sign_in(&f, "&nonce=n-1").await;
    let t = tokens(&f, &code).await;
    let (access, refresh, id_token) = (
        t["access_token"].as_str().unwrap().to_owned(),
        t["refresh_token"].as_str().unwrap().to_owned(),
        t["id_token"].as_str().unwrap().to_owned(),
    );
    // A second browser's session of the same user: logout in the first leaves it alone.
    let (other, other_code) = sign_in(&f, "").await;
    let other_refresh = tokens(&f, &other_code).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let logout = |q: String| f.s.url(&format!("/oauth2/logout?{q}"));

    // Attacks first; each leaves the session as it was.
    // A link with no proof of the application's asking: a question, not a logout.
    let r = f
        .http
        .get(&logout(String::new()), &[("cookie", &session)])
        .await;
    assert_eq!(r.status, 200);
    let page = String::from_utf8_lossy(&r.body).to_string();
    assert!(page.contains("Sign out?"), "{page}");
    assert!(cookie(&r, "kc_session").is_none());
    // A confirmation without the session's MAC.
    let r = post_form(
        &f.http,
        &f.s.url("/oauth2/logout"),
        &[("cookie", &session)],
        &format!("csrf=forged&request={}", enc(&hidden(&page, "request"))),
    )
    .await;
    assert_eq!(r.status, 403);
    // A return address the client did not register, and one without a client.
    for q in [
        format!(
            "id_token_hint={id_token}&post_logout_redirect_uri={}",
            enc("https://evil.example/")
        ),
        format!("post_logout_redirect_uri={}", enc("http://127.0.0.1/cb")),
        format!("id_token_hint={id_token}&client_id=worker"),
        format!("id_token_hint={}x", &id_token[..id_token.len() - 1]),
    ] {
        let r = f
            .http
            .get(&logout(q.clone()), &[("cookie", &session)])
            .await;
        assert_eq!(r.status, 400, "{q}");
        assert!(r.header("location").is_none(), "{q}");
    }
    assert!(code_in(&f, &session, "").await.is_some(), "still signed in");

    // The application's logout, with the ID token it holds: ended at once, back to the
    // registered address with its state, the cookie cleared.
    let r = f
        .http
        .get(
            &logout(format!(
                "id_token_hint={id_token}&post_logout_redirect_uri={}&state=bye-1",
                enc("http://127.0.0.1/cb")
            )),
            &[("cookie", &session)],
        )
        .await;
    assert_eq!(r.status, 302, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("location").as_deref(),
        Some("http://127.0.0.1/cb?state=bye-1")
    );
    let cleared = r
        .header_all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("kc_session="))
        .unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert!(code_in(&f, &session, "").await.is_none(), "signed out");
    assert_eq!(
        refresh_status(&f, &refresh).await,
        400,
        "its grant is revoked"
    );
    assert!(f.refused_within_a_second(&access).await);
    // The other browser's session and grant go on.
    assert!(code_in(&f, &other, "").await.is_some());
    assert_eq!(refresh_status(&f, &other_refresh).await, 200);

    // Confirmed on the page: the session's MAC signs the form.
    let r = f
        .http
        .get(&logout(String::new()), &[("cookie", &other)])
        .await;
    let page = String::from_utf8_lossy(&r.body).to_string();
    let r = post_form(
        &f.http,
        &f.s.url("/oauth2/logout"),
        &[("cookie", &other)],
        &format!(
            "csrf={}&request={}",
            enc(&hidden(&page, "csrf")),
            enc(&hidden(&page, "request"))
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("Signed out"));
    assert!(code_in(&f, &other, "").await.is_none());
    let audit = f.s.stop_and_audit().await;
    assert!(audit.contains("/oauth2/logout"), "{audit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn passwd_totp_disable_and_user_logout_end_sessions_and_grants() {
    for engine in crate::common::engines() {
        let f = Fixture::new(engine).await;
        // `totp` last: from then on signing in takes a one-time code.
        for change in ["passwd", "logout", "grants --revoke", "disable", "totp"] {
            let (session, code) = sign_in(&f, "").await;
            let t = tokens(&f, &code).await;
            let refresh = t["refresh_token"].as_str().unwrap().to_owned();
            let access = t["access_token"].as_str().unwrap().to_owned();
            let listed: serde_json::Value =
                serde_json::from_str(&f.s.kc.cli_ok(&["user", "grants", "alice", "--json"]))
                    .unwrap();
            assert!(
                listed
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|g| g["client_id"] == "web"),
                "{listed}"
            );
            match change {
                "passwd" => {
                    let out = f.s.kc.cli_stdin(
                        &["user", "passwd", "alice", "--password-stdin"],
                        &format!("{PASSWORD}\n"),
                    );
                    assert!(out.status.success());
                }
                "totp" => {
                    f.s.kc.cli_ok(&["user", "totp", "alice"]);
                }
                "logout" => {
                    let out = f.s.kc.cli_ok(&["user", "logout", "alice"]);
                    assert!(out.contains("session(s) ended"), "{out}");
                }
                "grants --revoke" => {
                    f.s.kc.cli_ok(&["user", "grants", "alice", "--revoke"]);
                }
                _ => {
                    f.s.kc.cli_ok(&["user", "disable", "alice"]);
                }
            }
            assert_eq!(refresh_status(&f, &refresh).await, 400, "{engine} {change}");
            assert!(
                f.refused_within_a_second(&access).await,
                "{engine} {change}"
            );
            let listed = f.s.kc.cli_ok(&["user", "grants", "alice", "--json"]);
            assert_eq!(listed.trim(), "[]", "{engine} {change}");
            if change == "grants --revoke" {
                // Revoking grants leaves the session: a new code is one click away.
                assert!(code_in(&f, &session, "").await.is_some());
                f.s.kc.cli_ok(&["user", "logout", "alice"]);
            }
            let signed_out = eventually(Duration::from_secs(2), || {
                let (f, s) = (&f, session.clone());
                async move { code_in(f, &s, "").await.is_none() }
            })
            .await;
            assert!(signed_out.is_some(), "{engine} {change}");
            if change == "disable" {
                f.s.kc.cli_ok(&["user", "enable", "alice"]);
                // Every instance follows the change within a second.
                tokio::time::sleep(Duration::from_millis(1200)).await;
            }
        }
        // Unknown users and grants are errors that say so.
        for args in [
            &["user", "logout", "nobody"][..],
            &["user", "grants", "nobody"],
            &["user", "grants", "alice", "--revoke", "gr_none"],
        ] {
            let out = f.s.kc.cli(args);
            assert!(!out.status.success(), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("not found") || err.contains("no grant"),
                "{err}"
            );
        }
        f.s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_tokens_lapse_when_idle() {
    let f = Fixture::with("sqlite", "[oauth]\nrefresh_idle_ttl = \"2s\"\n").await;
    let (_, code) = sign_in(&f, "").await;
    let first = tokens(&f, &code).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Used within the idle time: rotated, and the new one starts its own idle time.
    let r = f.refresh(&first).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let second = r.json()["refresh_token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = f.refresh(&second).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    f.s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_age_and_prompt_login_ask_again_and_id_tokens_say_when() {
    let f = Fixture::new("sqlite").await;
    let (session, code) = sign_in(&f, "&nonce=n-1").await;
    let t = tokens(&f, &code).await;
    let id = claims(t["id_token"].as_str().unwrap());
    let first_login = id["auth_time"].as_i64().unwrap();
    // OIDC Core §3.1.3.6: at_hash is the left half of the access token's SHA-256.
    let access = t["access_token"].as_str().unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access.as_bytes());
    assert_eq!(
        id["at_hash"].as_str().unwrap(),
        URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
    );
    assert_eq!(id["nonce"], "n-1");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // A recent enough login is kept; an older one is asked for again.
    assert!(code_in(&f, &session, "&max_age=600").await.is_some());
    assert!(code_in(&f, &session, "&max_age=1").await.is_none());
    assert!(code_in(&f, &session, "&prompt=login").await.is_none());
    // A max_age that is not a number of seconds is refused at the client.
    let r = f
        .http
        .get(
            &authorize_url(&f.s, "web", REDIRECT, "&max_age=soon"),
            &[("cookie", &session)],
        )
        .await;
    let to = r.header("location").unwrap();
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("invalid_request")
    );
    // A sign-in that ages past max_age on the consent page is asked for again there.
    let secret =
        f.s.client(
            "third",
            &["--redirect-uri", "http://127.0.0.1/cb", "--scope", "openid"],
        )
        .unwrap();
    assert!(!secret.is_empty());
    let consent_url = f.s.url(&format!(
        "/oauth2/authorize?response_type=code&client_id=third&redirect_uri={}&scope=openid&code_challenge={CHALLENGE}&code_challenge_method=S256&max_age=1",
        enc("http://127.0.0.1/cb")
    ));
    let (fresh, _) = sign_in(&f, "").await;
    let r = f.http.get(&consent_url, &[("cookie", &fresh)]).await;
    let to = r.header("location").unwrap();
    assert!(to.starts_with("/_keycard/consent?"), "{to}");
    let page = f.http.get(&f.s.url(&to), &[("cookie", &fresh)]).await;
    let html = String::from_utf8_lossy(&page.body).to_string();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = post_form(
        &f.http,
        &f.s.url("/_keycard/consent"),
        &[("cookie", &fresh)],
        &format!(
            "csrf={}&request={}&decision=allow",
            enc(&hidden(&html, "csrf")),
            enc(&hidden(&html, "request"))
        ),
    )
    .await;
    assert_eq!(r.status, 303);
    let to = r.header("location").unwrap();
    assert!(to.starts_with("/_keycard/login?"), "{to}");

    // The login keeps max_age for the checks after it (the consent page's included), but
    // for max_age=0, which the login itself satisfies.
    for (extra, kept) in [("&max_age=5", true), ("&max_age=0", false)] {
        let r = login(
            &f.http,
            &f.s,
            &authorize_url(&f.s, "web", REDIRECT, extra),
            "",
        )
        .await;
        assert_eq!(r.status, 303);
        let to = r.header("location").unwrap();
        assert_eq!(to.contains("max_age"), kept, "{to}");
    }

    // Signing in again for max_age=1 gives a code whose ID token says the new time.
    let (_, code) = sign_in_at(&f, &authorize_url(&f.s, "web", REDIRECT, "&max_age=1")).await;
    let id = claims(tokens(&f, &code).await["id_token"].as_str().unwrap());
    assert!(id["auth_time"].as_i64().unwrap() >= first_login + 2, "{id}");
    f.s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redirect_uri_at_the_token_endpoint_only_when_the_request_named_it() {
    let f = Fixture::new("sqlite").await;
    let owner = f;
    let f = &owner;
    f.s.client(
        "one",
        &[
            "--redirect-uri",
            "http://127.0.0.1/one",
            "--scope",
            "openid",
            "--first-party",
            "--public",
        ],
    );
    let code_without_uri = || async {
        let (_, code) = sign_in_at(
            f,
            &f.s.url(&format!(
                "/oauth2/authorize?response_type=code&client_id=one&scope=openid&state=s&code_challenge={CHALLENGE}&code_challenge_method=S256"
            )),
        )
        .await;
        code
    };
    let redeem = |code: String, uri: Option<&'static str>| async move {
        let uri = uri
            .map(|u| format!("&redirect_uri={}", enc(u)))
            .unwrap_or_default();
        post_form(
            &f.http,
            &f.s.url("/oauth2/token"),
            &[],
            &format!(
                "grant_type=authorization_code&client_id=one&code={code}&code_verifier={VERIFIER}{uri}"
            ),
        )
        .await
        .status
    };
    assert_eq!(redeem(code_without_uri().await, None).await, 200);
    assert_eq!(
        redeem(code_without_uri().await, Some("http://127.0.0.1/one")).await,
        200
    );
    assert_eq!(
        redeem(code_without_uri().await, Some("http://127.0.0.1/other")).await,
        400
    );
    // Named in the request: required, and identical.
    let code = f.code().await;
    let r = f
        .token(
            &f.web,
            &format!("grant_type=authorization_code&code={code}&code_verifier={VERIFIER}"),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    owner.s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_are_told_whether_a_user_or_a_client_called() {
    let f = Fixture::new("sqlite").await;
    let owner = f;
    let f = &owner;
    f.s.client(
        "svc",
        &[
            "--grant",
            "client_credentials",
            "--scope",
            "openid",
            "--scope",
            "orders:read",
        ],
    );
    let r = f.token(&f.worker, "grant_type=client_credentials").await;
    let client_token = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&client_token)["gty"], "client_credentials");
    let (_, code) = sign_in(f, "").await;
    let user_token = tokens(f, &code).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(claims(&user_token).get("gty").is_none());
    let call = |token: String, claimed: &'static str| async move {
        let r = f
            .http
            .get(
                &f.s.url("/api/orders"),
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("x-keycard-subject-kind", claimed),
                    ("x_keycard_subject_kind", claimed),
                ],
            )
            .await;
        assert_eq!(r.status, 200);
        r.upstream_header("x-keycard-subject-kind")
    };
    assert_eq!(call(client_token, "user").await.as_deref(), Some("client"));
    assert_eq!(
        call(user_token.clone(), "client").await.as_deref(),
        Some("user")
    );

    // userinfo describes users only: a client's own token (even with openid) gets none.
    let svc_secret = {
        let v: serde_json::Value = serde_json::from_str(&f.s.kc.cli_ok(&[
            "client",
            "create",
            "svc2",
            "--json",
            "--grant",
            "client_credentials",
            "--scope",
            "openid",
        ]))
        .unwrap();
        v["client_secret"].as_str().unwrap().to_owned()
    };
    let r = f
        .token(
            &crate::oauth::basic("svc2", &svc_secret),
            "grant_type=client_credentials&scope=openid",
        )
        .await;
    let svc_token = r.json()["access_token"].as_str().unwrap().to_owned();
    let userinfo = |t: String| async move {
        f.http
            .get(
                &f.s.url("/oauth2/userinfo"),
                &[("authorization", &format!("Bearer {t}"))],
            )
            .await
    };
    let r = userinfo(svc_token).await;
    assert_eq!(r.status, 403);
    let r = userinfo(user_token).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["sub"], "alice");
    owner.s.stop().await;
}

/// A keycard with a Basic route, trusting 127.0.0.1 as a proxy (so that each request can
/// come from the address its `X-Forwarded-For` names), and `account_failed_auth = 3/15m`.
fn throttled_keycard() -> (Keycard, tokio::task::JoinHandle<()>) {
    let rt = tokio::runtime::Handle::current();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = rt.spawn(async move {
        tx.send(upstream::start().await).unwrap();
    });
    let up = loop {
        if let Ok(u) = rx.try_recv() {
            break u;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut kc = Keycard::new(
        None,
        &format!(
            "[limits]\nfailed_auth = \"5/min\"\naccount_failed_auth = \"3/15m\"\n\n{}",
            route("/b/", &up, "methods = [\"basic\"]")
        ),
    );
    kc.trust_proxies("127.0.0.1/32");
    kc.start();
    kc.add_user("alice", PASSWORD, &[]);
    (kc, h)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_runs_out_of_guesses_whatever_the_address() {
    let (mut kc, _up) = throttled_keycard();
    let http = Http::new();
    let basic = |pw: &str| crate::oauth::basic("alice", pw);
    let from = |ip: &'static str, pw: String| {
        let (http, url) = (http.clone(), kc.url("/b/x"));
        async move {
            http.get(&url, &[("authorization", &pw), ("x-forwarded-for", ip)])
                .await
        }
    };
    // Three wrong guesses from three addresses: none of them is out of its own attempts.
    for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        assert_eq!(from(ip, basic("guess")).await.status, 401);
    }
    // The account is: a guessing address is refused before its guess is looked at, with
    // the right password too.
    let r = from("203.0.113.1", basic(PASSWORD)).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    // An address that never failed still gets in with the right password (a service
    // account keeps working while others guess at it)...
    assert_eq!(from("198.51.100.7", basic(PASSWORD)).await.status, 200);
    // ...and gets one wrong guess, after which it is refused too.
    assert_eq!(from("198.51.100.8", basic("guess")).await.status, 401);
    assert_eq!(from("198.51.100.8", basic(PASSWORD)).await.status, 429);
    // A name that is no user's runs out the same way: the 429 tells nothing.
    for ip in ["203.0.113.4", "203.0.113.5", "203.0.113.6"] {
        let nobody = crate::oauth::basic("nobody", "guess");
        assert_eq!(from(ip, nobody).await.status, 401);
    }
    let r = from("203.0.113.4", crate::oauth::basic("nobody", "guess")).await;
    assert_eq!(r.status, 429);
    // Another account is untouched.
    kc.add_user("bob", PASSWORD, &[]);
    let bob = crate::oauth::basic("bob", PASSWORD);
    assert_eq!(from("203.0.113.2", bob).await.status, 200);
    kc.stop();
    let audit = kc.cli_ok(&["audit", "--json", "--limit", "100"]);
    assert!(audit.contains("\"account_throttled\""), "{audit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_login_page_waits_out_an_account_that_ran_out() {
    let f = Fixture::with(
        "sqlite",
        "[limits]\nfailed_auth = \"100000/min\"\naccount_failed_auth = \"2/15m\"\n",
    )
    .await;
    let owner = f;
    let f = &owner;
    let attempt = |password: &'static str| async {
        let page = f
            .http
            .get(
                &f.s.url(&format!(
                    "/_keycard/login?{}",
                    authorize_url(&f.s, "web", REDIRECT, "")
                        .split_once('?')
                        .unwrap()
                        .1
                )),
                &[],
            )
            .await;
        let csrf = cookie(&page, "kc_csrf").unwrap();
        let html = String::from_utf8_lossy(&page.body).to_string();
        post_form(
            &f.http,
            &f.s.url("/_keycard/login"),
            &[("cookie", &csrf)],
            &format!(
                "csrf={}&request={}&username=alice&password={}",
                enc(&hidden(&html, "csrf")),
                enc(&hidden(&html, "request")),
                enc(password)
            ),
        )
        .await
    };
    assert_eq!(attempt("wrong one").await.status, 401);
    assert_eq!(attempt("wrong two").await.status, 401);
    let r = attempt(PASSWORD).await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("retry-after").is_some());
    let audit = owner.s.stop_and_audit().await;
    assert!(audit.contains("\"account_throttled\""), "{audit}");
}

async fn with_host(http: &Http, url: &str, host: &str) -> Resp {
    http.send(Method::GET, url, &[("host", host)], bytes::Bytes::new())
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_issuer_answers_on_its_host_only_and_to_listed_origins_only() {
    let f = Fixture::with(
        "sqlite",
        "[oauth]\nissuer_host = \"{authority}\"\ncors_origins = [\"https://app.example\"]\n",
    )
    .await;
    let owner = f;
    let f = &owner;
    let discovery = f.s.url("/.well-known/openid-configuration");
    let r = f.http.get(&discovery, &[]).await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(
        doc["end_session_endpoint"],
        format!("{}/oauth2/logout", f.s.base)
    );
    assert!(
        doc["claims_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "at_hash")
    );
    // Another host: those paths are an application's (no route here: 404), never the
    // login pages.
    for path in [
        "/.well-known/openid-configuration",
        "/oauth2/authorize",
        "/_keycard/login",
        "/oauth2/logout",
    ] {
        let r = with_host(&f.http, &f.s.url(path), "app.test").await;
        assert_eq!(r.status, 404, "{path}");
    }

    // CORS: a preflight from a listed origin is answered; from another, nothing is allowed.
    let preflight = |origin: &'static str| async move {
        f.http
            .send(
                Method::OPTIONS,
                &f.s.url("/oauth2/token"),
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "authorization, content-type",
                    ),
                ],
                bytes::Bytes::new(),
            )
            .await
    };
    let r = preflight("https://app.example").await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert!(r.header("access-control-allow-credentials").is_none());
    let r = preflight("https://evil.example").await;
    assert!(r.header("access-control-allow-origin").is_none());
    assert_ne!(r.status, 204);
    let token = |origin: &'static str| async move {
        f.http
            .send(
                Method::POST,
                &f.s.url("/oauth2/token"),
                &[
                    ("origin", origin),
                    ("authorization", &f.worker),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                "grant_type=client_credentials",
            )
            .await
    };
    let r = token("https://app.example").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    let r = token("https://evil.example").await;
    assert!(r.header("access-control-allow-origin").is_none());
    let r = f
        .http
        .send(
            Method::GET,
            &f.s.url("/.well-known/jwks.json"),
            &[("origin", "https://app.example")],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    owner.s.stop().await;
}

/// A session remembers the credentials it signed in with, and ends once they change even
/// when the change did not end it: shown by changing the password id in the store behind
/// keycard's back, with a feed entry as any change has.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_started_with_old_credentials_does_not_outlive_them() {
    if !crate::common::tools::python_requests() {
        return;
    }
    let f = Fixture::new("sqlite").await;
    let (session, _) = sign_in(&f, "").await;
    let db = f.s.kc.path("data/keycard.db");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             db = sqlite3.connect(sys.argv[1])\n\
             db.execute(\"UPDATE subjects SET password_id = 'pwd_changed' WHERE name = 'alice'\")\n\
             db.execute('UPDATE feed_head SET revision = revision + 1')\n\
             db.execute(\"INSERT INTO changes (revision, kind, ref, at) SELECT revision, 'subject', 'alice', 0 FROM feed_head\")\n\
             db.commit()\n",
        )
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ended = eventually(Duration::from_secs(2), || {
        let (f, s) = (&f, session.clone());
        async move { code_in(f, &s, "").await.is_none() }
    })
    .await;
    assert!(ended.is_some(), "the session outlived its credentials");

    // That a sign-in checked against credentials the store has replaced since starts no
    // session at all is shown by the store's own test of `start_session`: whether this
    // instance's copy of the user is stale at a given moment is not for a test to decide.
    f.s.stop().await;
}

/// HTTP Digest, plain names and `userhash`: a name that is no Digest user's runs out of
/// guesses exactly as a real one does, so the answers tell nothing of which exist.
#[tokio::test(flavor = "multi_thread")]
async fn digest_names_and_userhashes_run_out_alike() {
    use crate::passwords::{DigestReq, challenge};
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &format!(
            "[limits]\nfailed_auth = \"100000/min\"\naccount_failed_auth = \"3/15m\"\n\n{}",
            route("/api/", &up, "methods = [\"digest\"]")
        ),
    );
    kc.start();
    kc.add_user("kate", PASSWORD, &["--digest"]);
    kc.add_user("mia", PASSWORD, &[]);
    let http = Http::new();
    let owner = &kc;
    let attempt = |user: &'static str, pw: &'static str, userhash: bool| {
        let (http, url, kc) = (http.clone(), owner.url("/api/x"), owner);
        async move {
            let (nonce, opaque) = challenge(&http, kc).await;
            let h = DigestReq {
                user,
                pw,
                method: "GET",
                uri: "/api/x",
                nonce: &nonce,
                opaque: &opaque,
                nc: 1,
                cnonce: "c1",
                qop: "auth",
                body: b"",
                alg: keycard_core::digest::HashAlg::Sha256,
                userhash,
            }
            .header();
            let r = http.get(&url, &[("authorization", &h)]).await;
            (r.status, r.header("retry-after"))
        }
    };
    for (user, userhash) in [
        ("kate", true),
        ("ghost", true),
        ("mia", true),
        ("ghost2", false),
    ] {
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(attempt(user, "wrong guess", userhash).await);
        }
        let statuses: Vec<u16> = seen.iter().map(|s| s.0).collect();
        assert_eq!(statuses, [401, 401, 401, 429], "{user} userhash={userhash}");
        let retry: u64 = seen[3].1.as_deref().unwrap().parse().unwrap();
        assert!((890..=900).contains(&retry), "{user}: {retry}");
    }
    // The real user's right password from this address, which guessed: refused too.
    assert_eq!(attempt("kate", PASSWORD, true).await.0, 429);
    kc.stop();
}
