//! `keycard backup` of a SQLite store while keycard serves it, and `keycard restore` of that
//! backup into another, stopped deployment with the same master key: every kind of
//! credential works there, and the first keycard never stopped answering. Refused: a backup
//! over an existing file, a restore over a store in use, a backup sealed with another master
//! key, a file that is no store, and either command on PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::{Keycard, engines, http::Http, route, store_for, upstream};
use crate::oauth::{basic, post_form};

const PASSWORD: &str = "a long pass phrase 4 backup";

#[tokio::test(flavor = "multi_thread")]
async fn backup_while_serving_then_restore_elsewhere() {
    let up = upstream::start().await;
    let routes = route("/api/", &up, "");
    let mut a = Keycard::new(None, &routes);
    let (_, key) = a.create_key("svc", &[], &[]);
    a.add_user("alice", PASSWORD, &[]);
    let client: serde_json::Value = serde_json::from_str(&a.cli_ok(&[
        "client",
        "create",
        "worker",
        "--grant",
        "client_credentials",
        "--json",
    ]))
    .unwrap();
    let client_secret = client["client_secret"].as_str().unwrap().to_owned();
    a.start();

    // Requests run all through the backup: every one answered.
    let http = Http::new();
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let (http, url, key, running) =
            (http.clone(), a.url("/api/x"), key.clone(), running.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while running.load(Ordering::Relaxed) {
                statuses.push(http.get(&url, &[("x-api-key", &key)]).await.status);
            }
            statuses
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let file = a.path("backup.db");
    let file_arg = file.to_str().unwrap();
    let made: serde_json::Value =
        serde_json::from_str(&a.cli_ok(&["backup", file_arg, "--json"])).unwrap();
    assert!(made["bytes"].as_u64().unwrap() > 0, "{made}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    running.store(false, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| *s == 200),
        "{statuses:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Never over an existing file.
    let before = std::fs::read(&file).unwrap();
    let again = a.cli(&["backup", file_arg]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(std::fs::read(&file).unwrap(), before);
    // Never over a store in use.
    let busy = a.cli(&["restore", file_arg]);
    let err = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(busy.status.code(), Some(1), "{err}");
    assert!(err.contains("in use"), "{err}");

    // Another deployment, stopped, with the same master key: restored, it knows them all.
    let mut b = Keycard::new(None, &routes);
    std::fs::create_dir_all(b.path("data")).unwrap();
    std::fs::copy(a.path("data/master.key"), b.path("data/master.key")).unwrap();
    let restored: serde_json::Value =
        serde_json::from_str(&b.cli_ok(&["restore", file_arg, "--json"])).unwrap();
    assert_eq!(
        restored["replaced_kept_at"],
        serde_json::Value::Null,
        "{restored}"
    );
    b.start();
    for kc in [&a, &b] {
        let url = kc.url("/api/x");
        assert_eq!(http.get(&url, &[("x-api-key", &key)]).await.status, 200);
        let pw = basic("alice", PASSWORD);
        assert_eq!(http.get(&url, &[("authorization", &pw)]).await.status, 200);
        let t = post_form(
            &http,
            &kc.url("/oauth2/token"),
            &[("authorization", &basic("worker", &client_secret))],
            "grant_type=client_credentials",
        )
        .await;
        assert_eq!(t.status, 200);
        let token = t.json()["access_token"].as_str().unwrap().to_owned();
        let bearer = format!("Bearer {token}");
        assert_eq!(
            http.get(&url, &[("authorization", &bearer)]).await.status,
            200
        );
        assert_eq!(
            http.get(&url, &[("x-api-key", "kc_not_a_key")])
                .await
                .status,
            401
        );
    }
    b.stop();
    // Restored again over its own store: the one replaced is kept.
    let again: serde_json::Value =
        serde_json::from_str(&b.cli_ok(&["restore", file_arg, "--json"])).unwrap();
    let kept = again["replaced_kept_at"].as_str().unwrap();
    assert!(std::path::Path::new(kept).exists(), "{again}");
    a.stop();

    // A deployment with a master key of its own: refused, its store untouched.
    let c = Keycard::new(None, &routes);
    c.create_key("own", &[], &[]);
    let own = std::fs::read(c.path("data/keycard.db")).unwrap();
    let other = c.cli(&["restore", file_arg]);
    let err = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(1), "{err}");
    assert!(err.contains("sealed with another master key"), "{err}");
    assert_eq!(std::fs::read(c.path("data/keycard.db")).unwrap(), own);
    // A file that is no store.
    std::fs::write(c.path("junk.db"), b"not a database at all, just text").unwrap();
    let junk = c.cli(&["restore", c.path("junk.db").to_str().unwrap()]);
    assert_eq!(junk.status.code(), Some(1));
    assert_eq!(std::fs::read(c.path("data/keycard.db")).unwrap(), own);
}

/// On PostgreSQL both commands refuse, pointing at pg_dump (exit 2).
#[tokio::test(flavor = "multi_thread")]
async fn postgres_stores_are_backed_up_with_pg_dump() {
    if !engines().contains(&"postgres") {
        return;
    }
    let Some(temp) = store_for("postgres").await else {
        return;
    };
    let kc = Keycard::new(Some(&temp.url), "");
    for args in [
        &["backup", "/tmp/never-written.db"][..],
        &["restore", "/tmp/x.db"],
    ] {
        let out = kc.cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("pg_"), "{err}");
    }
    assert!(!std::path::Path::new("/tmp/never-written.db").exists());
    temp.cleanup().await;
}
