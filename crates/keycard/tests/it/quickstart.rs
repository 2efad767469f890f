//! `keycard quickstart`: every command it prints works when pasted — one per method — and
//! what the run leaves behind (JSON logs with the access log on, the metrics, the audit
//! trail) holds none of the secrets it printed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::{bin, tools};

const METHODS: [&str; 7] = [
    "api_key", "basic", "digest", "oauth2", "jwt", "hmac", "mtls",
];

#[test]
fn every_printed_command_works_on_every_run() {
    if !tools::curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A second run on the same folder finds its demo data and still works.
    for _ in 0..2 {
        run_once(dir.path());
    }
}

fn run_once(dir: &std::path::Path) {
    let log_path = dir.join("stderr.log");
    let mut child = Command::new(bin())
        .args([
            "quickstart",
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
            "--json",
            "--dir",
        ])
        .arg(dir.join("demo"))
        .env_remove("KEYCARD_CONFIG")
        .env("KEYCARD_LOG", "info,keycard::access=info")
        .env("KEYCARD_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let examples = info["examples"].as_array().unwrap();
    for m in METHODS {
        assert!(examples.iter().any(|e| e["method"] == m), "no {m} example");
    }
    let base = format!("http://{}", info["listen"].as_str().unwrap());
    let metrics = format!("http://{}", info["metrics"].as_str().unwrap());
    let before = scrape(&metrics);
    // The public port does not serve the metrics to anyone.
    let anonymous = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{base}/_keycard/metrics"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");
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
            failures.push(format!(
                "{cmd} -> {code} {body} {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // The metrics moved: a success per method on the plain listener (mtls is on the other
    // listener, an instance of its own). Checked by Prometheus's own parser.
    let after = scrape(&metrics);
    if tools::python_prometheus() {
        for m in METHODS.iter().filter(|m| **m != "mtls") {
            let series = format!(
                "keycard_decisions_total{{method=\"{m}\",outcome=\"success\",reason=\"none\"}}"
            );
            let (b, a) = (
                prometheus_value(&before, &series),
                prometheus_value(&after, &series),
            );
            assert!(a > b, "{series}: {b} -> {a}");
        }
        let gateway = "keycard_http_requests_total{endpoint=\"gateway\",code_class=\"2xx\"}";
        assert!(prometheus_value(&after, gateway) >= prometheus_value(&before, gateway) + 7.0);
    }
    let tls_metrics = scrape(&format!("http://{}", info["tls_metrics"].as_str().unwrap()));
    assert!(
        tls_metrics.contains(
            "keycard_decisions_total{method=\"mtls\",outcome=\"success\",reason=\"none\"} 1"
        ),
        "{tls_metrics}"
    );

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();

    // JSON logs: one object per line; the access log names every request with its id.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let mut access = 0;
    for l in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {e}: {l}"));
        if v["target"] == "keycard::access" {
            access += 1;
            assert!(
                v["request_id"].as_str().is_some_and(|s| !s.is_empty()),
                "{l}"
            );
        }
    }
    assert!(access >= 9, "{access} access log lines:\n{log}");

    // No secret the run printed is in the logs, the metrics or the audit trail.
    let audit = std::fs::read_to_string(dir.join("demo/keycard-data/audit.jsonl")).unwrap();
    let secrets = secrets_of(examples);
    assert!(secrets.len() >= 4, "{secrets:?}");
    for s in &secrets {
        for (what, text) in [
            ("logs", &log),
            ("metrics", &after),
            ("mtls metrics", &tls_metrics),
            ("audit", &audit),
        ] {
            assert!(!text.contains(s.as_str()), "a secret is in the {what}");
        }
    }
}

fn scrape(base: &str) -> String {
    let out = Command::new("curl")
        .args(["-sf", &format!("{base}/_keycard/metrics")])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The value of one series, as Prometheus's text-format parser reads the exposition.
fn prometheus_value(text: &str, series: &str) -> f64 {
    let (name, labels) = series.split_once('{').unwrap();
    let labels = labels.trim_end_matches('}');
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
want = dict(kv.split("=", 1) for kv in sys.argv[2].split(","))
want = {k: v.strip('"') for k, v in want.items()}
found = 0.0
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        if s.name == sys.argv[1] and s.labels == want:
            found = s.value
print(found)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, name, labels])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The secrets in the printed commands: the API key, the password, the client secret and
/// the HMAC secret.
fn secrets_of(examples: &[serde_json::Value]) -> Vec<String> {
    let mut out = Vec::new();
    for e in examples {
        let cmd = e["command"].as_str().unwrap();
        match e["method"].as_str().unwrap() {
            "api_key" => out.push(between(cmd, "X-API-Key: ", "'")),
            "basic" => out.push(between(cmd, "-u 'alice:", "'")),
            "oauth2" => out.push(
                between(cmd, "-u 'demo-", "'")
                    .split_once(':')
                    .unwrap()
                    .1
                    .into(),
            ),
            "hmac" => out.push(between(cmd, "printf '%s' '", "'")),
            _ => {}
        }
    }
    out
}

fn between(s: &str, start: &str, end: &str) -> String {
    let rest = &s[s.find(start).unwrap() + start.len()..];
    rest[..rest.find(end).unwrap()].to_owned()
}
