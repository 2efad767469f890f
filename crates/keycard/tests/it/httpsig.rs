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
    let secret = STANDARD.decode(&key).unwrap();
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
            b"not the key at all, not at all!",
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
        httpsig::verify(&sigs[0], &secret, &req, false, &Policy::with_skew(60), now),
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

/// The `hmac` method at the gateway: curl with `keycard sign` headers gets through (GET and
/// POST with a body); each attack of the issue is refused.
#[tokio::test(flavor = "multi_thread")]
async fn signed_requests_at_the_gateway() {
    use crate::common::http::Http;
    use crate::common::{eventually, route, upstream};

    let up = upstream::start().await;
    let mut kc = crate::common::Keycard::new(None, &route("/api/", &up, ""));
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
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    let secret_b64 = created["secret"].as_str().unwrap().to_owned();
    let secret = STANDARD.decode(&secret_b64).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.b64");
    std::fs::write(&key_file, &secret_b64).unwrap();
    let sign = |method: &str, url: &str, body: Option<&std::path::Path>| -> Vec<(String, String)> {
        let mut cmd = Command::new(bin());
        cmd.args(["sign", "--json", "--key-id", &key_id, "--secret-file"])
            .arg(&key_file);
        cmd.args(["--method", method]);
        if let Some(b) = body {
            cmd.arg("--body-file").arg(b);
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
    };
    let base = format!("http://{addr}");
    let http = Http::new();
    let send =
        |method: http::Method, url: String, headers: Vec<(String, String)>, body: Vec<u8>| {
            let http = http.clone();
            async move {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                http.send(method, &url, &h, body).await
            }
        };

    // curl, GET: accepted, as the key's subject, by the hmac method.
    let get_url = format!("{base}/api/orders?page=2");
    let get_headers = sign("GET", &get_url, None);
    if tools::curl() {
        let mut args = vec!["-s".to_owned()];
        for (k, v) in &get_headers {
            args.push("-H".into());
            args.push(format!("{k}: {v}"));
        }
        args.push(get_url.clone());
        let out = Command::new("curl").args(&args).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["headers"]["x-keycard-method"], "hmac", "{v}");
        assert_eq!(v["headers"]["x-keycard-subject"], "signer");
        assert!(
            v["headers"].get("signature").is_none(),
            "the signature is not forwarded"
        );
        // The same signed request again: a replay.
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "401", "a replay");
    }
    // curl, POST with a body.
    let body_file = dir.path().join("order.json");
    std::fs::write(&body_file, "{\"order\": 42}").unwrap();
    let post_url = format!("{base}/api/orders");
    let post_headers = sign("POST", &post_url, Some(&body_file));
    if tools::curl() {
        let mut args = vec![
            "-s".to_owned(),
            "--data-binary".into(),
            format!("@{}", body_file.display()),
        ];
        for (k, v) in &post_headers {
            args.push("-H".into());
            args.push(format!("{k}: {v}"));
        }
        args.push(post_url.clone());
        let out = Command::new("curl").args(&args).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["headers"]["x-keycard-method"], "hmac", "{v}");
        assert_eq!(v["body"], "{\"order\": 42}");
    }
    // A request signed by Python's http-message-signatures, with a body: accepted.
    if tools::python_httpsig() {
        let body = "{\"order\": 7}";
        let out = Command::new("python3")
            .args([
                &py("httpsig_sign.py"),
                &format!("{base}/api/orders?page=2"),
                &secret_b64,
                &key_id,
                body,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let headers: Vec<(String, String)> = sent["headers"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length"))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let r = send(
            http::Method::POST,
            format!("{base}/api/orders?page=2"),
            headers,
            body.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.upstream_header("x-keycard-method").as_deref(),
            Some("hmac")
        );
    }
    // A body changed under an unchanged Content-Digest; a Content-Digest changed.
    let fresh = sign("POST", &post_url, Some(&body_file));
    let r = send(
        http::Method::POST,
        post_url.clone(),
        fresh.clone(),
        b"{\"order\": 43}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 401, "body changed");
    let mut digest_changed = sign("POST", &post_url, Some(&body_file));
    for (k, v) in digest_changed.iter_mut() {
        if k == "Content-Digest" {
            *v = httpsig::content_digest(b"{\"order\": 43}");
        }
    }
    let r = send(
        http::Method::POST,
        post_url.clone(),
        digest_changed,
        b"{\"order\": 43}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 401, "content-digest changed");
    // Path, query or method changed.
    let h = sign("GET", &get_url, None);
    assert_eq!(
        send(
            http::Method::GET,
            format!("{base}/api/other?page=2"),
            h.clone(),
            vec![]
        )
        .await
        .status,
        401
    );
    assert_eq!(
        send(
            http::Method::GET,
            format!("{base}/api/orders?page=3"),
            h.clone(),
            vec![]
        )
        .await
        .status,
        401
    );
    assert_eq!(
        send(http::Method::DELETE, get_url.clone(), h.clone(), vec![])
            .await
            .status,
        401
    );
    // The untouched one still works (not spent by the failures).
    let ok = send(http::Method::GET, get_url.clone(), h, vec![]).await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));

    // Signatures made by hand: created 2 minutes old or in the future, @method not
    // covered, alg of another family, unknown keyid.
    let now = keycard_server::now_secs();
    let hand = |components: &str, params: String, keyid: &str| -> Vec<(String, String)> {
        let input = format!("sig1=({components}){params};keyid=\"{keyid}\"");
        let headers = HeaderMap::new();
        let sig = httpsig::parse(&input, "sig1=:AAAA:").unwrap().remove(0);
        let req = RequestParts {
            method: "GET",
            scheme: "http",
            authority: &addr.to_string(),
            path: "/api/orders",
            query: None,
            headers: &headers,
        };
        let mac = httpsig::sign_hmac(&secret, &httpsig::signature_base(&sig, &req).unwrap());
        vec![
            ("Signature-Input".into(), input),
            (
                "Signature".into(),
                format!("sig1=:{}:", STANDARD.encode(mac)),
            ),
        ]
    };
    let url = format!("{base}/api/orders");
    let all = r#""@method" "@authority" "@path""#;
    let good = hand(all, format!(";created={now};nonce=\"n-good\""), &key_id);
    assert_eq!(
        send(http::Method::GET, url.clone(), good, vec![])
            .await
            .status,
        200,
        "hand-made"
    );
    for (what, headers) in [
        (
            "created 2 minutes old",
            hand(all, format!(";created={}", now - 120), &key_id),
        ),
        (
            "created in the future",
            hand(all, format!(";created={}", now + 120), &key_id),
        ),
        (
            "expired",
            hand(all, format!(";created={now};expires={}", now - 1), &key_id),
        ),
        (
            "@method not covered",
            hand(
                r#""@authority" "@path""#,
                format!(";created={now}"),
                &key_id,
            ),
        ),
        (
            "rsa-pss-sha512",
            hand(
                all,
                format!(";created={now};alg=\"rsa-pss-sha512\""),
                &key_id,
            ),
        ),
        (
            "unknown keyid",
            hand(all, format!(";created={now}"), "hk_unknown"),
        ),
        (
            "malformed",
            vec![
                ("Signature-Input".into(), "sig1=(".into()),
                ("Signature".into(), "sig1=:AAAA:".into()),
            ],
        ),
    ] {
        assert_eq!(
            send(http::Method::GET, url.clone(), headers, vec![])
                .await
                .status,
            401,
            "{what}"
        );
    }
    // Revoked: refused within a second.
    kc.cli_ok(&["hmac", "revoke", &key_id]);
    let took = eventually(std::time::Duration::from_secs(1), || {
        let headers = hand(
            all,
            format!(
                ";created={};nonce=\"{}\"",
                keycard_server::now_secs(),
                keycard_core::random_base62(8).unwrap()
            ),
            &key_id,
        );
        let url = url.clone();
        async move { send(http::Method::GET, url, headers, vec![]).await.status == 401 }
    })
    .await;
    assert!(took.is_some(), "a revoked HMAC key still works");
    kc.stop();
    let audit = kc.cli_ok(&["audit", "--json", "--limit", "1000"]);
    for reason in [
        "\"replay\"",
        "\"bad_signature\"",
        "\"missing_component\"",
        "\"alg_mismatch\"",
        "\"revoked\"",
    ] {
        assert!(audit.contains(reason), "{reason} not audited: {audit}");
    }
}
