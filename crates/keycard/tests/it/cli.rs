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
