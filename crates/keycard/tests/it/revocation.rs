//! Changes made by the CLI (or another instance) reach every running instance within a
//! second, on SQLite and PostgreSQL; and no key text is ever stored.

use std::time::{Duration, Instant};

use crate::common::{
    Keycard, TempStore, all_bytes_under, contains, engines, eventually, http::Http, route,
    store_for, upstream,
};

async fn status(http: &Http, url: &str, key: &str) -> u16 {
    http.get(url, &[("x-api-key", key)]).await.status
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_revoked_with_the_cli_is_refused_within_one_second() {
    for engine in engines() {
        let temp = store_for(engine).await;
        let up = upstream::start().await;
        let mut kc = Keycard::new(
            temp.as_ref().map(|t| t.url.as_str()),
            &route("/api/", &up, ""),
        );
        kc.start();
        let http = Http::new();
        let (id, key) = kc.create_key("svc", &[], &[]);
        // Cached by the first request.
        assert_eq!(
            status(&http, &kc.url("/api/x"), &key).await,
            200,
            "{engine}"
        );
        assert_eq!(
            status(&http, &kc.url("/api/x"), &key).await,
            200,
            "{engine}"
        );
        kc.cli_ok(&["key", "revoke", &id]);
        let revoked_at = Instant::now();
        let took = eventually(Duration::from_secs(1), || {
            let (http, url, key) = (http.clone(), kc.url("/api/x"), key.clone());
            async move { status(&http, &url, &key).await == 401 }
        })
        .await;
        assert!(
            took.is_some(),
            "{engine}: revoked key still accepted after {:?}",
            revoked_at.elapsed()
        );
        eprintln!(
            "{engine}: revocation took effect after {:?}",
            took.unwrap_or_default()
        );
        kc.stop();
        if let Some(t) = temp {
            t.cleanup().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_on_the_same_postgres_sees_the_revocation_too() {
    if crate::common::postgres_admin_url().is_none() {
        eprintln!("note: KEYCARD_TEST_POSTGRES_URL is not set; the two-instance test is skipped");
        return;
    }
    let temp = TempStore::new("postgres")
        .await
        .expect("PostgreSQL is configured but does not answer");
    let up = upstream::start().await;
    let mut kc = Keycard::new(Some(&temp.url), &route("/api/", &up, ""));
    let a = kc.start();
    let b = kc.start();
    let http = Http::new();
    let (id, key) = kc.create_key("svc", &[], &[]);
    let urls = [format!("http://{a}/api/x"), format!("http://{b}/api/x")];
    for u in &urls {
        assert_eq!(status(&http, u, &key).await, 200);
    }
    kc.cli_ok(&["key", "revoke", &id]);
    for u in &urls {
        let took = eventually(Duration::from_secs(1), || {
            let (http, u, key) = (http.clone(), u.clone(), key.clone());
            async move { status(&http, &u, &key).await == 401 }
        })
        .await;
        assert!(took.is_some(), "{u} still accepts a revoked key");
    }
    kc.stop();
    temp.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_key_text_in_the_store_or_the_audit_log() {
    for engine in engines() {
        let temp = store_for(engine).await;
        let up = upstream::start().await;
        let mut kc = Keycard::new(
            temp.as_ref().map(|t| t.url.as_str()),
            &route("/api/", &up, "scopes = [\"x\"]"),
        );
        kc.start();
        let http = Http::new();
        let (id, good) = kc.create_key("svc", &["x"], &[]);
        let (_, noscope) = kc.create_key("svc2", &[], &[]);
        let rotated: serde_json::Value =
            serde_json::from_str(&kc.cli_ok(&["key", "rotate", &id, "--grace", "1h", "--json"]))
                .unwrap();
        let rotated = rotated["key"].as_str().unwrap().to_owned();
        let wrong = format!("{}x", &good[..good.len() - 1]);
        for k in [&good, &noscope, &rotated, &wrong] {
            http.get(&kc.url("/api/x"), &[("x-api-key", k)]).await;
            http.get(
                &kc.url("/api/x"),
                &[("authorization", &format!("Bearer {k}"))],
            )
            .await;
        }
        kc.stop(); // flushes the audit queue
        let audit = std::fs::read_to_string(kc.path("data/audit.jsonl")).unwrap();
        assert!(
            audit.lines().count() >= 8,
            "{engine}: audit has {} lines",
            audit.lines().count()
        );
        let mut haystacks = all_bytes_under(kc.dir.path());
        if let Some(t) = &temp {
            let dump = std::process::Command::new("pg_dump")
                .arg("--data-only")
                .arg(&t.url)
                .output()
                .unwrap();
            assert!(
                dump.status.success(),
                "pg_dump failed: {}",
                String::from_utf8_lossy(&dump.stderr)
            );
            haystacks.push(("pg_dump".into(), dump.stdout));
        }
        for k in [&good, &noscope, &rotated, &wrong] {
            // The whole key, and its random part alone.
            for needle in [k.as_str(), &k[3..30]] {
                for (path, bytes) in &haystacks {
                    assert!(
                        !contains(bytes, needle.as_bytes()),
                        "{engine}: key text found in {}",
                        path.display()
                    );
                }
            }
        }
        if let Some(t) = temp {
            t.cleanup().await;
        }
    }
}
