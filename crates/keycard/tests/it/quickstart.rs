//! `keycard quickstart`: every command it prints works when pasted.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::bin;

#[test]
fn every_printed_command_works_on_every_run() {
    let dir = tempfile::tempdir().unwrap();
    // A second run on the same folder finds its demo data and still works.
    for _ in 0..2 {
        run_once(dir.path());
    }
}

fn run_once(dir: &std::path::Path) {
    let mut child = Command::new(bin())
        .args(["quickstart", "--listen", "127.0.0.1:0", "--json", "--dir"])
        .arg(dir.join("demo"))
        .env_remove("KEYCARD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let examples = info["examples"].as_array().unwrap();
    for m in ["api_key", "basic", "digest", "oauth2", "hmac"] {
        assert!(examples.iter().any(|e| e["method"] == m), "no {m} example");
    }
    let mut failures = Vec::new();
    for e in examples {
        let cmd = e["command"].as_str().unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{cmd} -w '\\n%{{http_code}}'"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        let ok = code == "200"
            && serde_json::from_str::<serde_json::Value>(body)
                .map(|b| match e["method"].as_str() {
                    Some("none") => b["headers"].get("x-keycard-method").is_none(),
                    m => b["headers"]["x-keycard-method"].as_str() == m,
                })
                .unwrap_or(false);
        if !ok {
            failures.push(format!("{cmd} -> {code} {body}"));
        }
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    assert!(failures.is_empty(), "{failures:#?}");
}
