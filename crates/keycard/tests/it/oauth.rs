//! keycard's authorization server: Authlib + PyJWT + pyotp drive the whole flow
//! (`py/oauth_flow.py`); here, every refusal RFC 9700 asks for, each its own test, on
//! SQLite and PostgreSQL; the Chromium test lives in `browser.rs`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::Method;

use crate::common::http::{Http, Resp};
use crate::common::{Keycard, TempStore, engines, eventually, route, store_for, tools, upstream};

pub const PASSWORD: &str = "correct horse battery staple";
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
/// RFC 7636 Appendix B: the S256 challenge of [`VERIFIER`].
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// A running keycard whose `public_url` is its real address, with a gateway route.
pub struct Server {
    pub kc: Keycard,
    pub base: String,
    pub upstream: String,
    temp: Option<TempStore>,
}

impl Server {
    pub async fn start(engine: &str) -> Server {
        Self::start_with(engine, "").await
    }

    /// With `extra` TOML after the gateway route (`[oauth]`, `[limits]`, more routes;
    /// `{upstream}` in it is the echo upstream's URL, `{authority}` keycard's).
    pub async fn start_with(engine: &str, extra: &str) -> Server {
        let temp = store_for(engine).await;
        let up = upstream::start().await;

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let extra = extra
            .replace("{upstream}", &up)
            .replace("{authority}", &format!("127.0.0.1:{port}"));
        let mut kc = Keycard::new(
            temp.as_ref().map(|t| t.url.as_str()),
            &format!(
                "{}\n{extra}",
                route("/api/", &up, "scopes = [\"orders:read\"]")
            ),
        );
        let cfg = std::fs::read_to_string(&kc.config).unwrap().replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\"\npublic_url = \"{base}\""),
            1,
        );
        std::fs::write(&kc.config, cfg).unwrap();
        kc.start();
        Server {
            kc,
            base,
            upstream: up,
            temp,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `client create … --json`; returns the secret (None for public clients).
    pub fn client(&self, id: &str, args: &[&str]) -> Option<String> {
        let mut a = vec!["client", "create", id, "--json"];
        a.extend_from_slice(args);
        let v: serde_json::Value = serde_json::from_str(&self.kc.cli_ok(&a)).unwrap();
        v["client_secret"].as_str().map(str::to_owned)
    }

    /// Stops (the audit queue is written at shutdown) and returns `audit --json`.
    pub async fn stop_and_audit(mut self) -> String {
        self.kc.stop();
        let audit = self.kc.cli_ok(&["audit", "--json", "--limit", "1000"]);
        if let Some(t) = self.temp.take() {
            t.cleanup().await;
        }
        audit
    }

    pub async fn stop(mut self) {
        self.kc.stop();
        if let Some(t) = self.temp.take() {
            t.cleanup().await;
        }
    }
}

pub fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

pub async fn post_form(http: &Http, url: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
    h.extend_from_slice(headers);
    http.send(Method::POST, url, &h, body.to_owned()).await
}

pub(crate) fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An authorization URL of `client` with the RFC 7636 example challenge.
pub(crate) fn authorize_url(s: &Server, client: &str, redirect: &str, extra: &str) -> String {
    s.url(&format!(
        "/oauth2/authorize?response_type=code&client_id={client}&redirect_uri={}&scope=openid%20orders%3Aread&state=st-1&code_challenge={CHALLENGE}&code_challenge_method=S256{extra}",
        enc(redirect)
    ))
}

pub(crate) fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end]
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

pub(crate) fn cookie(resp: &Resp, name: &str) -> Option<String> {
    resp.header_all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap().to_owned())
}

