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
    let client_secret = a.create_worker_client("worker");
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
    assert!(err.contains("open in another process"), "{err}");

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

    // Twice in the same second: each replaced store is kept under a name of its own.
    let first = b.cli_ok(&["restore", file_arg, "--json"]);
    let second = b.cli_ok(&["restore", file_arg, "--json"]);
    let kept_at = |out: &str| {
        serde_json::from_str::<serde_json::Value>(out).unwrap()["replaced_kept_at"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (k1, k2) = (kept_at(&first), kept_at(&second));
    assert_ne!(k1, k2);
    assert!(std::path::Path::new(&k1).exists() && std::path::Path::new(&k2).exists());
    // The store itself is no backup of itself.
    let store = b.path("data/keycard.db");
    let own = b.cli(&["restore", store.to_str().unwrap()]);
    assert_eq!(own.status.code(), Some(1));
    assert!(std::fs::metadata(&store).unwrap().len() > 0);
    // A backup readable by all gives a store readable by its owner alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let open = b.path("open.db");
        std::fs::copy(&file, &open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
        b.cli_ok(&["restore", open.to_str().unwrap()]);
        let mode = std::fs::metadata(&store).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A command that leaves the write-ahead log behind does not make the store "in use".
    b.create_key("after", &[], &[]);
    b.cli_ok(&["restore", file_arg]);
    // A path SQLite could read as a URI is written as the file it names.
    let uri_like = a.path("file:snapshot.db");
    std::fs::create_dir_all(a.path("data")).unwrap();
    let written = std::process::Command::new(crate::common::bin())
        .current_dir(a.path(""))
        .args([
            "--config",
            a.path("keycard.toml").to_str().unwrap(),
            "backup",
            "file:snapshot.db",
        ])
        .env_remove("KEYCARD_MASTER_KEY")
        .output()
        .unwrap();
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    assert!(std::fs::metadata(&uri_like).unwrap().len() > 0);

    // A deployment with a master key of its own: refused, its store untouched.
    let c = Keycard::new(None, &routes);
    c.create_key("own", &[], &[]);
    let own = std::fs::read(c.path("data/keycard.db")).unwrap();
    let other = c.cli(&["restore", file_arg]);
    let err = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(1), "{err}");
    assert!(err.contains("sealed with another master key"), "{err}");
    assert_eq!(std::fs::read(c.path("data/keycard.db")).unwrap(), own);
    // Files that are no store keycard wrote: a schema version below 1, a check value that
    // is not text.
    for edit in [
        "DELETE FROM keycard_migrations; INSERT INTO keycard_migrations VALUES (-5, 0)",
        "UPDATE keycard_meta SET value = x'07' WHERE name = 'master_key_check'",
    ] {
        let forged = c.path("forged.db");
        std::fs::copy(&file, &forged).unwrap();
        let edited = std::process::Command::new("python3")
            .args(["-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()"])
            .arg(&forged)
            .arg(edit)
            .output()
            .unwrap();
        assert!(
            edited.status.success(),
            "{}",
            String::from_utf8_lossy(&edited.stderr)
        );
        let out = c.cli(&["restore", forged.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{edit}");
        assert_eq!(
            std::fs::read(c.path("data/keycard.db")).unwrap(),
            own,
            "{edit}"
        );
        std::fs::remove_file(&forged).unwrap();
    }
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

/// A store reached through a symlink is judged by the file it points to: restoring while a
/// keycard serves it is refused, and the symlink is left as it was.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_symlinked_store_in_use_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir_all(&real).unwrap();
    let link = dir.path().join("keycard.db");
    std::os::unix::fs::symlink(real.join("keycard.db"), &link).unwrap();
    let mut kc = Keycard::new(Some(&format!("sqlite://{}", link.display())), "");
    kc.create_key("svc", &[], &[]);
    kc.start();
    let file = dir.path().join("b.db");
    kc.cli_ok(&["backup", file.to_str().unwrap()]);
    let out = kc.cli(&["restore", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("open in another process"), "{err}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    kc.stop();
}
