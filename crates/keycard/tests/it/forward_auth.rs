//! Forward-auth: `/_keycard/verify` answered directly, and behind a real nginx `auth_request`
//! using the configuration shipped in `examples/nginx/`.

use crate::common::nginx::{self, Nginx, free_port};
use crate::common::{Keycard, http::Http, upstream};

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
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(r#"Bearer realm="keycard""#)
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

    // The shipped example, with this test's ports.
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
    let _nginx = Nginx::start(&kc.dir.path().join("nginx"), &server, port);
    let http = Http::new();
    let base = format!("http://127.0.0.1:{port}");
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
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(r#"Bearer realm="keycard""#)
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
    let created: serde_json::Value =
        serde_json::from_str(&kc.cli_ok(&["hmac", "create", "--subject", "signer", "--json"]))
            .unwrap();
    std::fs::write(kc.path("hk.b64"), created["secret"].as_str().unwrap()).unwrap();
    std::fs::write(kc.path("body.txt"), "hello").unwrap();
    let url = format!("{base}/api/orders");
    let signed = std::process::Command::new(crate::common::bin())
        .args(["sign", "--json", "--key-id"])
        .arg(created["key_id"].as_str().unwrap())
        .arg("--secret-file")
        .arg(kc.path("hk.b64"))
        .args(["--method", "POST", "--body-file"])
        .arg(kc.path("body.txt"))
        .arg(&url)
        .output()
        .unwrap();
    assert!(signed.status.success());
    let v: serde_json::Value = serde_json::from_slice(&signed.stdout).unwrap();
    let headers: Vec<(String, String)> = v["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for body in ["EVIL!", "hello"] {
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
