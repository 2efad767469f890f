//! The `api_key` method end to end, through a listening keycard and a real upstream.

use std::time::Duration;

use crate::common::{Keycard, http::Http, route, upstream};

async fn setup() -> (Keycard, Http) {
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &format!(
            "{}{}",
            route("/api/", &up, ""),
            route(
                "/orders/",
                &up,
                "scopes = [\"orders:read\"]\nmethods = [\"api_key\"]"
            )
        ),
    );
    kc.start();
    (kc, Http::new())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_key_reaches_the_upstream_with_identity_headers_and_without_the_key() {
    let (kc, http) = setup().await;
    let (id, key) = kc.create_key("billing", &["orders:read", "orders:write"], &[]);

    for headers in [
        vec![("x-api-key", key.as_str())],
        vec![("authorization", &*format!("Bearer {key}"))],
    ] {
        let r = http.get(&kc.url("/api/invoices?x=1"), &headers).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let up = r.json();
        assert_eq!(up["path"], "/api/invoices");
        assert_eq!(up["query"], "x=1");
        assert_eq!(
            r.upstream_header("x-keycard-subject").as_deref(),
            Some("billing")
        );
        assert_eq!(
            r.upstream_header("x-keycard-method").as_deref(),
            Some("api_key")
        );
        assert_eq!(
            r.upstream_header("x-keycard-scopes").as_deref(),
            Some("orders:read orders:write")
        );
        assert_eq!(
            r.upstream_header("x-keycard-credential").as_deref(),
            Some(id.as_str())
        );
        // The credential itself is not forwarded.
        assert_eq!(r.upstream_header("x-api-key"), None);
        assert_eq!(r.upstream_header("authorization"), None);
        assert!(r.upstream_header("x-request-id").is_some());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let (kc, http) = setup().await;
    let (_, key) = kc.create_key("billing", &[], &[]);
    let spoof = [
        ("x-api-key", key.as_str()),
        ("x-keycard-subject", "root"),
        ("x-keycard-scopes", "admin"),
        ("x-keycard-method", "mtls"),
        ("x-keycard-extra", "1"),
    ];
    let r = http.get(&kc.url("/api/x"), &spoof).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-keycard-subject").as_deref(),
        Some("billing")
    );
    assert_eq!(r.upstream_header("x-keycard-scopes").as_deref(), Some(""));
    assert_eq!(
        r.upstream_header("x-keycard-method").as_deref(),
        Some("api_key")
    );
    assert_eq!(r.upstream_header("x-keycard-extra"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_key_gets_the_same_401() {
    let (kc, http) = setup().await;
    let (revoked_id, revoked) = kc.create_key("svc", &[], &[]);
    kc.cli_ok(&["key", "revoke", &revoked_id]);
    let (_, expiring) = kc.create_key("svc", &[], &["--expires-in", "1s"]);
    let (_, good) = kc.create_key("svc", &[], &[]);
    // Same shape, valid checksum, never issued.
    let (_, unknown) = Keycard::new(None, "").create_key("svc", &[], &[]);
    let mut tampered = good.clone().into_bytes();
    tampered[12] = if tampered[12] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let truncated = &good[..good.len() - 1];
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let mut answers = Vec::new();
    for (what, key) in [
        ("unknown", unknown.as_str()),
        ("tampered checksum", &tampered),
        ("truncated", truncated),
        ("revoked", &revoked),
        ("expired", &expiring),
        ("garbage", "not-a-key"),
    ] {
        let r = http.get(&kc.url("/api/x"), &[("x-api-key", key)]).await;
        assert_eq!(r.status, 401, "{what}");
        answers.push((what, r.header("www-authenticate"), r.body.clone()));
        let r = http
            .get(
                &kc.url("/api/x"),
                &[("authorization", &format!("Bearer {key}"))],
            )
            .await;
        assert_eq!(r.status, 401, "{what} as bearer");
        answers.push((what, r.header("www-authenticate"), r.body.clone()));
    }
    for (what, challenge, body) in &answers {
        assert_eq!(body.as_ref(), br#"{"error":"unauthorized"}"#, "{what}");
        assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer realm="keycard", error="invalid_token""#),
            "{what}"
        );
    }
    // No credential at all: the same status and body; the challenge carries no error code
    // (RFC 6750 §3.1).
    let r = http.get(&kc.url("/api/x"), &[]).await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (401, &br#"{"error":"unauthorized"}"#[..])
    );
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(r#"Bearer realm="keycard""#)
    );
    // A key in the query string is never read.
    let r = http
        .get(&kc.url(&format!("/api/x?api_key={good}")), &[])
        .await;
    assert_eq!(r.status, 401);
    // The good one still works.
    assert_eq!(
        http.get(&kc.url("/api/x"), &[("x-api-key", &good)])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_lacking_a_route_scope_gets_403() {
    let (kc, http) = setup().await;
    let (_, reader) = kc.create_key("reader", &["orders:read"], &[]);
    let (_, other) = kc.create_key("other", &["invoices:read"], &[]);
    assert_eq!(
        http.get(&kc.url("/orders/1"), &[("x-api-key", &reader)])
            .await
            .status,
        200
    );
    let r = http
        .get(&kc.url("/orders/1"), &[("x-api-key", &other)])
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body.as_ref(), br#"{"error":"insufficient_scope"}"#);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(r#"Bearer realm="keycard", error="insufficient_scope", scope="orders:read""#)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_works_until_the_grace_ends_then_not() {
    let (kc, http) = setup().await;
    let (old_id, old) = kc.create_key("svc", &["orders:read"], &["--name", "ci"]);
    assert_eq!(
        http.get(&kc.url("/api/x"), &[("x-api-key", &old)])
            .await
            .status,
        200
    );
    let out: serde_json::Value =
        serde_json::from_str(&kc.cli_ok(&["key", "rotate", &old_id, "--grace", "2s", "--json"]))
            .unwrap();
    let new = out["key"].as_str().unwrap().to_owned();
    assert_eq!(out["subject"], "svc");
    assert_eq!(out["scopes"], serde_json::json!(["orders:read"]));
    assert_ne!(new, old);
    // Both work during the grace.
    assert_eq!(
        http.get(&kc.url("/api/x"), &[("x-api-key", &old)])
            .await
            .status,
        200
    );
    assert_eq!(
        http.get(&kc.url("/api/x"), &[("x-api-key", &new)])
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        http.get(&kc.url("/api/x"), &[("x-api-key", &old)])
            .await
            .status,
        401
    );
    assert_eq!(
        http.get(&kc.url("/api/x"), &[("x-api-key", &new)])
            .await
            .status,
        200
    );

    // Without --grace the old key is refused at once.
    let new_id = out["id"].as_str().unwrap().to_owned();
    kc.cli_ok(&["key", "rotate", &new_id]);
    let refused = crate::common::eventually(Duration::from_secs(1), || {
        let http = http.clone();
        let (url, new) = (kc.url("/api/x"), new.clone());
        async move { http.get(&url, &[("x-api-key", &new)]).await.status == 401 }
    })
    .await;
    assert!(refused.is_some(), "a key rotated without grace still works");
}
