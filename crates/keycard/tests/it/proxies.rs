//! Forward-auth behind the other proxies: Caddy's `forward_auth` (the real Caddy, with
//! `examples/caddy/Caddyfile`), Traefik's `forwardAuth` (the headers its documentation says
//! it sends, with `examples/traefik/dynamic.yml`: Traefik does not install here), and Envoy's
//! external authorization over gRPC (a Python `grpcio` client built from Envoy's field
//! numbers).

use std::process::{Child, Command, Stdio};

use crate::common::http::Http;
use crate::common::nginx::free_port;
use crate::common::{Keycard, pairs, tools, upstream};

/// A Caddy process, stopped when dropped.
struct Caddy(Child);

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const ROUTES: &str = "[[routes]]\nprefix = \"/api/\"\n\n[[routes]]\nprefix = \"/admin/\"\nscopes = [\"admin\"]\n\n[[routes]]\nprefix = \"/public/\"\npublic = true\n\n[[routes]]\nprefix = \"/limited/\"\nrate_limit = \"1/min\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn caddy_forward_auth_with_the_shipped_caddyfile() {
    if !tools::caddy() || !tools::curl() || !tools::python_requests() {
        return;
    }
    let app = upstream::start().await;
    let mut kc = Keycard::new(None, ROUTES);
    kc.trust_proxies("127.0.0.1/32");
    kc.add_user("alice", "plum-orbit-kettle", &["--digest"]);
    let (_, key) = kc.create_key("svc", &["read"], &[]);
    let hmac = kc.create_hmac("signer");
    let kc_addr = kc.start();

    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/caddy/Caddyfile"
    ))
    .unwrap();
    let port = free_port();
    let conf = example
        .replace("127.0.0.1:8080", &kc_addr.to_string())
        .replace("127.0.0.1:9000", app.trim_start_matches("http://"))
        .replace("127.0.0.1:8082", &format!("127.0.0.1:{port}"));
    let dir = kc.path("caddy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Caddyfile"), conf).unwrap();
    let _caddy = Caddy(
        Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(dir.join("Caddyfile"))
            .env("HOME", &dir)
            .env("XDG_DATA_HOME", &dir)
            .env("XDG_CONFIG_HOME", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = Http::new();
    let api = format!("{base}/api/orders?id=7");
    let mut up = false;
    for _ in 0..100 {
        if http.try_get(&format!("{base}/public/x")).await.is_some() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(up, "caddy did not start");

    // An API key; the client's own identity headers never reach the application.
    let r = http
        .get(
            &api,
            &[
                ("x-api-key", &key),
                ("x-keycard-subject", "root"),
                ("x-keycard-scopes", "admin"),
                ("x_keycard_subject", "root"),
                ("x_forwarded_for", "10.9.9.9"),
                ("x-ssl-client-cert", "forged"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["path"], "/api/orders");
    // Nor their underscore spellings, which CGI-style applications read as the same.
    assert_eq!(r.upstream_header("x_keycard_subject"), None);
    assert_eq!(r.upstream_header("x_forwarded_for"), None);
    assert_eq!(
        r.upstream_header("x-keycard-subject").as_deref(),
        Some("svc")
    );
    assert_eq!(
        r.upstream_header("x-keycard-scopes").as_deref(),
        Some("read")
    );
    assert_eq!(
        r.upstream_header("x-keycard-method").as_deref(),
        Some("api_key")
    );
    assert_eq!(r.upstream_header("x-api-key"), None);
    assert_eq!(r.upstream_header("x-ssl-client-cert"), None);
    let r = http
        .get(
            &format!("{base}/public/x"),
            &[("x-keycard-subject", "root"), ("x_keycard_subject", "root")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-keycard-subject"), None);
    assert_eq!(r.upstream_header("x_keycard_subject"), None);

    // Refusals come back as keycard gave them, challenges included.
    let r = http.get(&api, &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-keycard-error").as_deref(), Some("unauthorized"));
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Digest ") && c.contains(", Basic realm=")),
        "{:?}",
        r.header_all("www-authenticate")
    );
    let r = http
        .get(&format!("{base}/admin/x"), &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, 403);
    let r = http
        .get(&format!("{base}/elsewhere"), &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, 404);
    let limited = format!("{base}/limited/x");
    assert_eq!(http.get(&limited, &[("x-api-key", &key)]).await.status, 200);
    let r = http.get(&limited, &[("x-api-key", &key)]).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    // A client naming another path under the name Caddy does not set is not believed.
    let r = http
        .get(
            &format!("{base}/admin/x"),
            &[("x-api-key", &key), ("x-original-uri", "/api/x")],
        )
        .await;
    assert_eq!(r.status, 403);

    // Basic and Digest with curl, Digest with Python requests.
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    for scheme in ["--basic", "--digest"] {
        let out = curl(&[scheme, "-u", "alice:plum-orbit-kettle", &api]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["headers"]["x-keycard-subject"], "alice", "{scheme}");
        assert_eq!(
            v["headers"]["x-keycard-method"],
            scheme.trim_start_matches("--"),
            "{scheme}"
        );
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, requests\nr = requests.get(sys.argv[1], auth=requests.auth.HTTPDigestAuth('alice', 'plum-orbit-kettle'))\nprint(r.status_code, r.json()['headers'].get('x-keycard-method'))",
            &api,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200 digest");

    // An RFC 9421 signature over a GET; one over a body Caddy does not pass is refused,
    // whatever body goes on to the application.
    let url = format!("{base}/api/orders");
    let h = kc.sign(&hmac, "GET", &url, None);
    let r = http.get(&url, &pairs(&h)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.upstream_header("x-keycard-method").as_deref(),
        Some("hmac")
    );
    for body in ["EVIL!", "hello"] {
        // A signature of its own each time: the second must not be refused as a replay.
        let h = kc.sign(&hmac, "POST", &url, Some("hello"));
        let r = http
            .send(
                http::Method::POST,
                &url,
                &pairs(&h),
                body.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(r.status, 401, "{body}");
    }
    kc.stop();
    let audit = std::fs::read_to_string(kc.path("data/audit.jsonl")).unwrap();
    for method in ["api_key", "basic", "digest", "hmac"] {
        assert!(
            audit.contains(&format!(
                r#""route":"/api/","method":"{method}","outcome":"success""#
            )),
            "{method}: {audit}"
        );
    }
}

/// Traefik's `forwardAuth` does not install here: keycard is driven with exactly what its
/// documentation says it sends (the client's headers, plus `X-Forwarded-Method`, `-Proto`,
/// `-Host`, `-Uri`, `-For`, on a GET to the address), and the shipped file is checked to
/// ask for that and to take keycard's identity headers only.
#[tokio::test(flavor = "multi_thread")]
async fn traefik_forward_auth_headers() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/traefik/dynamic.yml"
    ))
    .unwrap();
    assert!(example.contains(r#"address: "http://127.0.0.1:8080/_keycard/verify""#));
    assert!(example.contains("trustForwardHeader: false"));
    assert!(example.contains(r#"authResponseHeadersRegex: "(?i)^X[-_]Keycard[-_]""#));
    assert!(
        example.contains("middlewares: [not-the-clients-to-send, keycard, credentials-stay-here]")
    );

    let mut kc = Keycard::new(None, ROUTES);
    kc.trust_proxies("127.0.0.1/32");
    kc.add_user("alice", "plum-orbit-kettle", &["--digest"]);
    let (_, key) = kc.create_key("svc", &["read"], &[]);
    let hmac = kc.create_hmac("signer");
    kc.start();
    let http = Http::new();
    let verify = kc.url("/_keycard/verify");
    let traefik = |method: &'static str, uri: &'static str| {
        vec![
            ("x-forwarded-method", method),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example"),
            ("x-forwarded-uri", uri),
            ("x-forwarded-for", "198.51.100.9"),
        ]
    };

    let mut h = traefik("GET", "/api/orders?id=7");
    h.push(("x-api-key", &key));
    let r = http.get(&verify, &h).await;
    assert_eq!(r.status, 200);
    // Every identity header the regex takes is keycard's.
    for name in [
        "x-keycard-subject",
        "x-keycard-method",
        "x-keycard-scopes",
        "x-keycard-credential",
    ] {
        assert!(r.header(name).is_some(), "{name}");
    }
    let mut h = traefik("GET", "/api/orders");
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "alice:plum-orbit-kettle"
        )
    );
    h.push(("authorization", &basic));
    let r = http.get(&verify, &h).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-keycard-method").as_deref(), Some("basic"));
    // A signature for the original request: its method, authority and scheme are the
    // forwarded ones, not those of Traefik's GET to keycard.
    let sig = kc.sign(&hmac, "HEAD", "https://api.example/api/orders/3", None);
    let mut h = traefik("HEAD", "/api/orders/3");
    h.extend(pairs(&sig));
    let r = http.get(&verify, &h).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-keycard-method").as_deref(), Some("hmac"));
    // Another signature for HEAD, unused: judged against GET, it fails (not as a replay).
    let sig = kc.sign(&hmac, "HEAD", "https://api.example/api/orders/3", None);
    let mut h = traefik("GET", "/api/orders/3");
    h.extend(pairs(&sig));
    assert_eq!(http.get(&verify, &h).await.status, 401);
    let mut h = traefik("HEAD", "/api/orders/3");
    h.extend(pairs(&sig));
    assert_eq!(
        http.get(&verify, &h).await.status,
        200,
        "the same, as signed"
    );

    let r = http.get(&verify, &traefik("GET", "/api/orders")).await;
    assert_eq!(r.status, 401);
    assert!(r.body.is_empty());
    assert_eq!(r.header("x-keycard-error").as_deref(), Some("unauthorized"));
    let mut h = traefik("GET", "/admin/x");
    h.push(("x-api-key", &key));
    assert_eq!(http.get(&verify, &h).await.status, 403);
    // A client's X-Original-URI copied by Traefik beside its X-Forwarded-Uri: refused.
    let mut h = traefik("GET", "/admin/x");
    h.push(("x-api-key", &key));
    h.push(("x-original-uri", "/api/x"));
    assert_eq!(http.get(&verify, &h).await.status, 400);
    kc.stop();
    let audit = std::fs::read_to_string(kc.path("data/audit.jsonl")).unwrap();
    assert!(audit.contains(r#""ip":"198.51.100.9""#), "{audit}");
}

fn check(addr: &str, cases: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/py/ext_authz_check.py"
        ))
        .arg(addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_ext_authz_over_grpc() {
    if !tools::python_grpc() {
        return;
    }
    let grpc_port = free_port();
    let routes = format!("[forward_auth]\ngrpc_listen = \"127.0.0.1:{grpc_port}\"\n\n{ROUTES}");
    let mut kc = Keycard::new(None, &routes);
    kc.trust_proxies("127.0.0.1/32");
    kc.add_user("alice", "plum-orbit-kettle", &["--digest"]);
    let (key_id, key) = kc.create_key("svc", &["read"], &[]);
    let hmac = kc.create_hmac("signer");
    let sig_get = kc.sign(&hmac, "GET", "https://api.example/api/orders?id=1", None);
    let sig_post = kc.sign(
        &hmac,
        "POST",
        "https://api.example/api/orders",
        Some("hello"),
    );
    let obj = |v: &[(String, String)]| -> serde_json::Value {
        v.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), serde_json::Value::from(v.as_str())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let many: Vec<[String; 2]> = (0..33_000)
        .map(|i| [format!("h{i}"), String::new()])
        .collect();
    // One signature per case: a refused one must not pass for a replay of another.
    let sig_get_delete = obj(&kc.sign(&hmac, "GET", "https://api.example/api/orders?id=1", None));
    let post = || {
        obj(&kc.sign(
            &hmac,
            "POST",
            "https://api.example/api/orders",
            Some("hello"),
        ))
    };
    let (sig_post_evil, sig_post_none) = (post(), post());
    let mut partial = post();
    partial["x-envoy-auth-partial-body"] = "true".into();
    kc.start();
    let addr = format!("127.0.0.1:{grpc_port}");
    let cases = serde_json::json!([
        // 0: an API key; the client's own identity headers are overwritten or removed.
        {"path": "/api/orders?id=1", "headers": {"x-api-key": key, "x-keycard-subject": "root", "x-keycard-subject-kind": "user"}},
        // 1: nothing: 401 with every challenge.
        {"path": "/api/orders"},
        // 2: Digest, answering 1's challenge with Python requests' RFC 7616 code.
        {"path": "/api/orders", "digest_from": 1, "digest_user": "alice", "digest_password": "plum-orbit-kettle"},
        // 3: Basic in Envoy's raw header list (encode_raw_headers).
        {"path": "/api/orders", "raw": [["authorization", "Basic YWxpY2U6cGx1bS1vcmJpdC1rZXR0bGU="]]},
        // 4: the key where a scope is missing: 403.
        {"path": "/admin/x", "headers": {"x-api-key": key}},
        // 5: no route: 404; 6: a path the rules refuse: 400.
        {"path": "/elsewhere", "headers": {"x-api-key": key}},
        {"path": "/public/../admin/x", "headers": {"x-api-key": key}},
        // 7: a public route: the client's identity header is removed.
        {"path": "/public/x", "headers": {"x-keycard-subject": "root"}},
        // 8: a signature over a GET; 9: the same for another method.
        {"path": "/api/orders?id=1", "headers": obj(&sig_get)},
        {"method": "DELETE", "path": "/api/orders?id=1", "headers": sig_get_delete},
        // 10: a signature over the body Envoy passes; 11: another body; 12: no body;
        // 13: a body Envoy cut short.
        {"method": "POST", "path": "/api/orders", "headers": obj(&sig_post), "body": "hello"},
        {"method": "POST", "path": "/api/orders", "headers": sig_post_evil, "body": "EVIL!"},
        {"method": "POST", "path": "/api/orders", "headers": sig_post_none},
        {"method": "POST", "path": "/api/orders", "headers": partial, "body": "hello"},
        // 14, 15: a rate-limited route, twice.
        {"path": "/limited/x", "headers": {"x-api-key": key}},
        {"path": "/limited/x", "headers": {"x-api-key": key}},
        // 16: a wrong key.
        {"path": "/api/orders", "headers": {"x-api-key": "kc_wrong"}},
        // 17: the underscore spellings of keycard's names, which CGI-style applications
        // read as the dashed ones: removed too.
        {"path": "/public/x", "headers": {"x_keycard_subject": "root", "x_forwarded_for": "10.9.9.9"}},
        // 18: more header names than a header map holds: refused, not a crash.
        {"path": "/api/orders", "raw": many},
        // 19: still serving.
        {"path": "/api/orders?id=1", "headers": {"x-api-key": key}},
        // 20: a method that is not one: a refusal, never a failed call (which Envoy with
        // failure_mode_allow would let through).
        {"method": "GET /x", "path": "/api/orders", "headers": {"x-api-key": key}},
        // 21, 22: keycard's own cookies (its login session, its CSRF token) cut out of what
        // the application is sent; the rest kept.
        {"path": "/public/x", "headers": {"cookie": "a=1; kc_session=S; b=2; __Host-kc_csrf=C"}},
        {"path": "/api/orders", "headers": {"x-api-key": key, "cookie": "kc_session=S"}},
        // 23: a public route: no credential was verified, none is removed.
        {"path": "/public/x", "headers": {"authorization": "Bearer not-checked"}},
    ]);
    let r = check(&addr, &cases);
    let status = |i: usize| {
        (
            r[i]["code"].as_i64().unwrap(),
            r[i]["http_status"].as_i64().unwrap(),
        )
    };
    assert_eq!(status(0), (0, 200), "{}", r[0]);
    assert_eq!(r[0]["headers"]["x-keycard-subject"], "svc");
    assert_eq!(r[0]["headers"]["x-keycard-method"], "api_key");
    assert_eq!(r[0]["headers"]["x-keycard-credential"], key_id.as_str());
    // OVERWRITE_IF_EXISTS_OR_ADD: the client's copy is replaced.
    assert!(
        r[0]["append_actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a == 2)
    );
    let set: Vec<&str> = r[0]["headers"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for removed in r[0]["remove"].as_array().unwrap() {
        assert!(!set.contains(&removed.as_str().unwrap()));
    }
    assert!(
        set.contains(&"x-keycard-subject-kind")
            || r[0]["remove"]
                .as_array()
                .unwrap()
                .contains(&"x-keycard-subject-kind".into())
    );

    assert_eq!(status(1), (16, 401), "{}", r[1]);
    assert_eq!(r[1]["headers"]["x-keycard-error"], "unauthorized");
    assert!(
        r[1]["headers"]["www-authenticate"]
            .as_str()
            .unwrap()
            .starts_with("Digest realm=")
    );
    assert_eq!(r[1]["body"], "");
    assert_eq!(status(2), (0, 200), "{}", r[2]);
    assert_eq!(r[2]["headers"]["x-keycard-method"], "digest");
    assert_eq!(r[2]["headers"]["x-keycard-subject"], "alice");
    assert_eq!(status(3), (0, 200), "{}", r[3]);
    assert_eq!(r[3]["headers"]["x-keycard-method"], "basic");
    assert_eq!(status(4), (7, 403), "{}", r[4]);
    assert_eq!(r[4]["headers"]["x-keycard-error"], "insufficient_scope");
    assert_eq!(status(5), (5, 404), "{}", r[5]);
    assert_eq!(status(6), (3, 400), "{}", r[6]);
    assert_eq!(status(7), (0, 200), "{}", r[7]);
    assert!(
        r[7]["remove"]
            .as_array()
            .unwrap()
            .contains(&"x-keycard-subject".into())
    );
    assert_eq!(status(8), (0, 200), "{}", r[8]);
    assert_eq!(r[8]["headers"]["x-keycard-method"], "hmac");
    assert_eq!(status(9).1, 401, "{}", r[9]);
    assert_eq!(status(10), (0, 200), "{}", r[10]);
    for i in [11, 12, 13] {
        assert_eq!(status(i).1, 401, "{i}: {}", r[i]);
    }
    assert_eq!(status(14), (0, 200), "{}", r[14]);
    assert_eq!(status(15), (8, 429), "{}", r[15]);
    assert!(r[15]["headers"]["retry-after"].is_string());
    assert_eq!(status(16), (16, 401), "{}", r[16]);
    assert_eq!(status(17), (0, 200), "{}", r[17]);
    for name in ["x-keycard-subject", "x_keycard_subject", "x_forwarded_for"] {
        assert!(
            r[17]["remove"].as_array().unwrap().contains(&name.into()),
            "{name}: {}",
            r[17]
        );
    }
    assert_eq!(status(18), (3, 400), "{}", r[18]);
    assert_eq!(status(19), (0, 200), "{}", r[19]);
    assert_eq!(status(20), (3, 400), "{}", r[20]);
    // The credential keycard verified does not reach the application; the result does.
    assert!(
        r[0]["remove"]
            .as_array()
            .unwrap()
            .contains(&"x-api-key".into()),
        "{}",
        r[0]
    );
    assert_eq!(status(21), (0, 200), "{}", r[21]);
    assert_eq!(r[21]["headers"]["cookie"], "a=1; b=2", "{}", r[21]);
    assert_eq!(status(22), (0, 200), "{}", r[22]);
    let removed = r[22]["remove"].as_array().unwrap();
    assert!(removed.contains(&"cookie".into()), "{}", r[22]);
    assert!(r[22]["headers"].get("cookie").is_none(), "{}", r[22]);
    assert_eq!(status(23), (0, 200), "{}", r[23]);
    assert!(
        !r[23]["remove"]
            .as_array()
            .unwrap()
            .contains(&"authorization".into()),
        "{}",
        r[23]
    );
    kc.stop();
    let audit = std::fs::read_to_string(kc.path("data/audit.jsonl")).unwrap();
    assert!(
        audit.contains(r#""method":"digest","outcome":"success""#)
            && audit.contains(r#""ip":"203.0.113.7""#),
        "{audit}"
    );

    // Only a trusted proxy is answered: anyone else could name any client address.
    let mut other = Keycard::new(
        None,
        &routes.replace(&grpc_port.to_string(), &free_port().to_string()),
    );
    let other_port = std::fs::read_to_string(&other.config)
        .unwrap()
        .split("grpc_listen = \"127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    other.start();
    let r = check(
        &format!("127.0.0.1:{other_port}"),
        &serde_json::json!([{"path": "/public/x"}]),
    );
    // Closed before anything on the connection is read; audited.
    assert_eq!(r[0]["error"], "UNAVAILABLE", "{}", r[0]);
    other.stop();
    let audit = std::fs::read_to_string(other.path("data/audit.jsonl")).unwrap();
    assert!(
        audit.contains(r#""reason":"untrusted_forwarded_header""#),
        "{audit}"
    );
}