pub(crate) fn query_param(location: &str, name: &str) -> Option<String> {
    let q = location.split_once('?')?.1;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Posts the login form reached from `authorize` for alice (a fresh browser: no cookies
/// but the csrf one the page sets).
pub(crate) async fn login(http: &Http, s: &Server, authorize: &str, totp: &str) -> Resp {
    let r = http.get(authorize, &[]).await;
    assert_eq!(r.status, 302, "{}", String::from_utf8_lossy(&r.body));
    let login = r.header("location").unwrap();
    assert!(login.starts_with("/_keycard/login?"), "{login}");
    let page = http.get(&s.url(&login), &[]).await;
    assert_eq!(page.status, 200);
    let csrf_cookie = cookie(&page, "kc_csrf").unwrap();
    let html = String::from_utf8_lossy(&page.body).to_string();
    let body = format!(
        "csrf={}&request={}&username=alice&password={}&totp={totp}",
        enc(&hidden(&html, "csrf")),
        enc(&hidden(&html, "request")),
        enc(PASSWORD)
    );
    post_form(
        http,
        &s.url("/_keycard/login"),
        &[("cookie", &csrf_cookie)],
        &body,
    )
    .await
}

/// Logs alice in through the real pages (no TOTP) for a first-party client and returns
/// the authorization code.
pub(crate) async fn code_for(http: &Http, s: &Server, client: &str, redirect: &str) -> String {
    let r = login(http, s, &authorize_url(s, client, redirect, ""), "").await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let session = cookie(&r, "kc_session").unwrap();
    let r = http
        .get(
            &s.url(&r.header("location").unwrap()),
            &[("cookie", &session)],
        )
        .await;
    assert_eq!(r.status, 302);
    let back = r.header("location").unwrap();
    assert!(back.starts_with(redirect), "{back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some("st-1"));
    query_param(&back, "code").unwrap()
}

pub(crate) async fn redeem(
    http: &Http,
    s: &Server,
    auth: &str,
    code: &str,
    redirect: &str,
    verifier: &str,
) -> Resp {
    post_form(
        http,
        &s.url("/oauth2/token"),
        &[("authorization", auth)],
        &format!(
            "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={verifier}",
            enc(redirect)
        ),
    )
    .await
}

pub(crate) async fn gateway(http: &Http, s: &Server, token: &str) -> u16 {
    http.get(
        &s.url("/api/orders"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread")]
async fn authlib_client_through_the_login_pages_with_pyjwt_and_pyotp() {
    if !tools::python_authlib() {
        return;
    }
    let s = Server::start("sqlite").await;
    let cc_secret = s
        .client(
            "worker",
            &["--grant", "client_credentials", "--scope", "orders:read"],
        )
        .unwrap();
    let web_secret = s
        .client(
            "web",
            &[
                "--redirect-uri",
                "http://127.0.0.1/callback",
                "--scope",
                "openid",
                "--scope",
                "orders:read",
            ],
        )
        .unwrap();
    s.kc.add_user("alice", PASSWORD, &["--scope", "orders:read"]);
    let totp: serde_json::Value =
        serde_json::from_str(&s.kc.cli_ok(&["user", "totp", "alice", "--json"])).unwrap();
    assert!(
        totp["uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/keycard:alice?secret=")
    );
    let cfg = serde_json::json!({
        "base": s.base,
        "gateway_path": "/api/orders",
        "cc_id": "worker", "cc_secret": cc_secret,
        "web_id": "web", "web_secret": web_secret,
        "redirect_uri": "http://127.0.0.1:45678/callback",
        "user": "alice", "password": PASSWORD,
        "totp_secret": totp["secret"],
    });
    let cfg_path = s.kc.path("oauth_flow.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/py/oauth_flow.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&cfg_path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "oauth_flow.py: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let facts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(facts["cc"]["method"], "oauth2");
    assert_eq!(facts["auth_code"]["family_revoked"], true);
    // The audit log saw the reused TOTP code and the reused refresh token.
    let audit = s.stop_and_audit().await;
    assert!(audit.contains("\"bad_totp\""), "{audit}");
    assert!(audit.contains("\"replay\""), "{audit}");
}

/// A public client for the authorization endpoint's refusals.
async fn authorize_setup() -> (Server, Http) {
    let s = Server::start("sqlite").await;
    s.client(
        "app",
        &[
            "--public",
            "--redirect-uri",
            "https://app.example/cb",
            "--scope",
            "openid",
            "--scope",
            "orders:read",
        ],
    );
    (s, Http::new())
}

const APP_REDIRECT: &str = "https://app.example/cb";

fn authorize_base(s: &Server, extra: &str) -> String {
    s.url(&format!(
        "/oauth2/authorize?client_id=app&redirect_uri={}&state=xyz{extra}",
        enc(APP_REDIRECT)
    ))
}

/// The `error` of an authorization error redirected to the registered URI (with `state`
/// and `iss`, RFC 9207).
fn authorize_error(s: &Server, r: &Resp) -> String {
    assert_eq!(r.status, 302, "{}", String::from_utf8_lossy(&r.body));
    let loc = r.header("location").unwrap();
    assert!(loc.starts_with(APP_REDIRECT), "{loc}");
    assert_eq!(query_param(&loc, "state").as_deref(), Some("xyz"));
    assert_eq!(query_param(&loc, "iss").as_deref(), Some(s.base.as_str()));
    query_param(&loc, "error").unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_missing_or_plain_pkce() {
    let (s, http) = authorize_setup().await;
    // No PKCE at all.
    let r = http
        .get(&authorize_base(&s, "&response_type=code"), &[])
        .await;
    assert_eq!(authorize_error(&s, &r), "invalid_request");
    // `plain` PKCE.
    let r = http
        .get(
            &authorize_base(
                &s,
                &format!(
                    "&response_type=code&code_challenge={VERIFIER}&code_challenge_method=plain"
                ),
            ),
            &[],
        )
        .await;
    assert_eq!(authorize_error(&s, &r), "invalid_request");
    // A challenge without a method means `plain` (RFC 7636 §4.3).
    let r = http
        .get(
            &authorize_base(
                &s,
                &format!("&response_type=code&code_challenge={CHALLENGE}"),
            ),
            &[],
        )
        .await;
    assert_eq!(authorize_error(&s, &r), "invalid_request");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_response_type_token_and_scopes_beyond_the_client() {
    let (s, http) = authorize_setup().await;
    // The implicit grant.
    let r = http
        .get(
            &authorize_base(
                &s,
                &format!(
                    "&response_type=token&code_challenge={CHALLENGE}&code_challenge_method=S256"
                ),
            ),
            &[],
        )
        .await;
    assert_eq!(authorize_error(&s, &r), "unsupported_response_type");
    // A response mode keycard does not answer in: refused, not ignored; `query` is fine.
    for (mode, error) in [("form_post", true), ("fragment", true), ("query", false)] {
        let r = http
            .get(
                &authorize_base(
                    &s,
                    &format!(
                        "&response_type=code&response_mode={mode}&code_challenge={CHALLENGE}&code_challenge_method=S256"
                    ),
                ),
                &[],
            )
            .await;
        if error {
            assert_eq!(authorize_error(&s, &r), "invalid_request", "{mode}");
        } else {
            assert!(
                r.header("location")
                    .unwrap()
                    .starts_with("/_keycard/login?")
            );
        }
    }
    // A scope the client may not ask for.
    let r = http
        .get(&authorize_base(&s, &format!("&response_type=code&scope=admin&code_challenge={CHALLENGE}&code_challenge_method=S256")), &[])
        .await;
    assert_eq!(authorize_error(&s, &r), "invalid_scope");
    // A valid request goes to the login page.
    let r = http
        .get(
            &authorize_base(
                &s,
                &format!(
                    "&response_type=code&code_challenge={CHALLENGE}&code_challenge_method=S256"
                ),
            ),
            &[],
        )
        .await;
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/_keycard/login?")
    );

    s.stop().await;
}

/// Nothing but a registered redirect URI of a known client is ever redirected to.
#[tokio::test(flavor = "multi_thread")]
async fn refused_unregistered_redirect_uri_without_redirecting() {
    let (s, http) = authorize_setup().await;
    // Redirect URIs that are not registered: an error page, never a redirect.
    for bad in [
        "https://evil.example/cb",
        "https://app.example/cb/extra",
        "https://app.example/cb?x=1",
        "https://app.example.evil.example/cb",
        "http://app.example/cb",
    ] {
        let r = http
            .get(
                &s.url(&format!(
                    "/oauth2/authorize?response_type=code&client_id=app&redirect_uri={}&code_challenge={CHALLENGE}&code_challenge_method=S256",
                    enc(bad)
                )),
                &[],
            )
            .await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.header("location").is_none(), "{bad} redirected");
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
    }
    // An unknown client: an error page too.
    let r = http
        .get(
            &s.url(&format!(
                "/oauth2/authorize?response_type=code&client_id=nobody&redirect_uri={}",
                enc(APP_REDIRECT)
            )),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.header("location").is_none());
    // Repeated parameters (RFC 6749 §3.1).
    let r = http
        .get(
            &format!(
                "{}&client_id=app",
                authorize_base(&s, "&response_type=code")
            ),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.header("location").is_none());
    s.stop().await;
}

/// A server with a first-party confidential web client, a client-credentials worker and a
/// user, for the token endpoint's refusals.
pub(crate) struct Fixture {
    pub(crate) s: Server,
    pub(crate) http: Http,
    pub(crate) web: String,
    pub(crate) worker: String,
    pub(crate) web_secret: String,
    pub(crate) worker_secret: String,
    pub(crate) engine: &'static str,
}

pub(crate) const REDIRECT: &str = "http://127.0.0.1:40000/cb";

impl Fixture {
    pub(crate) async fn new(engine: &'static str) -> Fixture {
        Self::with(engine, "").await
    }

    /// With `extra` TOML (see [`Server::start_with`]).
    pub(crate) async fn with(engine: &'static str, extra: &str) -> Fixture {
        let s = Server::start_with(engine, extra).await;
        let secret = s
            .client(
                "web",
                &[
                    "--redirect-uri",
                    "http://127.0.0.1/cb",
                    "--scope",
                    "openid",
                    "--scope",
                    "orders:read",
                    "--first-party",
                ],
            )
            .unwrap();
        let cc = s
            .client(
                "worker",
                &["--grant", "client_credentials", "--scope", "orders:read"],
            )
            .unwrap();
        s.kc.add_user("alice", PASSWORD, &["--scope", "orders:read"]);
        Fixture {
            web: basic("web", &secret),
            worker: basic("worker", &cc),
            web_secret: secret,
            worker_secret: cc,
            s,
            http: Http::new(),
            engine,
        }
    }

    pub(crate) async fn token(&self, auth: &str, body: &str) -> Resp {
        post_form(
            &self.http,
            &self.s.url("/oauth2/token"),
            &[("authorization", auth)],
            body,
        )
        .await
    }

    pub(crate) async fn code(&self) -> String {
        code_for(&self.http, &self.s, "web", REDIRECT).await
    }

    pub(crate) async fn refresh(&self, token: &str) -> Resp {
        self.token(
            &self.web,
            &format!("grant_type=refresh_token&refresh_token={token}"),
        )
        .await
    }

    /// Whether `token` is refused at the gateway within a second.
    pub(crate) async fn refused_within_a_second(&self, token: &str) -> bool {
        eventually(Duration::from_secs(1), || {
            let (http, url, t) = (
                self.http.clone(),
                self.s.url("/api/orders"),
                token.to_owned(),
            );
            async move {
                http.get(&url, &[("authorization", &format!("Bearer {t}"))])
                    .await
                    .status
                    == 401
            }
        })
        .await
        .is_some()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_grant_type_password_and_other_unsupported_grants() {
    for engine in engines() {
        let f = Fixture::new(engine).await;
        for g in [
            "password",
            "implicit",
            "urn:ietf:params:oauth:grant-type:device_code",
        ] {
            let r = f
                .token(
                    &f.web,
                    &format!(
                        "grant_type={}&username=alice&password={}",
                        enc(g),
                        enc(PASSWORD)
                    ),
                )
                .await;
            assert_eq!(
                (r.status, r.json()["error"].as_str()),
                (400, Some("unsupported_grant_type")),
                "{engine} {g}"
            );
            assert!(r.json().get("access_token").is_none());
        }
        // A client may not use a grant it was not registered for either.
        let r = f.token(&f.web, "grant_type=client_credentials").await;
        assert_eq!(r.json()["error"], "unauthorized_client", "{engine}");
        f.s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_wrong_client_secret() {
    for engine in engines() {
        let f = Fixture::new(engine).await;
        let r = f
            .token(
                &basic("worker", "kcs_wrong"),
                "grant_type=client_credentials",
            )
            .await;
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (401, Some("invalid_client")),
            "{engine}"
        );
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic "));
        // The right secret of another client, and credentials sent two ways at once.
        let r = f
            .token(
                &basic("worker", &f.web_secret),
                "grant_type=client_credentials",
            )
            .await;
        assert_eq!(r.status, 401, "{engine}");
        let secret = f.worker_secret.clone();
        let r = f
            .token(&basic("ghost", &secret), "grant_type=client_credentials")
            .await;
        assert_eq!(r.status, 401, "{engine}: an unknown client");
        let r = f
            .token(
                &f.worker,
                &format!("grant_type=client_credentials&client_secret={secret}"),
            )
            .await;
        assert_eq!(
            r.json()["error"],
            "invalid_request",
            "{engine}: two methods at once"
        );
        // The registered method only: client_secret_post for a client_secret_basic client.
        let r = post_form(
            &f.http,
            &f.s.url("/oauth2/token"),
            &[],
            &format!("grant_type=client_credentials&client_id=worker&client_secret={secret}"),
        )
        .await;
        assert_eq!(r.status, 401, "{engine}");
        let r = f.token(&f.worker, "grant_type=client_credentials").await;
        assert_eq!(r.status, 200, "{engine}: the right one works");
        f.s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_wrong_or_missing_pkce_verifier() {
    for engine in engines() {
        let f = Fixture::new(engine).await;
        let code = f.code().await;
        let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK";
        let r = redeem(&f.http, &f.s, &f.web, &code, REDIRECT, wrong).await;
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (400, Some("invalid_grant")),
            "{engine}"
        );
        let r = redeem(&f.http, &f.s, &f.web, &code, REDIRECT, VERIFIER).await;
        assert_eq!(
            r.json()["error"],
            "invalid_grant",
            "{engine}: the code is spent"
        );
        // The challenge itself as the verifier (a `plain` downgrade).
        let code = f.code().await;
        let r = redeem(&f.http, &f.s, &f.web, &code, REDIRECT, CHALLENGE).await;
        assert_eq!(r.json()["error"], "invalid_grant", "{engine}");
        // No verifier at all.
        let code = f.code().await;
        let r = f
            .token(
                &f.web,
                &format!(
                    "grant_type=authorization_code&code={code}&redirect_uri={}",
                    enc(REDIRECT)
                ),
            )
            .await;
        assert_eq!(r.json()["error"], "invalid_request", "{engine}");
        // Another redirect_uri than the authorization request's.
        let code = f.code().await;
        let r = redeem(
            &f.http,
            &f.s,
            &f.web,
            &code,
            "http://127.0.0.1:40001/cb",
            VERIFIER,
        )
        .await;
        assert_eq!(r.json()["error"], "invalid_grant", "{engine}");
        let audit = f.s.stop_and_audit().await;
        assert!(audit.contains("\"bad_code_verifier\""), "{audit}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_reused_code_and_its_tokens_revoked() {
    for engine in engines() {
        let f = Fixture::new(engine).await;
        let code = f.code().await;
        let r = redeem(&f.http, &f.s, &f.web, &code, REDIRECT, VERIFIER).await;
        assert_eq!(
            r.status,
            200,
            "{engine}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let first = r.json();
        assert!(first["id_token"].is_string() && first["refresh_token"].is_string());
        let access = first["access_token"].as_str().unwrap();
        assert_eq!(gateway(&f.http, &f.s, access).await, 200, "{engine}");
        let r = redeem(&f.http, &f.s, &f.web, &code, REDIRECT, VERIFIER).await;
        assert_eq!(r.json()["error"], "invalid_grant", "{engine}");
        assert!(
            f.refused_within_a_second(access).await,
            "{engine}: tokens of a reused code still work"
        );
        let r = f.refresh(first["refresh_token"].as_str().unwrap()).await;
        assert_eq!(
            r.json()["error"],
            "invalid_grant",
            "{engine}: the reused code's refresh token"
        );
        f.s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_used_refresh_token_and_its_family_revoked() {
    for engine in engines() {
        let f = Fixture::new(engine).await;
        let code = f.code().await;
        let t1 = redeem(&f.http, &f.s, &f.web, &code, REDIRECT, VERIFIER)
            .await
            .json();
        let r1 = t1["refresh_token"].as_str().unwrap();
        let t2 = f.refresh(r1).await.json();
        let r2 = t2["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(r1, r2, "rotated");
        let a2 = t2["access_token"].as_str().unwrap().to_owned();
        assert_eq!(gateway(&f.http, &f.s, &a2).await, 200, "{engine}");
        // Narrowing the scope on refresh is allowed; widening is not.
        let r = f
            .token(
                &f.web,
                &format!("grant_type=refresh_token&refresh_token={r2}&scope=admin"),
            )
            .await;
        assert_eq!(r.json()["error"], "invalid_scope", "{engine}");
        // Another client cannot use it.
        let r = f
            .token(
                &f.worker,
                &format!("grant_type=refresh_token&refresh_token={r2}"),
            )
            .await;
        assert_eq!(r.json()["error"], "unauthorized_client", "{engine}");
        let r = f.refresh(r1).await;
        assert_eq!(
            r.json()["error"],
            "invalid_grant",
            "{engine}: a used refresh token"
        );
        let r = f.refresh(&r2).await;
        assert_eq!(
            r.json()["error"],
            "invalid_grant",
            "{engine}: its family is revoked"
        );
        assert!(
            f.refused_within_a_second(&a2).await,
            "{engine}: access tokens of a revoked family still work"
        );
        f.s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_revoked_access_token_at_the_gateway() {
    for engine in engines() {
        let f = Fixture::new(engine).await;
        let at = f
            .token(&f.worker, "grant_type=client_credentials")
            .await
            .json()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(gateway(&f.http, &f.s, &at).await, 200, "{engine}");
        let introspect = |token: String| {
            let (http, url, auth) = (
                f.http.clone(),
                f.s.url("/oauth2/introspect"),
                f.worker.clone(),
            );
            async move {
                post_form(
                    &http,
                    &url,
                    &[("authorization", &auth)],
                    &format!("token={token}"),
                )
                .await
            }
        };
        let intro = introspect(at.clone()).await.json();
        assert_eq!(
            (intro["active"].as_bool(), intro["client_id"].as_str()),
            (Some(true), Some("worker")),
            "{engine}"
        );
        // Another client cannot revoke it; unknown tokens get 200 all the same.
        let revoke = |auth: String, token: String| {
            let (http, url) = (f.http.clone(), f.s.url("/oauth2/revoke"));
            async move {
                post_form(
                    &http,
                    &url,
                    &[("authorization", &auth)],
                    &format!("token={token}"),
                )
                .await
                .status
            }
        };
        assert_eq!(revoke(f.web.clone(), at.clone()).await, 200);
        assert_eq!(revoke(f.web.clone(), "nonsense".into()).await, 200);
        assert_eq!(
            gateway(&f.http, &f.s, &at).await,
            200,
            "{engine}: revoked by the wrong client"
        );
        assert_eq!(revoke(f.worker.clone(), at.clone()).await, 200);
        assert!(
            f.refused_within_a_second(&at).await,
            "{engine}: a revoked access token still works"
        );
        assert_eq!(
            introspect(at.clone()).await.json()["active"],
            false,
            "{engine}"
        );
        // Introspection needs client authentication.
        let r = post_form(
            &f.http,
            &f.s.url("/oauth2/introspect"),
            &[],
            &format!("token={at}"),
        )
        .await;
        assert_eq!(r.status, 401, "{engine}");
        // The client's name disabled: its tokens stop at the gateway and at introspection
        // (another client asking), and it gets no new one; enabled again, it does.
        let at = f
            .token(&f.worker, "grant_type=client_credentials")
            .await
            .json()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        f.s.kc.cli_ok(&["user", "disable", "worker"]);
        assert!(
            f.refused_within_a_second(&at).await,
            "{engine}: a disabled subject's token still works"
        );
        let intro = post_form(
            &f.http,
            &f.s.url("/oauth2/introspect"),
            &[("authorization", &f.web)],
            &format!("token={at}"),
        )
        .await
        .json();
        assert_eq!(intro["active"], false, "{engine}: {intro}");
        let r = f.token(&f.worker, "grant_type=client_credentials").await;
        assert_eq!(r.status, 401, "{engine}: a disabled client gets no token");
        f.s.kc.cli_ok(&["user", "enable", "worker"]);
        let back = eventually(Duration::from_secs(1), || async {
            f.token(&f.worker, "grant_type=client_credentials")
                .await
                .status
                == 200
        })
        .await;
        assert!(back.is_some(), "{engine}: enabled again");
        // A revoked client's tokens stop too.
        let at = f
            .token(&f.worker, "grant_type=client_credentials")
            .await
            .json()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(gateway(&f.http, &f.s, &at).await, 200);
        f.s.kc.cli_ok(&["client", "revoke", "worker"]);
        assert!(
            f.refused_within_a_second(&at).await,
            "{engine}: a revoked client's token still works"
        );
        let r = f.token(&f.worker, "grant_type=client_credentials").await;
        assert_eq!(
            r.status, 401,
            "{}: a revoked client gets no token",
            f.engine
        );
        f.s.stop().await;
    }
}

/// The login form: CSRF token required; failed logins count toward the throttle; and
/// consent for a third-party client is asked, remembered, and `deny` is honoured.
#[tokio::test(flavor = "multi_thread")]
async fn refused_login_without_csrf_token_and_the_consent_flow() {
    let s = Server::start("sqlite").await;
    s.client(
        "app",
        &[
            "--public",
            "--redirect-uri",
            "https://app.example/cb",
            "--scope",
            "orders:read",
        ],
    );
    // (The consent page shows, and a token carries, only scopes alice holds.)
    s.kc.add_user("alice", PASSWORD, &["--scope", "orders:read"]);
    let http = Http::new();
    let url = s.url(&format!(
        "/oauth2/authorize?response_type=code&client_id=app&redirect_uri={}&scope=orders%3Aread&code_challenge={CHALLENGE}&code_challenge_method=S256",
        enc("https://app.example/cb")
    ));
    let login = http.get(&url, &[]).await.header("location").unwrap();
    let page = http.get(&s.url(&login), &[]).await;
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(
        html.contains("name=\"viewport\"") && html.contains("autocomplete=\"current-password\"")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert!(!html.contains("<script"), "no JavaScript");
    let csrf_cookie = cookie(&page, "kc_csrf").unwrap();
    let set = page.header_all("set-cookie").join("\n");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    let request = hidden(&html, "request");
    let form = |csrf: &str, pw: &str| {
        format!(
            "csrf={}&request={}&username=alice&password={}",
            enc(csrf),
            enc(&request),
            enc(pw)
        )
    };

    // CSRF: no token, a token for another cookie, no cookie.
    let r = post_form(
        &http,
        &s.url("/_keycard/login"),
        &[("cookie", &csrf_cookie)],
        &format!(
            "request={}&username=alice&password={}",
            enc(&request),
            enc(PASSWORD)
        ),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(cookie(&r, "kc_session").is_none());
    let r = post_form(
        &http,
        &s.url("/_keycard/login"),
        &[("cookie", "kc_csrf=AAAAAAAAAAAAAAAAAAAAAA")],
        &form(&hidden(&html, "csrf"), PASSWORD),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = post_form(
        &http,
        &s.url("/_keycard/login"),
        &[],
        &form(&hidden(&html, "csrf"), PASSWORD),
    )
    .await;
    assert_eq!(r.status, 403);

    // A wrong password: the page again, 401, no session.
    let r = post_form(
        &http,
        &s.url("/_keycard/login"),
        &[("cookie", &csrf_cookie)],
        &form(&hidden(&html, "csrf"), "wrong password here"),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(String::from_utf8_lossy(&r.body).contains("role=\"alert\""));
    assert!(cookie(&r, "kc_session").is_none());
    // A password typed into the user name field: refused, and never written to the audit.
    let typo = form(&hidden(&html, "csrf"), PASSWORD)
        .replace("username=alice", "username=Tr0ub4dor-typed-here");
    let r = post_form(
        &http,
        &s.url("/_keycard/login"),
        &[("cookie", &csrf_cookie)],
        &typo,
    )
    .await;
    assert_eq!(r.status, 401);

    // The right one: session, then consent (a third-party client).
    let r = post_form(
        &http,
        &s.url("/_keycard/login"),
        &[("cookie", &csrf_cookie)],
        &form(&hidden(&html, "csrf"), PASSWORD),
    )
    .await;
    assert_eq!(r.status, 303);
    let session = cookie(&r, "kc_session").unwrap();
    let r = http
        .get(
            &s.url(&r.header("location").unwrap()),
            &[("cookie", &session)],
        )
        .await;
    let consent = r.header("location").unwrap();
    assert!(consent.starts_with("/_keycard/consent?"), "{consent}");
    let page = http.get(&s.url(&consent), &[("cookie", &session)]).await;
    let html = String::from_utf8_lossy(&page.body).to_string();
    assert!(html.contains("orders:read"));
    let consent_form = |decision: &str, csrf: &str| {
        format!(
            "csrf={}&request={}&decision={decision}",
            enc(csrf),
            enc(&hidden(&html, "request"))
        )
    };
    // Consent without its CSRF token, and with the login's: refused.
    let r = post_form(
        &http,
        &s.url("/_keycard/consent"),
        &[("cookie", &session)],
        &consent_form("allow", "forged"),
    )
    .await;
    assert_eq!(r.status, 403);
    // Deny: access_denied at the client.
    let r = post_form(
        &http,
        &s.url("/_keycard/consent"),
        &[("cookie", &session)],
        &consent_form("deny", &hidden(&html, "csrf")),
    )
    .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        query_param(&r.header("location").unwrap(), "error").as_deref(),
        Some("access_denied")
    );
    // Allow: a code; and the next authorization skips the consent page.
    let r = post_form(
        &http,
        &s.url("/_keycard/consent"),
        &[("cookie", &session)],
        &consent_form("allow", &hidden(&html, "csrf")),
    )
    .await;
    assert!(query_param(&r.header("location").unwrap(), "code").is_some());
    let r = http.get(&url, &[("cookie", &session)]).await;
    assert!(
        query_param(&r.header("location").unwrap(), "code").is_some(),
        "consent remembered"
    );
    // prompt=none without a session: login_required at the client, no page.
    let r = http.get(&format!("{url}&prompt=none"), &[]).await;
    assert_eq!(
        query_param(&r.header("location").unwrap(), "error").as_deref(),
        Some("login_required")
    );
    // A forged session cookie is no session.
    let r = http.get(&url, &[("cookie", &format!("{session}x"))]).await;
    assert!(r.header("location").unwrap().starts_with("/_keycard/login"));
    // A password change ends the session.
    let out = s.kc.cli_stdin(
        &["user", "passwd", "alice", "--password-stdin"],
        "another long passphrase 42\n",
    );
    assert!(out.status.success());
    let ended = eventually(Duration::from_secs(2), || {
        let (http, url, c) = (http.clone(), url.clone(), session.clone());
        async move {
            http.get(&url, &[("cookie", &c)])
                .await
                .header("location")
                .unwrap()
                .starts_with("/_keycard/login")
        }
    })
    .await;
    assert!(ended.is_some(), "a password change must end sessions");
    let audit = s.stop_and_audit().await;
    assert!(audit.contains("\"unknown_credential\""), "{audit}");
    assert!(
        !audit.contains("Tr0ub4dor"),
        "an unknown user name reached the audit: {audit}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_count_toward_the_throttle() {
    let s = {
        // A tight throttle for this test only.
        let mut server = Server::start("sqlite").await;
        server.kc.stop();
        let cfg = std::fs::read_to_string(&server.kc.config)
            .unwrap()
            .replace("failed_auth = \"100000/min\"", "failed_auth = \"3/min\"");
        std::fs::write(&server.kc.config, cfg).unwrap();
        server.kc.start();
        server
    };
    s.client(
        "app",
        &[
            "--public",
            "--redirect-uri",
            "https://app.example/cb",
            "--first-party",
        ],
    );
    s.kc.add_user("alice", PASSWORD, &[]);
    let http = Http::new();
    let url = s.url(&format!(
        "/oauth2/authorize?response_type=code&client_id=app&redirect_uri={}&code_challenge={CHALLENGE}&code_challenge_method=S256",
        enc("https://app.example/cb")
    ));
    let login = http.get(&url, &[]).await.header("location").unwrap();
    let page = http.get(&s.url(&login), &[]).await;
    let csrf_cookie = cookie(&page, "kc_csrf").unwrap();
    let html = String::from_utf8_lossy(&page.body).to_string();
    let form = |pw: &str| {
        format!(
            "csrf={}&request={}&username=alice&password={}",
            enc(&hidden(&html, "csrf")),
            enc(&hidden(&html, "request")),
            enc(pw)
        )
    };
    for _ in 0..3 {
        let r = post_form(
            &http,
            &s.url("/_keycard/login"),
            &[("cookie", &csrf_cookie)],
            &form("wrong password here"),
        )
        .await;
        assert_eq!(r.status, 401);
    }
    // Even the right password is refused now.
    let r = post_form(
        &http,
        &s.url("/_keycard/login"),
        &[("cookie", &csrf_cookie)],
        &form(PASSWORD),
    )
    .await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    s.stop().await;
}

/// Discovery metadata has what RFC 8414 and RFC 9207 ask for.
#[tokio::test(flavor = "multi_thread")]
async fn discovery_metadata() {
    let s = Server::start("sqlite").await;
    let http = Http::new();
    let m = http
        .get(&s.url("/.well-known/oauth-authorization-server"), &[])
        .await
        .json();
    assert_eq!(m["issuer"], s.base.as_str());
    assert_eq!(
        m["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert_eq!(m["response_types_supported"], serde_json::json!(["code"]));
    assert!(!m["grant_types_supported"].to_string().contains("password"));
    assert!(!m["grant_types_supported"].to_string().contains("implicit"));
    assert_eq!(m["response_modes_supported"], serde_json::json!(["query"]));
    assert_eq!(m["request_parameter_supported"], false);
    assert_eq!(m["request_uri_parameter_supported"], false);
    assert_eq!(m["claims_parameter_supported"], false);
    assert_eq!(m["end_session_endpoint"], s.url("/oauth2/logout"));
    assert_eq!(
        m["scopes_supported"],
        serde_json::json!(["openid", "profile"])
    );
    for claim in ["sub", "auth_time", "nonce", "at_hash", "preferred_username"] {
        assert!(
            m["claims_supported"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == claim),
            "{claim}"
        );
    }
    // Certificate-bound tokens need a client CA: none here, so none advertised.
    assert_eq!(m["tls_client_certificate_bound_access_tokens"], false);
    assert!(
        !m["token_endpoint_auth_methods_supported"]
            .to_string()
            .contains("tls_client_auth")
    );
    let o = http
        .get(&s.url("/.well-known/openid-configuration"), &[])
        .await
        .json();
    assert_eq!(m, o);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_reused_totp_code() {
    let s = Server::start("sqlite").await;
    s.client(
        "app",
        &[
            "--public",
            "--first-party",
            "--redirect-uri",
            "https://app.example/cb",
            "--scope",
            "orders:read",
            "--scope",
            "openid",
        ],
    );
    s.kc.add_user("alice", PASSWORD, &[]);
    let totp: serde_json::Value =
        serde_json::from_str(&s.kc.cli_ok(&["user", "totp", "alice", "--json"])).unwrap();
    let seed = keycard_core::totp::base32_decode(totp["secret"].as_str().unwrap()).unwrap();
    let http = Http::new();
    let url = authorize_url(&s, "app", "https://app.example/cb", "");
    // Keep clear of a step boundary so "now" is one step for the whole test.
    while keycard_server::now_secs() % 30 > 25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let step = keycard_core::totp::step_at(keycard_server::now_secs());
    let code = keycard_core::totp::code_at_step(&seed, step);
    // Without a code, and with a wrong one: refused.
    assert_eq!(login(&http, &s, &url, "").await.status, 401);
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    assert_eq!(login(&http, &s, &url, &wrong).await.status, 401);
    // A code of two steps ago: outside the window.
    let old = keycard_core::totp::code_at_step(&seed, step - 2);
    if old != code {
        assert_eq!(login(&http, &s, &url, &old).await.status, 401);
    }
    // The right one works once.
    let r = login(&http, &s, &url, &code).await;
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    assert!(cookie(&r, "kc_session").is_some());
    let again = login(&http, &s, &url, &code).await;
    assert_eq!(again.status, 401, "a TOTP code works once");
    assert!(cookie(&again, "kc_session").is_none());
    // The previous step's code is refused too once a later step was used.
    let previous = keycard_core::totp::code_at_step(&seed, step - 1);
    if previous != code {
        assert_eq!(login(&http, &s, &url, &previous).await.status, 401);
    }
    let audit = s.stop_and_audit().await;
    assert!(audit.contains("\"bad_totp\""), "{audit}");
}

/// The gateway enforces a token's scopes (403) and its audience (RFC 8707 `resource`: a
/// token for one path of the gateway is refused on another).
#[tokio::test(flavor = "multi_thread")]
async fn oauth2_tokens_meet_route_scopes_and_audiences() {
    let s = Server::start("sqlite").await;
    let secret = s
        .client(
            "worker",
            &[
                "--grant",
                "client_credentials",
                "--scope",
                "orders:read",
                "--scope",
                "other",
            ],
        )
        .unwrap();
    let auth = basic("worker", &secret);
    let http = Http::new();
    let token = |body: String| {
        let (http, url, auth) = (http.clone(), s.url("/oauth2/token"), auth.clone());
        async move { post_form(&http, &url, &[("authorization", &auth)], &body).await }
    };
    // Without the route's scope: 403 insufficient_scope.
    let t = token("grant_type=client_credentials&scope=other".into())
        .await
        .json();
    let r = http
        .get(
            &s.url("/api/orders"),
            &[(
                "authorization",
                &format!("Bearer {}", t["access_token"].as_str().unwrap()),
            )],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "insufficient_scope");
    // A scope the client does not have: no token.
    let r = token("grant_type=client_credentials&scope=admin".into()).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    // A token for the /api/ resource works there; one for /other/ does not.
    let api = token(format!(
        "grant_type=client_credentials&resource={}",
        enc(&s.url("/api/"))
    ))
    .await
    .json();
    let other = token(format!(
        "grant_type=client_credentials&resource={}",
        enc(&s.url("/other/"))
    ))
    .await
    .json();
    for (t, want) in [(&api, 200), (&other, 401)] {
        let r = http
            .get(
                &s.url("/api/orders"),
                &[(
                    "authorization",
                    &format!("Bearer {}", t["access_token"].as_str().unwrap()),
                )],
            )
            .await;
        assert_eq!(r.status, want);
    }
    // A resource that is not keycard's: invalid_target.
    let r = token(format!(
        "grant_type=client_credentials&resource={}",
        enc("https://elsewhere.example/api")
    ))
    .await;
    assert_eq!(r.json()["error"], "invalid_target");
    s.stop().await;
}

/// Two instances on one PostgreSQL: a code redeemed at one cannot be redeemed at the other
/// (the store's conditional UPDATE decides, whichever instance asks).
#[tokio::test(flavor = "multi_thread")]
async fn a_code_redeemed_at_one_instance_is_refused_at_another() {
    if crate::common::postgres_admin_url().is_none() {
        eprintln!("note: KEYCARD_TEST_POSTGRES_URL is not set; the two-instance test is skipped");
        return;
    }
    let mut f = Fixture::new("postgres").await;
    // A second instance: same store, master key and issuer, another port.
    let port_b = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let port_a = f.s.base.rsplit(':').next().unwrap().to_owned();
    let cfg = std::fs::read_to_string(&f.s.kc.config).unwrap();
    std::fs::write(
        &f.s.kc.config,
        cfg.replacen(
            &format!("listen = \"127.0.0.1:{port_a}\""),
            &format!("listen = \"127.0.0.1:{port_b}\""),
            1,
        ),
    )
    .unwrap();
    f.s.kc.start();
    std::fs::write(&f.s.kc.config, cfg).unwrap();
    let code = f.code().await;
    let at_b = post_form(
        &f.http,
        &format!("http://127.0.0.1:{port_b}/oauth2/token"),
        &[("authorization", &f.web)],
        &format!(
            "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={VERIFIER}",
            enc(REDIRECT)
        ),
    )
    .await;
    assert_eq!(at_b.status, 200, "{}", String::from_utf8_lossy(&at_b.body));
    let at_a = redeem(&f.http, &f.s, &f.web, &code, REDIRECT, VERIFIER).await;
    assert_eq!(at_a.json()["error"], "invalid_grant");
    f.s.stop().await;
}

/// A code presented by a client it was not issued to is refused and not spent: its own
/// client redeems it afterwards, and nothing was revoked.
#[tokio::test(flavor = "multi_thread")]
async fn a_code_presented_by_another_client_is_not_spent() {
    for engine in engines() {
        let f = Fixture::new(engine).await;
        let other =
            f.s.client(
                "web2",
                &[
                    "--redirect-uri",
                    "http://127.0.0.1/cb",
                    "--scope",
                    "openid",
                    "--first-party",
                ],
            )
            .unwrap();
        let code = f.code().await;
        let r = redeem(
            &f.http,
            &f.s,
            &basic("web2", &other),
            &code,
            REDIRECT,
            VERIFIER,
        )
        .await;
        assert_eq!(r.json()["error"], "invalid_grant", "{engine}");
        let r = redeem(&f.http, &f.s, &f.web, &code, REDIRECT, VERIFIER).await;
        assert_eq!(
            r.status,
            200,
            "{engine}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let access = r.json()["access_token"].as_str().unwrap().to_owned();
        assert_eq!(gateway(&f.http, &f.s, &access).await, 200, "{engine}");
        f.s.stop().await;
    }
}

/// A refresh refused for its scope leaves the presented refresh token usable: it was not
/// rotated away. Disabling the user ends the grant for good.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_refresh_leaves_its_token_usable() {
    for engine in engines() {
        let f = Fixture::new(engine).await;
        let code = f.code().await;
        let t = redeem(&f.http, &f.s, &f.web, &code, REDIRECT, VERIFIER)
            .await
            .json();
        let r1 = t["refresh_token"].as_str().unwrap().to_owned();
        let r = f
            .token(
                &f.web,
                &format!("grant_type=refresh_token&refresh_token={r1}&scope=admin"),
            )
            .await;
        assert_eq!(r.json()["error"], "invalid_scope", "{engine}");
        let r = f.refresh(&r1).await;
        assert_eq!(
            r.status,
            200,
            "{engine}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let r2 = r.json()["refresh_token"].as_str().unwrap().to_owned();
        let access = r.json()["access_token"].as_str().unwrap().to_owned();
        // The user disabled: refused, and the grant ends with it (re-enabling the user
        // does not bring back what was granted before).
        f.s.kc.cli_ok(&["user", "disable", "alice"]);
        assert!(f.refused_within_a_second(&access).await, "{engine}");
        assert_eq!(
            f.refresh(&r2).await.json()["error"],
            "invalid_grant",
            "{engine}"
        );
        f.s.kc.cli_ok(&["user", "enable", "alice"]);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(gateway(&f.http, &f.s, &access).await, 401, "{engine}");
        assert_eq!(f.refresh(&r2).await.status, 400, "{engine}");
        f.s.stop().await;
    }
}

/// A token carries only what its user holds: alice (`orders:read`) signing in through a
/// client allowed `admin`, and asking for it, gets `openid orders:read`, no `admin`.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_carries_only_what_its_user_holds() {
    for engine in engines() {
        let f = Fixture::new(engine).await;
        let secret =
            f.s.client(
                "wide",
                &[
                    "--redirect-uri",
                    "http://127.0.0.1/cb",
                    "--scope",
                    "openid",
                    "--scope",
                    "orders:read",
                    "--scope",
                    "admin",
                    "--first-party",
                ],
            )
            .unwrap();
        let url = authorize_url(&f.s, "wide", REDIRECT, "").replace(
            "scope=openid%20orders%3Aread",
            "scope=openid%20orders%3Aread%20admin",
        );
        let r = login(&f.http, &f.s, &url, "").await;
        assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
        let session = cookie(&r, "kc_session").unwrap();
        let r = f
            .http
            .get(
                &f.s.url(&r.header("location").unwrap()),
                &[("cookie", &session)],
            )
            .await;
        assert_eq!(r.status, 302, "{engine}");
        let code = query_param(&r.header("location").unwrap(), "code").unwrap();
        let r = redeem(
            &f.http,
            &f.s,
            &basic("wide", &secret),
            &code,
            REDIRECT,
            VERIFIER,
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "{engine}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["scope"], "openid orders:read", "{engine}");
        // And asking again from the signed-in session: the same.
        let r = f.http.get(&url, &[("cookie", &session)]).await;
        assert_eq!(r.status, 302, "{engine}");
        let code = query_param(&r.header("location").unwrap(), "code").unwrap();
        let r = redeem(
            &f.http,
            &f.s,
            &basic("wide", &secret),
            &code,
            REDIRECT,
            VERIFIER,
        )
        .await;
        assert_eq!(r.json()["scope"], "openid orders:read", "{engine}");
        f.s.stop().await;
    }
}

/// A client introspects its own tokens only, unless it holds `keycard:introspect`: to any
/// other, another client's token is inactive.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_introspects_only_its_own_tokens() {
    for engine in engines() {
        let f = Fixture::new(engine).await;
        let rs =
            f.s.client(
                "resource-server",
                &[
                    "--grant",
                    "client_credentials",
                    "--scope",
                    "keycard:introspect",
                ],
            )
            .unwrap();
        let at = f
            .token(&f.worker, "grant_type=client_credentials")
            .await
            .json()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let code = f.code().await;
        let rt = redeem(&f.http, &f.s, &f.web, &code, REDIRECT, VERIFIER)
            .await
            .json()["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let ask = |auth: String, token: String| {
            let (http, url) = (f.http.clone(), f.s.url("/oauth2/introspect"));
            async move {
                post_form(
                    &http,
                    &url,
                    &[("authorization", &auth)],
                    &format!("token={token}"),
                )
                .await
                .json()["active"]
                    .clone()
            }
        };
        let rs = basic("resource-server", &rs);
        for (who, auth, token, active) in [
            ("worker, its own access token", &f.worker, &at, true),
            ("web, another's access token", &f.web, &at, false),
            ("the resource server, any access token", &rs, &at, true),
            ("web, its own refresh token", &f.web, &rt, true),
            ("worker, another's refresh token", &f.worker, &rt, false),
            ("the resource server, any refresh token", &rs, &rt, true),
        ] {
            assert_eq!(
                ask(auth.clone(), token.clone()).await,
                active,
                "{engine}: {who}"
            );
        }
        f.s.stop().await;
    }
}

/// A user and a client cannot share a name (RFC 9700 §4.15): a token's subject would name
/// either. Refused at creation, either way round, with exit code 2 and the reason.
#[tokio::test(flavor = "multi_thread")]
async fn users_and_clients_cannot_share_a_name() {
    let s = Server::start("sqlite").await;
    s.client(
        "billing",
        &["--grant", "client_credentials", "--scope", "orders:read"],
    )
    .unwrap();
    let out = s.kc.cli_stdin(
        &["user", "add", "billing", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("OAuth client"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.kc.add_user("carol", PASSWORD, &[]);
    let out = s.kc.cli(&[
        "client",
        "create",
        "carol",
        "--grant",
        "client_credentials",
        "--scope",
        "orders:read",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("user's name"));
    s.stop().await;
}
