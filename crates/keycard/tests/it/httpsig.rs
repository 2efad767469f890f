//! RFC 9421 interop with an independent implementation, Python's
//! `http-message-signatures`: headers from `keycard sign` verify with it, and requests it
//! signs verify with keycard's verifier (`keycard_core::httpsig`). The gateway's `hmac`
//! method builds on the same verifier.

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use keycard_core::httpsig::{self, Policy, RequestParts, SigError};

use crate::common::{bin, tools};

const KEY_ID: &str = "hk_interop";

fn key_b64() -> String {
    STANDARD.encode(keycard_core::random_base62(32).unwrap())
}

fn py(script: &str) -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/py/").to_owned() + script
}

#[test]
fn keycard_sign_headers_verify_with_http_message_signatures() {
    if !tools::python_httpsig() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = key_b64();
    let key_file = dir.path().join("key.b64");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let body = "{\"order\": 42}\n";
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, body).unwrap();
    let url = "http://127.0.0.1:8080/api/orders?page=2&sort=asc";
    let out = Command::new(bin())
        .args(["sign", "--json", "--key-id", KEY_ID, "--secret-file"])
        .arg(&key_file)
        .arg("--body-file")
        .arg(&body_file)
        .args(["--header", "Content-Type: application/json", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(signed["method"], "POST");
    let cfg = serde_json::json!({
        "url": url, "method": "POST", "body": body,
        "headers": {"Content-Type": "application/json"},
        "signed": signed["headers"], "key_b64": key, "key_id": KEY_ID,
    });
    let cfg_path = dir.path().join("cfg.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out = Command::new("python3")
        .arg(py("httpsig_verify.py"))
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let covered = v["covered"].to_string();
    for c in [
        "@method",
        "@authority",
        "@path",
        "@query",
        "content-type",
        "content-digest",
    ] {
        assert!(
            covered.contains(&format!("\\\"{c}\\\"")),
            "{c} not covered: {covered}"
        );
    }
    assert_eq!(v["parameters"]["keyid"], KEY_ID);
    assert!(v["parameters"]["nonce"].is_string());
    assert_eq!(v["tampered_refused"], true);
    // The Content-Digest printed is the body's (RFC 9530).
    let digest = signed["headers"]["Content-Digest"].as_str().unwrap();
    assert_eq!(
        httpsig::check_content_digest(digest, body.as_bytes()),
        Ok(())
    );
    assert_eq!(
        httpsig::check_content_digest(digest, b"{\"order\": 43}\n"),
        Err(SigError::DigestMismatch)
    );
}

#[test]
fn requests_signed_by_http_message_signatures_verify_with_keycard() {
    if !tools::python_httpsig() {
        return;
    }
    let key = key_b64();
    let body = "{\"order\": 42}";
    let url = "http://127.0.0.1:8080/api/orders?page=2";
    let out = Command::new("python3")
        .args([&py("httpsig_sign.py"), url, &key, KEY_ID, body])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut headers = HeaderMap::new();
    for (k, v) in sent["headers"].as_object().unwrap() {
        headers.insert(
            http::HeaderName::try_from(k.to_ascii_lowercase()).unwrap(),
            v.as_str().unwrap().parse().unwrap(),
        );
    }
    let sigs = httpsig::parse(
        headers["signature-input"].to_str().unwrap(),
        headers["signature"].to_str().unwrap(),
    )
    .unwrap();
    let sig = &sigs[0];
    assert_eq!(sig.keyid.as_deref(), Some(KEY_ID));
    let req = RequestParts {
        method: "POST",
        scheme: "http",
        authority: "127.0.0.1:8080",
        path: "/api/orders",
        query: Some("page=2"),
        headers: &headers,
    };
    let secret = httpsig::SharedKey::new(&STANDARD.decode(&key).unwrap());
    let now = keycard_server::now_secs();
    let policy = Policy::with_skew(60);
    assert_eq!(
        httpsig::verify(sig, &secret, &req, true, &policy, now),
        Ok(())
    );
    let digest = headers["content-digest"].to_str().unwrap();
    assert_eq!(
        httpsig::check_content_digest(digest, body.as_bytes()),
        Ok(())
    );
    // Refused: another path, another key, a changed body, a stale `created`.
    let moved = RequestParts {
        path: "/api/other",
        ..req
    };
    assert_eq!(
        httpsig::verify(sig, &secret, &moved, true, &policy, now),
        Err(SigError::BadSignature)
    );
    assert_eq!(
        httpsig::verify(
            sig,
            &httpsig::SharedKey::new(b"not the key at all, not at all!"),
            &req,
            true,
            &policy,
            now
        ),
        Err(SigError::BadSignature)
    );
    assert_eq!(
        httpsig::check_content_digest(digest, b"{\"order\": 43}"),
        Err(SigError::DigestMismatch)
    );
    assert_eq!(
        httpsig::verify(sig, &secret, &req, true, &policy, now + 120),
        Err(SigError::Expired)
    );
}

/// `hmac create|list|revoke`: the secret is shown once, 256 bits, and never stored in the
/// clear; `keycard sign` with it makes a signature keycard's verifier accepts.
#[test]
fn hmac_keys_from_the_cli_sign_requests() {
    let kc = crate::common::Keycard::new(None, "");
    let created: serde_json::Value = serde_json::from_str(&kc.cli_ok(&[
        "hmac",
        "create",
        "--subject",
        "signer",
        "--scope",
        "orders:write",
        "--expires-in",
        "30d",
        "--json",
    ]))
    .unwrap();
    for f in ["id", "key_id", "secret", "subject", "scopes", "expires_at"] {
        assert!(created.get(f).is_some(), "{f} missing: {created}");
    }
    let key_id = created["key_id"].as_str().unwrap();
    let secret = STANDARD
        .decode(created["secret"].as_str().unwrap())
        .unwrap();
    assert_eq!(secret.len(), 32);
    let list = kc.cli_ok(&["hmac", "list", "--json"]);
    assert!(
        list.contains(key_id) && list.contains("\"active\""),
        "{list}"
    );
    assert!(!list.contains(created["secret"].as_str().unwrap()));
    for (path, bytes) in crate::common::all_bytes_under(kc.dir.path()) {
        assert!(
            !crate::common::contains(&bytes, &secret),
            "secret in the clear in {}",
            path.display()
        );
        assert!(!crate::common::contains(
            &bytes,
            created["secret"].as_str().unwrap().as_bytes()
        ));
    }
    // Signed with the CLI, verified with keycard's verifier.
    let out = Command::new(bin())
        .args([
            "sign",
            "--json",
            "--key-id",
            key_id,
            "--secret-stdin",
            "http://127.0.0.1:8080/api/orders",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(format!("{}\n", created["secret"].as_str().unwrap()).as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    let signed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sigs = httpsig::parse(
        signed["headers"]["Signature-Input"].as_str().unwrap(),
        signed["headers"]["Signature"].as_str().unwrap(),
    )
    .unwrap();
    let headers = HeaderMap::new();
    let req = RequestParts {
        method: "GET",
        scheme: "http",
        authority: "127.0.0.1:8080",
        path: "/api/orders",
        query: None,
        headers: &headers,
    };
    let now = keycard_server::now_secs();
    assert_eq!(
        httpsig::verify(
            &sigs[0],
            &httpsig::SharedKey::new(&secret),
            &req,
            false,
            &Policy::with_skew(60),
            now
        ),
        Ok(())
    );
    // Revoke by key_id; twice is an error for the operator.
    kc.cli_ok(&["hmac", "revoke", key_id]);
    assert!(!kc.cli(&["hmac", "revoke", key_id]).status.success());
    assert!(
        kc.cli_ok(&["hmac", "list", "--json"])
            .contains("\"revoked\"")
    );
}

/// A keycard with a gateway route and an HMAC key, for the `hmac` method's tests.
struct Gateway {
    kc: crate::common::Keycard,
    base: String,
    authority: String,
    key_id: String,
    secret: Vec<u8>,
    secret_b64: String,
    dir: tempfile::TempDir,
    http: crate::common::http::Http,
}

type Headers = Vec<(String, String)>;

impl Gateway {
    async fn start() -> Gateway {
        let up = crate::common::upstream::start().await;
        let mut kc = crate::common::Keycard::new(None, &crate::common::route("/api/", &up, ""));
        let addr = kc.start();
        let created: serde_json::Value = serde_json::from_str(&kc.cli_ok(&[
            "hmac",
            "create",
            "--subject",
            "signer",
            "--scope",
            "orders:write",
            "--json",
        ]))
        .unwrap();
        let secret_b64 = created["secret"].as_str().unwrap().to_owned();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.b64"), &secret_b64).unwrap();
        Gateway {
            base: format!("http://{addr}"),
            authority: addr.to_string(),
            key_id: created["key_id"].as_str().unwrap().to_owned(),
            secret: STANDARD.decode(&secret_b64).unwrap(),
            secret_b64,
            dir,
            kc,
            http: crate::common::http::Http::new(),
        }
    }

    /// `keycard sign --json` for `method url` (with `body` when given).
    fn sign(&self, method: &str, url: &str, body: Option<&str>) -> Headers {
        let mut cmd = Command::new(bin());
        cmd.args(["sign", "--json", "--key-id", &self.key_id, "--secret-file"])
            .arg(self.dir.path().join("key.b64"))
            .args(["--method", method]);
        if let Some(b) = body {
            let f = self.dir.path().join(format!(
                "body-{}.txt",
                keycard_core::random_base62(8).unwrap()
            ));
            std::fs::write(&f, b).unwrap();
            cmd.arg("--body-file").arg(f);
        }
        let out = cmd.arg(url).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    }

    /// A signature made by hand over `GET /api/orders` (`params` after the components).
    fn hand(&self, components: &str, params: &str, keyid: &str) -> Headers {
        let input = format!("sig1=({components}){params};keyid=\"{keyid}\"");
        let headers = HeaderMap::new();
        let sig = httpsig::parse(&input, "sig1=:AAAA:").unwrap().remove(0);
        let req = RequestParts {
            method: "GET",
            scheme: "http",
            authority: &self.authority,
            path: "/api/orders",
            query: None,
            headers: &headers,
        };
        let mac = httpsig::sign_hmac(&self.secret, &httpsig::signature_base(&sig, &req).unwrap());
        vec![
            ("Signature-Input".into(), input),
            (
                "Signature".into(),
                format!("sig1=:{}:", STANDARD.encode(mac)),
            ),
        ]
    }

    async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &Headers,
        body: &str,
    ) -> crate::common::http::Resp {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.http
            .send(method, url, &h, body.as_bytes().to_vec())
            .await
    }

    /// Stops (the audit is written) and returns `audit --json`.
    fn stop_and_audit(mut self) -> String {
        self.kc.stop();
        self.kc.cli_ok(&["audit", "--json", "--limit", "1000"])
    }
}

const ALL: &str = r#""@method" "@authority" "@path""#;

fn curl_args(headers: &Headers) -> Vec<String> {
    let mut args = vec!["-s".to_owned()];
    for (k, v) in headers {
        args.push("-H".into());
        args.push(format!("{k}: {v}"));
    }
    args
}

/// curl with `keycard sign` headers gets through (GET, and POST with a body), as the key's
/// subject by the `hmac` method; so does a request signed by `http-message-signatures`.
#[tokio::test(flavor = "multi_thread")]
async fn signed_requests_from_curl_and_python_are_accepted() {
    let g = Gateway::start().await;
    if tools::curl() {
        let url = format!("{}/api/orders?page=2", g.base);
        let mut args = curl_args(&g.sign("GET", &url, None));
        args.push(url);
        let out = Command::new("curl").args(&args).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["headers"]["x-keycard-method"], "hmac", "{v}");
        assert_eq!(v["headers"]["x-keycard-subject"], "signer");
        assert!(
            v["headers"].get("signature").is_none(),
            "the signature is not forwarded"
        );
        let url = format!("{}/api/orders", g.base);
        let body = g.dir.path().join("order.json");
        std::fs::write(&body, "{\"order\": 42}").unwrap();
        let mut args = curl_args(&g.sign("POST", &url, Some("{\"order\": 42}")));
        args.extend(["--data-binary".into(), format!("@{}", body.display()), url]);
        let out = Command::new("curl").args(&args).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["headers"]["x-keycard-method"], "hmac", "{v}");
        assert_eq!(v["body"], "{\"order\": 42}");
    }
    if tools::python_httpsig() {
        let body = "{\"order\": 7}";
        let url = format!("{}/api/orders?page=2", g.base);
        let out = Command::new("python3")
            .args([&py("httpsig_sign.py"), &url, &g.secret_b64, &g.key_id, body])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let headers: Headers = sent["headers"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length"))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let r = g.send(http::Method::POST, &url, &headers, body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.upstream_header("x-keycard-method").as_deref(),
            Some("hmac")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_the_same_signed_request_twice() {
    let g = Gateway::start().await;
    let url = format!("{}/api/orders", g.base);
    let h = g.sign("GET", &url, None);
    assert_eq!(g.send(http::Method::GET, &url, &h, "").await.status, 200);
    assert_eq!(
        g.send(http::Method::GET, &url, &h, "").await.status,
        401,
        "a replay"
    );
    // Another signature with the same nonce: refused too (a nonce is single-use).
    let now = keycard_server::now_secs();
    let a = g.hand(ALL, &format!(";created={now};nonce=\"same\""), &g.key_id);
    let b = g.hand(
        r#""@method" "@path" "@authority""#,
        &format!(";created={now};nonce=\"same\""),
        &g.key_id,
    );
    assert_eq!(g.send(http::Method::GET, &url, &a, "").await.status, 200);
    assert_eq!(g.send(http::Method::GET, &url, &b, "").await.status, 401);
    assert!(g.stop_and_audit().contains("\"replay\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_created_two_minutes_old_or_in_the_future_and_expires_passed() {
    let g = Gateway::start().await;
    let url = format!("{}/api/orders", g.base);
    let now = keycard_server::now_secs();
    for (what, params) in [
        ("created 2 minutes old", format!(";created={}", now - 120)),
        ("created in the future", format!(";created={}", now + 120)),
        (
            "expires passed",
            format!(";created={now};expires={}", now - 1),
        ),
        ("no created", String::new()),
    ] {
        let h = g.hand(ALL, &params, &g.key_id);
        assert_eq!(
            g.send(http::Method::GET, &url, &h, "").await.status,
            401,
            "{what}"
        );
    }
    let h = g.hand(ALL, &format!(";created={now}"), &g.key_id);
    assert_eq!(
        g.send(http::Method::GET, &url, &h, "").await.status,
        200,
        "the fresh one"
    );
    let audit = g.stop_and_audit();
    assert!(
        audit.contains("\"expired\"") && audit.contains("\"not_yet_valid\""),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_body_changed_or_content_digest_changed() {
    let g = Gateway::start().await;
    let url = format!("{}/api/orders", g.base);
    let h = g.sign("POST", &url, Some("{\"order\": 42}"));
    assert_eq!(
        g.send(http::Method::POST, &url, &h, "{\"order\": 43}")
            .await
            .status,
        401,
        "body changed"
    );
    let mut h = g.sign("POST", &url, Some("{\"order\": 42}"));
    for (k, v) in h.iter_mut() {
        if k == "Content-Digest" {
            *v = httpsig::content_digest(b"{\"order\": 43}");
        }
    }
    assert_eq!(
        g.send(http::Method::POST, &url, &h, "{\"order\": 43}")
            .await
            .status,
        401,
        "digest changed"
    );
    // A body with a signature that covers no Content-Digest.
    let now = keycard_server::now_secs();
    let h = g.hand(ALL, &format!(";created={now}"), &g.key_id);
    assert_eq!(
        g.send(http::Method::POST, &url, &h, "{}").await.status,
        401,
        "body not covered"
    );
    let h = g.sign("POST", &url, Some("{\"order\": 42}"));
    assert_eq!(
        g.send(http::Method::POST, &url, &h, "{\"order\": 42}")
            .await
            .status,
        200
    );
    // HTTP/2 needs neither Content-Length nor Transfer-Encoding: a body sent without either
    // is still read and checked (curl, prior knowledge, Content-Length removed).
    if tools::curl() {
        let sent = g.dir.path().join("sent.json");
        for (body_sent, want) in [("{\"order\": 43}", "401"), ("{\"order\": 42}", "200")] {
            std::fs::write(&sent, body_sent).unwrap();
            let mut args = curl_args(&g.sign("POST", &url, Some("{\"order\": 42}")));
            args.extend([
                "--http2-prior-knowledge".into(),
                "-H".into(),
                "Content-Length:".into(),
                "--data-binary".into(),
                format!("@{}", sent.display()),
                "-o".into(),
                "/dev/null".into(),
                "-w".into(),
                "%{http_code} %{http_version}".into(),
                url.clone(),
            ]);
            let out = Command::new("curl").args(&args).output().unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("{want} 2"),
                "HTTP/2 body {body_sent}"
            );
        }
    }
}

/// `Content-Digest` sent twice, both lines signed (the signature base joins them): refused,
/// even when both name the body's digest; the same request with one line passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_content_digest_is_refused() {
    let g = Gateway::start().await;
    let url = format!("{}/api/orders", g.base);
    let body = "{\"order\": 42}";
    let good = httpsig::content_digest(body.as_bytes());
    let signed = |lines: &[&str]| {
        let now = keycard_server::now_secs();
        let nonce = keycard_core::random_base62(12).unwrap();
        let input = format!(
            "sig1=({ALL} \"content-digest\");created={now};nonce=\"{nonce}\";keyid=\"{}\"",
            g.key_id
        );
        let mut headers = HeaderMap::new();
        for l in lines {
            headers.append("content-digest", l.parse().unwrap());
        }
        let sig = httpsig::parse(&input, "sig1=:AAAA:").unwrap().remove(0);
        let req = RequestParts {
            method: "POST",
            scheme: "http",
            authority: &g.authority,
            path: "/api/orders",
            query: None,
            headers: &headers,
        };
        let mac = httpsig::sign_hmac(&g.secret, &httpsig::signature_base(&sig, &req).unwrap());
        let mut h: Headers = vec![
            ("Signature-Input".into(), input),
            (
                "Signature".into(),
                format!("sig1=:{}:", STANDARD.encode(mac)),
            ),
        ];
        h.extend(
            lines
                .iter()
                .map(|l| ("Content-Digest".into(), (*l).to_owned())),
        );
        h
    };
    let other = httpsig::content_digest(b"{\"order\": 43}");
    for lines in [
        [good.as_str(), good.as_str()],
        [good.as_str(), other.as_str()],
    ] {
        let h = signed(&lines);
        let r = g.send(http::Method::POST, &url, &h, body).await;
        assert_eq!(r.status, 401, "{lines:?}");
    }
    let h = signed(&[good.as_str()]);
    assert_eq!(g.send(http::Method::POST, &url, &h, body).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_path_query_or_method_changed() {
    let g = Gateway::start().await;
    let url = format!("{}/api/orders?page=2", g.base);
    for (method, changed) in [
        (http::Method::GET, format!("{}/api/other?page=2", g.base)),
        (http::Method::GET, format!("{}/api/orders?page=3", g.base)),
        (http::Method::DELETE, url.clone()),
    ] {
        let h = g.sign("GET", &url, None);
        assert_eq!(
            g.send(method.clone(), &changed, &h, "").await.status,
            401,
            "{method} {changed}"
        );
    }
    let h = g.sign("GET", &url, None);
    assert_eq!(g.send(http::Method::GET, &url, &h, "").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_method_not_covered_and_an_rsa_alg_on_an_hmac_key() {
    let g = Gateway::start().await;
    let url = format!("{}/api/orders", g.base);
    let now = keycard_server::now_secs();
    let h = g.hand(
        r#""@authority" "@path""#,
        &format!(";created={now}"),
        &g.key_id,
    );
    assert_eq!(
        g.send(http::Method::GET, &url, &h, "").await.status,
        401,
        "@method not covered"
    );
    let h = g.hand(
        ALL,
        &format!(";created={now};alg=\"rsa-pss-sha512\""),
        &g.key_id,
    );
    assert_eq!(
        g.send(http::Method::GET, &url, &h, "").await.status,
        401,
        "rsa-pss-sha512"
    );
    let audit = g.stop_and_audit();
    assert!(
        audit.contains("\"missing_component\"") && audit.contains("\"alg_mismatch\""),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_unknown_or_revoked_keyid() {
    let g = Gateway::start().await;
    let url = format!("{}/api/orders", g.base);
    let now = keycard_server::now_secs();
    let h = g.hand(ALL, &format!(";created={now}"), "hk_unknown");
    assert_eq!(
        g.send(http::Method::GET, &url, &h, "").await.status,
        401,
        "unknown keyid"
    );
    let h = g.hand(ALL, &format!(";created={now};nonce=\"before\""), &g.key_id);
    assert_eq!(g.send(http::Method::GET, &url, &h, "").await.status, 200);
    g.kc.cli_ok(&["hmac", "revoke", &g.key_id]);
    let took = crate::common::eventually(std::time::Duration::from_secs(1), || {
        let h = g.hand(
            ALL,
            &format!(
                ";created={};nonce=\"{}\"",
                keycard_server::now_secs(),
                keycard_core::random_base62(8).unwrap()
            ),
            &g.key_id,
        );
        let (g, url) = (&g, url.clone());
        async move { g.send(http::Method::GET, &url, &h, "").await.status == 401 }
    })
    .await;
    assert!(took.is_some(), "a revoked HMAC key still works");
    assert!(g.stop_and_audit().contains("\"revoked\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_malformed_signature_fields() {
    let g = Gateway::start().await;
    let url = format!("{}/api/orders", g.base);
    for (input, sig) in [
        ("sig1=(", "sig1=:AAAA:"),
        ("sig1=(\"@method\");created=1", "sig1=\"not bytes\""),
        ("sig1=(\"@method\");created=\"soon\"", "sig1=:AAAA:"),
        ("sig1=(\"@method\");created=1", "other=:AAAA:"),
    ] {
        let h: Headers = vec![
            ("Signature-Input".into(), input.into()),
            ("Signature".into(), sig.into()),
        ];
        assert_eq!(
            g.send(http::Method::GET, &url, &h, "").await.status,
            401,
            "{input} / {sig}"
        );
    }
    let h: Headers = vec![(
        "Signature-Input".into(),
        "sig1=(\"@method\");created=1".into(),
    )];
    assert_eq!(
        g.send(http::Method::GET, &url, &h, "").await.status,
        401,
        "Signature missing"
    );
    assert!(g.stop_and_audit().contains("\"malformed\""));
}

/// A PEM block of `der`.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// An Ed25519 key pair as PEM files: (private PKCS#8, public SPKI).
fn ed25519_pair(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    let (private, public) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.pub.pem")),
    );
    std::fs::write(&private, pem("PRIVATE KEY", doc.as_ref())).unwrap();
    std::fs::write(&public, pem("PUBLIC KEY", &spki)).unwrap();
    (private, public)
}

/// `hmac create --public-key`: the client signs with its Ed25519 private key (RFC 9421
/// §3.3.6), keycard holds no secret; replays, another private key, and an HMAC signature
/// under the Ed25519 key's id are refused.
#[tokio::test(flavor = "multi_thread")]
async fn an_ed25519_key_signs_without_a_shared_secret() {
    if !tools::curl() {
        return;
    }
    let g = Gateway::start().await;
    let (private, public) = ed25519_pair(g.dir.path(), "client");
    let (other_private, _) = ed25519_pair(g.dir.path(), "other");
    let created: serde_json::Value = serde_json::from_str(&g.kc.cli_ok(&[
        "hmac",
        "create",
        "--subject",
        "ed-signer",
        "--public-key",
        public.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert!(created["secret"].is_null());
    assert_eq!(created["alg"], "ed25519");
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    let url = format!("{}/api/orders", g.base);
    let sign = |private: &std::path::Path| -> Headers {
        let out = Command::new(bin())
            .args(["sign", "--json", "--key-id", &key_id, "--private-key"])
            .arg(private)
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    };
    let status = |headers: &Headers| {
        let mut args = curl_args(headers);
        args.extend([
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
            url.clone(),
        ]);
        let out = Command::new("curl").args(&args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let signed = sign(&private);
    assert!(
        signed
            .iter()
            .any(|(k, v)| k == "Signature-Input" && v.contains("alg=\"ed25519\""))
    );
    let mut args = curl_args(&signed);
    args.push(url.clone());
    let out = Command::new("curl").args(&args).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["headers"]["x-keycard-method"], "hmac", "{v}");
    assert_eq!(v["headers"]["x-keycard-subject"], "ed-signer");
    // The same signed request again: a replay.
    assert_eq!(status(&signed), "401");
    // Signed by another private key under this key's id.
    assert_eq!(status(&sign(&other_private)), "401");
    // An HMAC signature under the Ed25519 key's id (the key's algorithm decides).
    let secret_file = g.dir.path().join("fake.b64");
    std::fs::write(&secret_file, STANDARD.encode([7u8; 32])).unwrap();
    let out = Command::new(bin())
        .args(["sign", "--json", "--key-id", &key_id, "--secret-file"])
        .arg(&secret_file)
        .arg(&url)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hmac: Headers = v["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(status(&hmac), "401");
    // `hmac list` shows the algorithm; a file that is not an Ed25519 public key is refused.
    let list: serde_json::Value =
        serde_json::from_str(&g.kc.cli_ok(&["hmac", "list", "--json"])).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|k| k["alg"] == "ed25519")
    );
    let out = g.kc.cli(&[
        "hmac",
        "create",
        "--subject",
        "x",
        "--public-key",
        private.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}
