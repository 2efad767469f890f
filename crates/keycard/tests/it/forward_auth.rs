//! Forward-auth: `/_keycard/verify` answered directly, and behind a real nginx `auth_request`
//! using the configuration shipped in `examples/nginx/`.

use crate::common::nginx::{self, Nginx, free_port};
use crate::common::{Keycard, http::Http, pairs, tools, upstream};

const ROUTES: &str = "[[routes]]\nprefix = \"/api/\"\n\n[[routes]]\nprefix = \"/admin/\"\nscopes = [\"admin\"]\n\n[[routes]]\nprefix = \"/public/\"\npublic = true\n";

#[tokio::test(flavor = "multi_thread")]
async fn verify_answers_with_identity_headers_or_the_refusal() {
    let mut kc = Keycard::new(None, ROUTES);
    // The test is the proxy: forward-auth answers trusted proxies only.
    kc.trust_proxies("127.0.0.1/32");
    kc.start();
    let (id, key) = kc.create_key("svc", &["read"], &[]);
    let http = Http::new();
    let verify = kc.url("/_keycard/verify");

    let r = http
        .get(
            &verify,
            &[
                ("x-forwarded-uri", "/api/orders?id=1"),
                ("x-forwarded-method", "GET"),
                ("x-api-key", &key),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    // No body, allowed or refused: nginx pools an auth connection only once its answer is
    // read whole, and it reads an auth subrequest's head alone.
    assert!(r.body.is_empty(), "{:?}", r.body);
    assert_eq!(r.header("content-length").as_deref(), Some("0"));
    assert_eq!(r.header("x-keycard-error"), None);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(r.header("x-keycard-subject").as_deref(), Some("svc"));
    assert_eq!(r.header("x-keycard-method").as_deref(), Some("api_key"));
    assert_eq!(r.header("x-keycard-scopes").as_deref(), Some("read"));
    assert_eq!(
        r.header("x-keycard-credential").as_deref(),
        Some(id.as_str())
    );
    // The key as a bearer token; the method defaults to the request's own.
    let r = http
        .get(
            &verify,
            &[
                ("x-forwarded-uri", "/api/orders"),
                ("authorization", &format!("Bearer {key}")),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    // nginx's name is read only when configured (`forward_auth.uri_header`), never as a
    // fallback: alone it is no original URI, beside the configured one it is refused.
    for h in [
        &[("x-original-uri", "/api/orders")][..],
        &[
            ("x-original-uri", "/public/x"),
            ("x-forwarded-uri", "/api/orders"),
        ],
    ] {
        let mut h = h.to_vec();
        h.push(("x-api-key", &key));
        assert_eq!(http.get(&verify, &h).await.status, 400, "{h:?}");
    }

    let r = http
        .get(&verify, &[("x-forwarded-uri", "/api/orders")])
        .await;
    assert_eq!(r.status, 401);
    // Every challenge in one field, the schemes a browser knows first (it reads only the
    // first of a field).
    let challenges = r.header_all("www-authenticate");
    assert_eq!(challenges.len(), 1, "{challenges:?}");
    assert!(challenges[0].starts_with("Digest realm="), "{challenges:?}");
    assert!(
        challenges[0]
            .ends_with(r#", Basic realm="keycard", charset="UTF-8", Bearer realm="keycard""#),
        "{challenges:?}"
    );
    assert_eq!(r.header("x-keycard-subject"), None);
    assert!(r.body.is_empty(), "{:?}", r.body);
    assert_eq!(r.header("content-length").as_deref(), Some("0"));
    assert_eq!(r.header("content-type"), None);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(r.header("x-keycard-error").as_deref(), Some("unauthorized"));
    // A wrong key is refused the same way as none: the header says no more than the status.
    let r = http
        .get(
            &verify,
            &[
                ("x-forwarded-uri", "/api/orders"),
                ("x-api-key", "kc_wrong"),
            ],
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.body.is_empty(), "{:?}", r.body);
    assert_eq!(r.header("x-keycard-error").as_deref(), Some("unauthorized"));
    let r = http
        .get(
            &verify,
            &[("x-forwarded-uri", "/admin/x"), ("x-api-key", &key)],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-keycard-subject"), None);
    assert!(r.body.is_empty(), "{:?}", r.body);
    assert_eq!(
        r.header("x-keycard-error").as_deref(),
        Some("insufficient_scope")
    );
    let r = http
        .get(
            &verify,
            &[
                ("x-forwarded-uri", "/public/x"),
                ("x-keycard-subject", "root"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-keycard-subject"), None);
    // Without the original URI there is nothing to decide on; unsafe paths are refused. A
    // 400 tells the operator what the proxy sends wrong, in its body.
    let r = http.get(&verify, &[("x-api-key", &key)]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-keycard-error").as_deref(), Some("bad_request"));
    assert!(String::from_utf8_lossy(&r.body).contains("no_original_uri"));
    assert_eq!(
        http.get(&verify, &[("x-forwarded-uri", "/public/../admin/x")])
            .await
            .status,
        400
    );
    assert_eq!(
        http.get(&verify, &[("x-forwarded-uri", "/public/%61dmin/x")])
            .await
            .status,
        400
    );
    let r = http
        .get(&verify, &[("x-forwarded-uri", "/elsewhere")])
        .await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty(), "{:?}", r.body);
    assert_eq!(r.header("x-keycard-error").as_deref(), Some("not_found"));

    // Prefix mode (Envoy's HTTP service with `path_prefix`): the original target follows
    // /_keycard/verify, under the same path rules, and only there.
    let r = http
        .get(&format!("{verify}/api/orders?id=1"), &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-keycard-subject").as_deref(), Some("svc"));
    let r = http
        .get(&format!("{verify}/admin/x"), &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, 403);
    let r = http
        .get(&format!("{verify}/elsewhere"), &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, 404);
    for path in [
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/%2E%2E/admin/x",
        "//admin/x",
    ] {
        let r = http
            .get(&format!("{verify}{path}"), &[("x-api-key", &key)])
            .await;
        assert_eq!(r.status, 400, "{path}");
    }
    // The target named twice, in the path and a header: refused, whichever is the lie.
    for named in ["/public/x", "/api/orders"] {
        let r = http
            .get(
                &format!("{verify}/api/orders"),
                &[("x-api-key", &key), ("x-forwarded-uri", named)],
            )
            .await;
        assert_eq!(r.status, 400, "{named}");
    }
    assert_eq!(
        http.get(
            &kc.url("/_keycard/verifyx/api/orders"),
            &[("x-api-key", &key)]
        )
        .await
        .status,
        404
    );
    // The original method is the request's own: a signature over a GET does not pass a
    // DELETE.
    let created = kc.create_hmac("signer");
    let signed = kc.sign(&created, "GET", &kc.url("/api/orders"), None);
    let h = pairs(&signed);
    let prefixed = format!("{verify}/api/orders");
    // Refused as a DELETE, then the same signature, still unused, passes as the GET it is.
    let r = http
        .send(http::Method::DELETE, &prefixed, &h, Vec::new())
        .await;
    assert_eq!(r.status, 401);
    let r = http.get(&prefixed, &h).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-keycard-method").as_deref(), Some("hmac"));
    // A header naming the method or the host beside the prefix is a client's, passed on by
    // the proxy: refused, rather than let it turn a GET's signature into a DELETE's or move
    // it to another host.
    for (name, value) in [
        ("x-forwarded-method", "GET"),
        ("x-original-method", "GET"),
        ("x-forwarded-host", "elsewhere.example"),
    ] {
        let mut with = h.clone();
        with.push((name, value));
        let r = http
            .send(http::Method::DELETE, &prefixed, &with, Vec::new())
            .await;
        assert_eq!(r.status, 400, "{name}");
        let r = http.get(&prefixed, &with).await;
        assert_eq!(r.status, 400, "{name}");
    }
    // The body, when the proxy passes it (Envoy's `with_request_body`), is checked against a
    // signature over it; a body Envoy marks as cut short counts as none.
    let sign_post = || kc.sign(&created, "POST", &kc.url("/api/orders"), Some("hello"));
    // Each with a signature of its own: a refused one must not be refused as a replay.
    for (partial, body, status) in [
        (true, "hello", 401),
        (false, "EVIL!", 401),
        (false, "hello", 200),
    ] {
        let signed = sign_post();
        let mut h = pairs(&signed);
        if partial {
            h.push(("x-envoy-auth-partial-body", "true"));
        }
        let r = http
            .send(http::Method::POST, &prefixed, &h, body.as_bytes().to_vec())
            .await;
        assert_eq!(r.status, status, "{body} partial={partial}");
    }
}

/// nginx with the shipped example (`examples/nginx/keycard-forward-auth.conf`), on this
/// test's ports: keycard at `kc_addr`, the application at `app`. Returns nginx and its URL.
fn example_nginx(kc: &Keycard, kc_addr: std::net::SocketAddr, app: &str) -> (Nginx, String) {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/nginx/keycard-forward-auth.conf"
    ))
    .unwrap();
    let port = free_port();
    let server = example
        .replace("127.0.0.1:8080", &kc_addr.to_string())
        .replace("127.0.0.1:9000", app.trim_start_matches("http://"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{port}"));
    let nginx = Nginx::start(&kc.dir.path().join("nginx"), &server, port);
    (nginx, format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request_in_front_of_an_upstream() {
    if !nginx::available() {
        return;
    }
    let app = upstream::start().await;
    let mut kc = Keycard::new(None, ROUTES);
    kc.trust_proxies("127.0.0.1/32");
    let kc_addr = kc.start();
    let (_, key) = kc.create_key("svc", &["read"], &[]);

    let (_nginx, base) = example_nginx(&kc, kc_addr, &app);
    let http = Http::new();
    let r = http
        .get(
            &format!("{base}/api/orders?id=7"),
            &[
                ("x-api-key", &key),
                ("x-keycard-subject", "root"),
                ("x-forwarded-client-cert", "Cert=\"forged\""),
                ("x-ssl-client-cert", "forged"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Client certificates are not this server's: no forwarded one reaches the application.
    assert_eq!(r.upstream_header("x-forwarded-client-cert"), None);
    assert_eq!(r.upstream_header("x-ssl-client-cert"), None);
    assert_eq!(r.json()["path"], "/api/orders");
    assert_eq!(
        r.upstream_header("x-keycard-subject").as_deref(),
        Some("svc")
    );
    assert_eq!(
        r.upstream_header("x-keycard-method").as_deref(),
        Some("api_key")
    );
    assert_eq!(r.upstream_header("x-api-key"), None);

    let r = http.get(&format!("{base}/api/orders"), &[]).await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.ends_with(r#"Bearer realm="keycard""#)),
        "{:?}",
        r.header_all("www-authenticate")
    );
    let r = http
        .get(&format!("{base}/api/orders"), &[("x-api-key", "kc_wrong")])
        .await;
    assert_eq!(r.status, 401);
    let r = http
        .get(&format!("{base}/admin/x"), &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, 403);
    // A client naming another path under the names nginx does not set: nginx clears them,
    // keycard decides on the path nginx names.
    let r = http
        .get(
            &format!("{base}/admin/x"),
            &[
                ("x-api-key", &key),
                ("x-original-uri", "/api/x"),
                ("x-original-method", "GET"),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    // nginx's subrequest carries no body: a signature over one cannot be checked, so it is
    // refused, whatever body the client sends on to the application.
    let created = kc.create_hmac("signer");
    let url = format!("{base}/api/orders");
    for body in ["EVIL!", "hello"] {
        // A signature of its own each time: the second must not be refused as a replay.
        let headers = kc.sign(&created, "POST", &url, Some("hello"));
        let h = pairs(&headers);
        let r = http
            .send(http::Method::POST, &url, &h, body.as_bytes().to_vec())
            .await;
        assert_eq!(r.status, 401, "{body}");
    }
    kc.stop();
    // The audit log saw the client through nginx.
    let audit = std::fs::read_to_string(kc.path("data/audit.jsonl")).unwrap();
    assert!(
        audit.contains(r#""route":"/api/","method":"api_key","outcome":"success""#),
        "{audit}"
    );
}

/// Runs `curl -sS` with `args`; returns (status line's code, stdout).
fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every method keycard has, through the shipped nginx example: each client is a real one
/// (curl, Python `requests`, Chromium, PyJWT's tokens, keycard's own token endpoint and
/// signer), and the refusals nginx cannot pass on by itself reach the client with their
/// own status.
#[tokio::test(flavor = "multi_thread")]
async fn every_method_through_nginx_auth_request() {
    if !nginx::available() || !tools::curl() || !tools::python_requests() || !tools::python_pyjwt()
    {
        return;
    }
    const ISS: &str = "https://idp.test/";
    let tokens = crate::jwt::tokens(ISS);
    let app = upstream::start().await;
    let kc_port = free_port();
    let kc_base = format!("http://127.0.0.1:{kc_port}");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, tokens["jwks"].to_string()).unwrap();
    let mut kc = Keycard::new(
        None,
        &format!(
            "[[jwt.issuers]]\nissuer = \"{ISS}\"\njwks_file = \"{}\"\naudiences = [\"{}\"]\n\n\
             [[routes]]\nprefix = \"/api/\"\n\n\
             [[routes]]\nprefix = \"/web/\"\nmethods = [\"basic\", \"api_key\"]\n\n\
             [[routes]]\nprefix = \"/limited/\"\nrate_limit = \"1/min\"\n",
            jwks.display(),
            crate::jwt::AUD
        ),
    );
    let cfg = std::fs::read_to_string(&kc.config).unwrap().replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{kc_port}\"\npublic_url = \"{kc_base}\""),
        1,
    );
    std::fs::write(&kc.config, cfg).unwrap();
    kc.trust_proxies("127.0.0.1/32");
    kc.add_user("alice", "plum-orbit-kettle", &["--digest"]);
    let (_, key) = kc.create_key("svc", &[], &[]);
    let worker: serde_json::Value = serde_json::from_str(&kc.cli_ok(&[
        "client",
        "create",
        "worker",
        "--json",
        "--grant",
        "client_credentials",
    ]))
    .unwrap();
    let hmac = kc.create_hmac("signer");
    let kc_addr = kc.start();
    let (_nginx, base) = example_nginx(&kc, kc_addr, &app);
    let http = Http::new();
    let api = format!("{base}/api/orders?id=7");

    // One 401 offers every scheme in the one field nginx passes on, Digest first.
    let r = http.get(&api, &[]).await;
    assert_eq!(r.status, 401);
    let challenges = r.header_all("www-authenticate");
    assert_eq!(challenges.len(), 1, "{challenges:?}");
    assert!(
        challenges[0].starts_with(
            r#"Digest realm="keycard", qop="auth, auth-int", algorithm=SHA-256, nonce=""#
        ),
        "{challenges:?}"
    );
    assert!(
        challenges[0]
            .ends_with(r#", Basic realm="keycard", charset="UTF-8", Bearer realm="keycard""#),
        "{challenges:?}"
    );

    // Digest and Basic with curl, which reads the list for the scheme it is told to use.
    let method_seen = |out: &str| -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        (
            v["headers"]["x-keycard-method"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            v["headers"]["x-keycard-subject"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )
    };
    let digest = curl(&["--digest", "-u", "alice:plum-orbit-kettle", &api]);
    assert_eq!(method_seen(&digest), ("digest".into(), "alice".into()));
    let basic = curl(&["--basic", "-u", "alice:plum-orbit-kettle", &api]);
    assert_eq!(method_seen(&basic), ("basic".into(), "alice".into()));
    let wrong = curl(&[
        "--digest",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-u",
        "alice:not-the-password",
        &api,
    ]);
    assert_eq!(wrong, "401");

    // Digest with Python requests, which merges the list into one set of parameters.
    let script = r#"
import json, sys, requests
from requests.auth import HTTPDigestAuth
r = requests.get(sys.argv[1], auth=HTTPDigestAuth("alice", "plum-orbit-kettle"))
bad = requests.get(sys.argv[1], auth=HTTPDigestAuth("alice", "wrong-password-123"))
print(json.dumps([r.status_code, r.json()["headers"].get("x-keycard-method"), bad.status_code]))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &api])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!([200, "digest", 401]));

    // A browser answering its sign-in prompt: Digest where offered first, Basic where the
    // route takes Basic and keys.
    let browser =
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/browser"));
    if tools::chromium_playwright(&browser) {
        for (path, method) in [("/api/page", "digest"), ("/web/page", "basic")] {
            let out = tokio::process::Command::new("node")
                .arg(browser.join("http-auth.mjs"))
                .args([&format!("{base}{path}"), "alice", "plum-orbit-kettle"])
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(std::time::Duration::from_secs(90), out)
                .await
                .expect("the browser run took over 90 s")
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["status"], 200, "{path}: {v}");
            let page = v["body"].as_str().unwrap();
            assert_eq!(method_seen(page), (method.into(), "alice".into()), "{path}");
        }
    }

    // An API key, a JWT from another issuer, keycard's own access token.
    let r = http.get(&api, &[("x-api-key", &key)]).await;
    assert_eq!(
        r.upstream_header("x-keycard-method").as_deref(),
        Some("api_key")
    );
    let jwt = tokens["good"]["ES256"].as_str().unwrap();
    let r = http
        .get(&api, &[("authorization", &format!("Bearer {jwt}"))])
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.upstream_header("x-keycard-method").as_deref(),
        Some("jwt")
    );
    assert_eq!(
        r.upstream_header("x-keycard-subject").as_deref(),
        Some("partner-svc")
    );
    let bad_jwt = tokens["bad"]["expired"].as_str().unwrap();
    let r = http
        .get(&api, &[("authorization", &format!("Bearer {bad_jwt}"))])
        .await;
    assert_eq!(r.status, 401);
    let token = curl(&[
        "-u",
        &format!("worker:{}", worker["client_secret"].as_str().unwrap()),
        "-d",
        "grant_type=client_credentials",
        &format!("{kc_base}/oauth2/token"),
    ]);
    let token: serde_json::Value = serde_json::from_str(&token).unwrap();
    let access = token["access_token"].as_str().unwrap();
    let r = http
        .get(&api, &[("authorization", &format!("Bearer {access}"))])
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.upstream_header("x-keycard-method").as_deref(),
        Some("oauth2")
    );
    assert_eq!(
        r.upstream_header("x-keycard-subject").as_deref(),
        Some("worker")
    );

    // An RFC 9421 signature over a GET (no body for nginx to withhold), checked against the
    // method and authority nginx names; the same signature on another path is refused.
    let sign = |url: &str| kc.sign(&hmac, "GET", url, None);
    let signed = sign(&api);
    let h = pairs(&signed);
    let r = http.get(&api, &h).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.upstream_header("x-keycard-method").as_deref(),
        Some("hmac")
    );
    // An unused signature on another path than signed: refused (not as a replay).
    let fresh = sign(&api);
    let h = pairs(&fresh);
    let r = http.get(&format!("{base}/api/other"), &h).await;
    assert_eq!(r.status, 401);

    // Refusals nginx turns into its own 500 come out with keycard's status.
    let r = http
        .get(&format!("{base}/elsewhere"), &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, 404);
    let r = http
        .get(&format!("{base}/public/../api/x"), &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, 400);
    let limited = format!("{base}/limited/x");
    assert_eq!(http.get(&limited, &[("x-api-key", &key)]).await.status, 200);
    let r = http.get(&limited, &[("x-api-key", &key)]).await;
    assert_eq!(r.status, 429);
    assert!(
        r.header("retry-after")
            .is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n > 0)),
        "{:?}",
        r.header("retry-after")
    );

    kc.stop();
    let audit = std::fs::read_to_string(kc.path("data/audit.jsonl")).unwrap();
    for method in ["api_key", "basic", "digest", "jwt", "oauth2", "hmac"] {
        assert!(
            audit.contains(&format!(
                r#""route":"/api/","method":"{method}","outcome":"success""#
            )),
            "{method}: {audit}"
        );
    }
}
