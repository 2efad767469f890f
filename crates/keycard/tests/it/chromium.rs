//! The authorization code flow in a real browser: headless Chromium (Debian's), driven by
//! Playwright through the login and consent pages at a phone's size (`browser/login.mjs`),
//! then the code redeemed with PKCE by a public client; then an application behind keycard
//! is visited (it must not receive keycard's cookies) and the user signs out (the next
//! authorization request asks for a sign-in). The login page's screenshot is kept in
//! `target/test-artifacts/login-page.png`.

use std::path::PathBuf;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::common::http::Http;
use crate::common::tools;
use crate::oauth::{CHALLENGE, PASSWORD, Server, VERIFIER, post_form};

fn browser_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/browser"))
}

#[tokio::test(flavor = "multi_thread")]
async fn login_and_consent_in_headless_chromium() {
    if !tools::chromium_playwright(&browser_dir()) {
        return;
    }
    // An application on a public route: the browser carries keycard's cookies to it.
    let s = Server::start_with(
        "sqlite",
        &crate::common::route("/app/", "{upstream}", "public = true"),
    )
    .await;
    s.client(
        "spa",
        &[
            "--public",
            "--redirect-uri",
            "http://127.0.0.1/cb",
            "--scope",
            "openid",
            "--scope",
            "orders:read",
        ],
    );
    s.kc.add_user("bob", PASSWORD, &["--scope", "orders:read"]);
    let totp: serde_json::Value =
        serde_json::from_str(&s.kc.cli_ok(&["user", "totp", "bob", "--json"])).unwrap();
    let seed = keycard_core::totp::base32_decode(totp["secret"].as_str().unwrap()).unwrap();
    let now = keycard_server::now_secs();
    let code_now = keycard_core::totp::code_at_step(&seed, keycard_core::totp::step_at(now));

    // The echo upstream stands in for the app's callback (any port on 127.0.0.1, RFC 8252).
    let redirect = format!("{}/cb", s.upstream);
    let authorize = s.url(&format!(
        "/oauth2/authorize?response_type=code&client_id=spa&redirect_uri={}&scope=openid%20orders%3Aread&state=browser-state&nonce=n-1&code_challenge={CHALLENGE}&code_challenge_method=S256",
        form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    ));
    let artifacts = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/test-artifacts"
    ));
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("login-page.png");
    let _ = std::fs::remove_file(&shot);
    let cfg = serde_json::json!({
        "authorize_url": authorize,
        "username": "bob",
        "password": PASSWORD,
        "totp": code_now,
        "screenshot": shot,
        "redirect_prefix": redirect,
        "proxied_url": s.url("/app/page"),
        "logout_url": s.url("/oauth2/logout"),
    });
    let cfg_path = s.kc.path("browser.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let mut node = tokio::process::Command::new("node")
        .arg(browser_dir().join("login.mjs"))
        .arg(&cfg_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(node.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(std::time::Duration::from_secs(90), lines.next_line())
            .await
            .expect("the browser run took over 90 s")
            .unwrap()
    };
    let Some(first) = next_line().await else {
        let out = node.wait_with_output().await.unwrap();
        panic!("login.mjs: {}", String::from_utf8_lossy(&out.stderr));
    };
    let result: serde_json::Value = serde_json::from_str(&first).unwrap();
    // The application saw none of keycard's cookies (the browser sent the session one).
    let app_cookie = result["appCookie"].as_str().unwrap_or("");
    assert!(
        !app_cookie.contains("kc_session") && !app_cookie.contains("kc_csrf"),
        "an application received keycard's cookies: {app_cookie}"
    );

    assert!(
        result["overflow"].as_i64().unwrap() <= 0,
        "the login page scrolls sideways on a phone"
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 1000,
        "a screenshot of the login page"
    );

    let url = result["url"].as_str().unwrap();
    let query: std::collections::HashMap<String, String> =
        form_urlencoded::parse(url.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(query["state"], "browser-state");
    assert_eq!(query["iss"], s.base);
    let http = Http::new();
    let r = post_form(
        &http,
        &s.url("/oauth2/token"),
        &[],
        &format!(
            "grant_type=authorization_code&client_id=spa&code={}&redirect_uri={}&code_verifier={VERIFIER}",
            query["code"],
            form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let tokens = r.json();
    assert!(tokens["id_token"].is_string() && tokens["refresh_token"].is_string());
    let at = tokens["access_token"].as_str().unwrap();
    let g = http
        .get(
            &s.url("/api/orders"),
            &[("authorization", &format!("Bearer {at}"))],
        )
        .await;
    assert_eq!(g.status, 200);
    assert_eq!(
        g.upstream_header("x-keycard-subject").as_deref(),
        Some("bob")
    );
    assert_eq!(
        g.upstream_header("x-keycard-subject-kind").as_deref(),
        Some("user")
    );

    // Signing out in the browser ends the session and what was granted in it.
    let mut stdin = node.stdin.take().unwrap();
    stdin.write_all(b"logout\n").await.unwrap();
    let second = next_line()
        .await
        .expect("login.mjs stopped before signing out");
    let after: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(after["after"], "Sign in", "the session outlived the logout");
    let status = node.wait().await.unwrap();
    assert!(status.success());
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let r = post_form(
        &http,
        &s.url("/oauth2/token"),
        &[],
        &format!("grant_type=refresh_token&client_id=spa&refresh_token={refresh}"),
    )
    .await;
    assert_eq!(r.status, 400, "the grant outlived the logout");
    s.stop().await;
}
