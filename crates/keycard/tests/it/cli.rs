//! The command line: config errors, JSON shapes, audit filters, global flags.

use std::process::Command;

use crate::common::{Keycard, bin, http::Http, route, upstream};

#[test]
fn serve_refuses_a_bad_config_with_exit_2_naming_the_key() {
    let cases = [
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
        ("[routes]\n", "routes"),
        (
            "[[routes]]\nprefix = \"/a/\"\nmethods = [\"api_key\", \"magic\"]\n",
            "routes[0].methods[1]",
        ),
        (
            "[[routes]]\nprefix = \"/a/\"\nupstrem = \"http://x\"\n",
            "upstrem",
        ),
        ("[store]\nurl = \"mysql://x\"\n", "store.url"),
        ("not toml at all = = =\n", "line 1"),
    ];
    for (text, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        assert!(
            err.contains(key) && err.contains("k.toml"),
            "{text:?}: {err}"
        );
    }
    let out = Command::new(bin())
        .args(["serve", "--config", "/nonexistent/k.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/k.toml"));
}

#[test]
fn key_commands_json_shapes_and_errors() {
    let kc = Keycard::new(None, "");
    let v: serde_json::Value = serde_json::from_str(&kc.cli_ok(&[
        "key",
        "create",
        "--subject",
        "svc",
        "--scope",
        "b",
        "--scope",
        "a",
        "--expires-in",
        "30d",
        "--json",
    ]))
    .unwrap();
    let obj = v.as_object().unwrap();
    for field in ["id", "key", "subject", "scopes", "expires_at"] {
        assert!(obj.contains_key(field), "missing {field}");
    }
    assert_eq!(v["subject"], "svc");
    assert_eq!(v["scopes"], serde_json::json!(["a", "b"]));
    assert!(v["key"].as_str().unwrap().starts_with("kc_"));
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    let id = v["id"].as_str().unwrap();

    // Global flags before or after the subcommand.
    let list = Command::new(bin())
        .arg("--config")
        .arg(&kc.config)
        .args(["key", "list", "--json"])
        .output()
        .unwrap();
    let list2 = Command::new(bin())
        .args(["key", "list", "--json", "--config"])
        .arg(&kc.config)
        .output()
        .unwrap();
    assert_eq!(list.stdout, list2.stdout);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["status"], "active");
    assert!(
        listed[0].get("key").is_none(),
        "list must never show key material"
    );
    // KEYCARD_CONFIG works too.
    let via_env = Command::new(bin())
        .env("KEYCARD_CONFIG", &kc.config)
        .args(["key", "list", "--json"])
        .output()
        .unwrap();
    assert_eq!(via_env.stdout, list.stdout);
    let never: serde_json::Value =
        serde_json::from_str(&kc.cli_ok(&["key", "create", "--subject", "svc2", "--json"]))
            .unwrap();
    assert!(never["expires_at"].is_null());

    kc.cli_ok(&["key", "revoke", id]);
    let again = kc.cli(&["key", "revoke", id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already revoked"));
    let unknown = kc.cli(&["key", "revoke", "key_nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not found"));
    for bad in [
        vec!["key", "create", "--subject", "svc", "--scope", "has space"],
        vec!["key", "create", "--subject", "svc", "--expires-in", "soon"],
        vec!["key", "create", "--subject", "svc", "--expires-in", "0s"],
        vec!["key", "create", "--subject", ""],
        vec!["key", "rotate", "key_x", "--grace", "-1s"],
    ] {
        let out = kc.cli(&bad);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listed: serde_json::Value =
        serde_json::from_str(&kc.cli_ok(&["key", "list", "--subject", "svc", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["status"], "revoked");
}

#[cfg(unix)]
#[test]
fn the_master_key_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let kc = Keycard::new(None, "");
    kc.create_key("svc", &[], &[]);
    let mode = std::fs::metadata(kc.path("data/master.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_records_every_attempt_and_filters() {
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &format!(
            "{}{}",
            route("/api/", &up, ""),
            route("/adm/", &up, "scopes = [\"admin\"]")
        ),
    );
    kc.start();
    let (id, key) = kc.create_key("alice", &[], &[]);
    let (bob_id, bob) = kc.create_key("bob", &[], &[]);
    let http = Http::new();
    http.get(&kc.url("/api/x"), &[("x-api-key", &key)]).await;
    http.get(&kc.url("/api/x"), &[("x-api-key", "kc_bad")])
        .await;
    http.get(&kc.url("/adm/x"), &[("x-api-key", &bob)]).await;
    http.get(&kc.url("/api/x"), &[]).await;
    kc.cli_ok(&["key", "revoke", &id]);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    http.get(&kc.url("/api/x"), &[("x-api-key", &key)]).await;
    kc.stop();

    let everything: Vec<serde_json::Value> =
        serde_json::from_str(&kc.cli_ok(&["audit", "--json"])).unwrap();
    // The CLI's own operations are audited too: route `cli`, actor `cli`, the operation and
    // its target (the new key's id, the revoked one).
    let mut managed: Vec<(String, String)> = everything
        .iter()
        .filter(|e| e["route"] == "cli")
        .map(|e| {
            assert_eq!(e["actor"], "cli", "{e}");
            assert_eq!(e["outcome"], "success", "{e}");
            (
                e["operation"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    managed.sort();
    let mut created = [id.clone(), bob_id.clone()];
    created.sort();
    let want: Vec<(String, String)> = created
        .iter()
        .map(|t| ("key.create".to_owned(), t.clone()))
        .chain([("key.revoke".to_owned(), id.clone())])
        .collect();
    assert_eq!(managed, want);
    let all: Vec<serde_json::Value> = everything
        .into_iter()
        .filter(|e| e["route"] != "cli")
        .collect();
    assert_eq!(all.len(), 5, "{all:#?}");
    for e in &all {
        let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        for f in [
            "ts",
            "request_id",
            "route",
            "method",
            "outcome",
            "reason",
            "subject",
            "credential_id",
            "ip",
        ] {
            assert!(keys.contains(&f), "event lacks {f}: {e}");
        }
    }
    let summary: Vec<(String, String, String)> = all
        .iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap_or("-").to_owned(),
                e["subject"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    let expect = [
        ("success", "-", "alice"),
        ("failure", "malformed", "-"),
        ("forbidden", "missing_scope", "bob"),
        ("failure", "no_credential", "-"),
        ("failure", "revoked", "alice"),
    ];
    assert_eq!(
        summary,
        expect.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    assert_eq!(all[0]["method"], "api_key");
    assert!(all[3]["method"].is_null());

    let alice: Vec<serde_json::Value> =
        serde_json::from_str(&kc.cli_ok(&["audit", "--subject", "alice", "--json"])).unwrap();
    assert_eq!(alice.len(), 2);
    let failures: Vec<serde_json::Value> = serde_json::from_str(&kc.cli_ok(&[
        "audit",
        "--outcome",
        "failure",
        "--since",
        "10m",
        "--json",
    ]))
    .unwrap();
    assert_eq!(failures.len(), 3);
    let none: Vec<serde_json::Value> =
        serde_json::from_str(&kc.cli_ok(&["audit", "--outcome", "throttled", "--json"])).unwrap();
    assert!(none.is_empty());
    // The file holds the same events.
    let file = std::fs::read_to_string(kc.path("data/audit.jsonl")).unwrap();
    let cli_lines = file
        .lines()
        .filter(|l| l.contains(r#""route":"cli""#))
        .count();
    assert_eq!((file.lines().count(), cli_lines), (8, 3), "{file}");
    // The plain form is readable.
    assert!(kc.cli_ok(&["audit"]).contains("missing_scope"));
}

/// Runs each of `commands` on `kc`'s config: each must fail with exit 1, saying `why`.
fn refused(kc: &Keycard, commands: &[&[&str]], why: &str) {
    for args in commands {
        let out = kc.cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
}

/// `keycard` run in `dir` with no config anywhere (no flag, no KEYCARD_CONFIG, no
/// ./keycard.toml).
fn bare(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .current_dir(dir)
        .args(args)
        .env_remove("KEYCARD_CONFIG")
        .env_remove("KEYCARD_MASTER_KEY")
        .output()
        .unwrap()
}

/// A management command that finds no config refuses (exit 2, naming the ways to say
/// which store) and creates nothing; `doctor` says there is nothing to check; `--data-dir`
/// names a store under the built-in defaults.
#[test]
fn no_config_makes_no_second_store() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["key", "create", "--subject", "svc"][..],
        &["key", "list"],
        &["user", "list"],
        &["hmac", "list"],
        &["client", "list"],
        &["cert", "list"],
        &["signing-key", "rotate"],
        &["audit"],
    ] {
        let out = bare(dir.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("--config")
                && err.contains("KEYCARD_CONFIG")
                && err.contains("--data-dir"),
            "{args:?}: {err}"
        );
    }
    let out = bare(dir.path(), &["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(findings[0]["code"], "no_config", "{findings}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing is created without a config"
    );

    let out = bare(
        dir.path(),
        &[
            "--data-dir",
            "d",
            "key",
            "create",
            "--subject",
            "svc",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["d/keycard.db", "d/master.key"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let listed = bare(dir.path(), &["--data-dir", "d", "key", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    std::fs::write(dir.path().join("k.toml"), "").unwrap();
    let out = bare(
        dir.path(),
        &["--data-dir", "d", "--config", "k.toml", "key", "list"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data-dir"));
}

/// A config whose SQLite store does not exist: `doctor` says so and does not create it.
#[test]
fn doctor_never_creates_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("k.toml");
    std::fs::write(
        &config,
        "[store]\nurl = \"sqlite://data/keycard.db\"\n[secrets]\nmaster_key_file = \"data/master.key\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["doctor", "--json", "--config"])
        .arg(&config)
        .env_remove("KEYCARD_MASTER_KEY")
        .output()
        .unwrap();
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        findings
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "store_missing"),
        "{findings}"
    );
    assert!(!dir.path().join("data").exists());
}

/// A store is sealed with the master key it was made with: every command, `serve` and
/// `doctor` refuse another key, and none makes up a key when the file is gone.
#[test]
fn a_store_refuses_another_master_key() {
    let kc = Keycard::new(None, "");
    kc.create_key("svc", &[], &[]);
    let key_file = kc.path("data/master.key");
    let right = std::fs::read(&key_file).unwrap();
    let other = tempfile::tempdir().unwrap();
    let other_key = other.path().join("other.key");
    let made = Command::new(bin())
        .args(["--data-dir"])
        .arg(other.path())
        .args(["key", "list"])
        .env_remove("KEYCARD_MASTER_KEY")
        .output()
        .unwrap();
    assert!(made.status.success());
    std::fs::rename(other.path().join("master.key"), &other_key).unwrap();
    std::fs::copy(&other_key, &key_file).unwrap();

    refused(
        &kc,
        &[&["key", "list"], &["serve"]],
        "this store was sealed with another master key",
    );
    let doctor: serde_json::Value =
        serde_json::from_slice(&kc.cli(&["doctor", "--json"]).stdout).unwrap();
    assert!(
        doctor
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "master_key_mismatch" && f["severity"] == "critical"),
        "{doctor}"
    );
    // The key in the environment is held to the same check.
    let out = Command::new(bin())
        .arg("--config")
        .arg(kc.path("keycard.toml"))
        .args(["key", "list"])
        .env(
            "KEYCARD_MASTER_KEY",
            String::from_utf8_lossy(&std::fs::read(&other_key).unwrap()).trim(),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    std::fs::remove_file(&key_file).unwrap();
    refused(&kc, &[&["key", "list"]], "does not exist");
    assert!(!key_file.exists(), "no key is made up for a sealed store");

    std::fs::write(&key_file, &right).unwrap();
    kc.cli_ok(&["key", "list"]);
}

/// A store from a keycard that recorded no check value, holding credentials but no sealed
/// key to test a master key on: with its key file gone, no new key is made up for it (and
/// the store is not sealed to one); its own key still opens it.
#[test]
fn a_store_without_a_check_value_gets_no_made_up_key() {
    let kc = Keycard::new(None, "");
    kc.create_key("svc", &[], &[]);
    let forget = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('DROP TABLE keycard_meta'); c.execute('DELETE FROM keycard_migrations WHERE version >= 11'); c.commit()",
        ])
        .arg(kc.path("data/keycard.db"))
        .status()
        .unwrap();
    assert!(forget.success());
    let key_file = kc.path("data/master.key");
    let right = std::fs::read(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();
    refused(&kc, &[&["key", "list"], &["serve"]], "does not exist");
    assert!(!key_file.exists(), "a master key was made up");
    let doctor: serde_json::Value =
        serde_json::from_slice(&kc.cli(&["doctor", "--json"]).stdout).unwrap();
    assert!(
        doctor
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "master_key_mismatch"),
        "{doctor}"
    );
    std::fs::write(&key_file, &right).unwrap();
    kc.cli_ok(&["key", "list"]);
}

/// A SQLite store file emptied (truncated, or replaced by an empty file) is refused, not
/// started afresh as a new store.
#[test]
fn an_emptied_store_file_is_refused() {
    let kc = Keycard::new(None, "");
    kc.create_key("svc", &[], &[]);
    std::fs::write(kc.path("data/keycard.db"), b"").unwrap();
    refused(&kc, &[&["key", "list"], &["serve"]], "is an empty file");
    assert_eq!(
        std::fs::metadata(kc.path("data/keycard.db")).unwrap().len(),
        0
    );
}

/// A SQLite store overwritten under a running keycard: `/_keycard/ready` stops saying it is
/// ready (a bare `SELECT 1`, or a pooled connection's cached pages, would not notice).
#[tokio::test(flavor = "multi_thread")]
async fn ready_reads_the_store_itself() {
    let mut kc = Keycard::new(None, "");
    kc.start();
    let http = Http::new();
    assert_eq!(http.get(&kc.url("/_keycard/ready"), &[]).await.status, 200);
    // The same files (the open connections keep reading them), every byte garbage: the
    // database and its write-ahead log, where the newest pages are.
    for f in ["data/keycard.db", "data/keycard.db-wal"] {
        let path = kc.path(f);
        let len = usize::try_from(std::fs::metadata(&path).unwrap().len()).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &vec![0x5a; len]))
            .unwrap();
    }
    let refused = crate::common::eventually(std::time::Duration::from_secs(10), || async {
        http.get(&kc.url("/_keycard/ready"), &[]).await.status == 503
    })
    .await;
    assert!(
        refused.is_some(),
        "ready still says 200 over a destroyed store"
    );
    kc.stop();
}

/// SIGHUP does not end a plain-HTTP `keycard serve` (its default would, losing the audit
/// events still queued): it keeps answering, and SIGTERM afterwards writes every event.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_does_not_end_serve() {
    let up = upstream::start().await;
    let mut kc = Keycard::new(None, &route("/api/", &up, ""));
    let (_, key) = kc.create_key("svc", &[], &[]);
    kc.start();
    let http = Http::new();
    assert_eq!(
        http.get(&kc.url("/api/x"), &[("x-api-key", &key)])
            .await
            .status,
        200
    );
    kc.hangup(0);
    let logged = crate::common::eventually(std::time::Duration::from_secs(5), || async {
        kc.log(0).iter().any(|l| l.contains("SIGHUP"))
    })
    .await;
    assert!(logged.is_some(), "{:?}", kc.log(0));
    assert_eq!(
        http.get(&kc.url("/api/x"), &[("x-api-key", &key)])
            .await
            .status,
        200
    );
    kc.stop();
    let events: Vec<serde_json::Value> =
        serde_json::from_str(&kc.cli_ok(&["audit", "--json", "--subject", "svc"])).unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e["outcome"] == "success" && e["route"] == "/api/")
            .count(),
        2,
        "{events:?}"
    );
}

/// `--version` names the commit it was built from; `completions` prints scripts the shells
/// take (bash is run with it), `man` a manual page; neither needs a config.
#[test]
fn version_completions_and_manual_page() {
    let version = Command::new(bin()).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(
        version.starts_with(&format!("keycard {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let head = Command::new("git")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if let Some(commit) = head {
        assert!(
            version.contains(&format!("({commit})")),
            "{version} is not commit {commit}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = bare(dir.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("keycard") && script.contains("signing-key"),
            "{shell}"
        );
    }
    let script = dir.path().join("keycard.bash");
    std::fs::write(&script, bare(dir.path(), &["completions", "bash"]).stdout).unwrap();
    // Completing `keycard ke` offers `key`.
    let completed = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(keycard ke); COMP_CWORD=1; COMP_LINE='keycard ke'; COMP_POINT=10; _keycard keycard ke keycard; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    let offered = String::from_utf8_lossy(&completed.stdout);
    assert!(offered.lines().any(|l| l == "key"), "{offered}");
    assert!(
        !std::fs::read_dir(dir.path())
            .unwrap()
            .any(|e| e.unwrap().file_name() != "keycard.bash")
    );

    let man = bare(dir.path(), &["man"]);
    assert!(man.status.success());
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        page.contains(".TH keycard 1") && page.contains("serve"),
        "{page}"
    );
    assert!(bare(dir.path(), &["completions", "tcsh"]).status.code() == Some(2));
}
