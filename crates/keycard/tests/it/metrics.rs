//! `/_keycard/metrics`: on the public port only with `keycard:metrics`, and there without the
//! reasons that tell credentials apart; every reason on `server.metrics_listen`, which serves
//! nothing else.

use base64::Engine;

use crate::common::http::Http;
use crate::common::nginx::free_port;
use crate::common::{Keycard, eventually, route, upstream};

#[tokio::test(flavor = "multi_thread")]
async fn metrics_need_a_scope_on_the_public_port_and_tell_reasons_only_on_their_own() {
    let up = upstream::start().await;
    let port = free_port();
    let mut kc = Keycard::new(
        None,
        &route("/api/", &up, "methods = [\"basic\", \"api_key\"]"),
    );
    let cfg = std::fs::read_to_string(&kc.config).unwrap();
    std::fs::write(
        &kc.config,
        cfg.replacen(
            "[server]\n",
            &format!("[server]\nmetrics_listen = \"127.0.0.1:{port}\"\n"),
            1,
        ),
    )
    .unwrap();
    kc.start();
    kc.add_user("alice", "correct horse battery staple", &[]);
    let (_, scraper) = kc.create_key("prometheus", &["keycard:metrics"], &[]);
    let (_, other) = kc.create_key("svc", &["orders:read"], &[]);
    let http = Http::new();
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let api = kc.url("/api/x");
    for (u, p) in [("alice", "wrong password"), ("mallory", "anything")] {
        let r = http.get(&api, &[("authorization", &basic(u, p))]).await;
        assert_eq!(r.status, 401);
    }
    let own = format!("http://127.0.0.1:{port}/_keycard/metrics");
    // Every reason on the metrics listener (the audit writer counts them: wait for both).
    let full = eventually(std::time::Duration::from_secs(3), || {
        let (http, own) = (http.clone(), own.clone());
        async move {
            let r = http.get(&own, &[]).await;
            let text = String::from_utf8_lossy(&r.body).into_owned();
            r.status == 200
                && text.contains("reason=\"bad_password\"")
                && text.contains("reason=\"unknown_credential\"")
        }
    })
    .await;
    assert!(full.is_some());

    // The public port: a credential with the scope, and no telling reasons.
    let public = kc.url("/_keycard/metrics");
    assert_eq!(http.get(&public, &[]).await.status, 401);
    assert_eq!(
        http.get(&public, &[("x-api-key", &other)]).await.status,
        403
    );
    let r = http.get(&public, &[("x-api-key", &scraper)]).await;
    assert_eq!(r.status, 200);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(body.contains("keycard_decisions_total"), "{body}");
    for telling in ["bad_password", "unknown_credential", "revoked", "disabled"] {
        assert!(!body.contains(telling), "{telling} on the public port");
    }
    assert!(
        body.contains(
            "keycard_decisions_total{method=\"basic\",outcome=\"failure\",reason=\"invalid_credential\"} 2"
        ),
        "{body}"
    );

    // The metrics listener serves nothing else.
    let base = format!("http://127.0.0.1:{port}");
    for path in [
        "/api/x",
        "/_keycard/admin/v1/keys",
        "/_keycard/verify",
        "/oauth2/token",
    ] {
        let r = http
            .get(&format!("{base}{path}"), &[("x-api-key", &scraper)])
            .await;
        assert_eq!(r.status, 404, "{path}");
    }
    assert_eq!(
        http.get(&format!("{base}/_keycard/health"), &[])
            .await
            .status,
        200
    );
}
