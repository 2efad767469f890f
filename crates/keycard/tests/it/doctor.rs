//! `keycard doctor`: a config with the defaults a newcomer starts from is flagged for what
//! makes it unsafe; `examples/hardened.toml` passes with nothing to say.

use std::path::Path;
use std::process::Command;

use crate::common::{Keycard, bin};

/// `keycard doctor --json` on `config`: its exit code and `severity:code` of each finding.
pub(crate) fn doctor(config: &Path) -> (Option<i32>, Vec<String>) {
    let out = Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(["doctor", "--json"])
        .env_remove("KEYCARD_MASTER_KEY")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let codes = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert!(f["fix"].as_str().is_some_and(|s| !s.is_empty()), "{f}");
            format!(
                "{}:{}",
                f["severity"].as_str().unwrap(),
                f["code"].as_str().unwrap()
            )
        })
        .collect();
    (out.status.code(), codes)
}

#[test]
fn defaults_are_flagged_and_the_hardened_example_passes() {
    // Defaults everywhere but a route and the listener; failed_auth switched off.
    let kc = Keycard::new(
        None,
        "[limits]\nfailed_auth = \"off\"\n\n[digest]\nalgorithms = [\"SHA-256\", \"MD5\"]\n\n[tokens]\naccess_token_ttl = \"2h\"\nrefresh_token_ttl = \"365d\"\n\n[[routes]]\nprefix = \"/api/\"\nupstream = \"http://127.0.0.1:9\"\n",
    );
    let cfg = std::fs::read_to_string(&kc.config)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:8080\"");
    std::fs::write(&kc.config, cfg).unwrap();
    kc.cli_ok(&["key", "create", "--subject", "svc"]);
    kc.cli_ok(&["hmac", "create", "--subject", "partner"]);
    let (code, found) = doctor(&kc.config);
    assert_eq!(code, Some(1), "{found:?}");
    for want in [
        "critical:plain_http",
        "critical:password_without_tls",
        "critical:failed_auth_off",
        "warning:digest_md5",
        "warning:access_token_ttl",
        "warning:refresh_token_ttl",
        "warning:no_rate_limit",
        "warning:all_methods",
        "warning:no_expiry",
    ] {
        assert!(found.contains(&want.to_owned()), "{want} not in {found:?}");
    }

    // The hardened example, in a folder of its own (its store and key are made there).
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hardened.toml");
    let config = dir.path().join("keycard.toml");
    std::fs::copy(&example, &config).unwrap();
    // Its TLS files: a server certificate and the client CA, where the example names them.
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let pki = crate::common::pki::Pki::new(&tls, "client-ca");
    pki.server("server");
    // Before anything made its store, doctor says so, and makes none.
    let (code, found) = doctor(&config);
    assert_eq!(code, Some(0), "{found:?}");
    assert_eq!(found, ["warning:store_missing"]);
    assert!(!dir.path().join("keycard-data/keycard.db").exists());
    let made = Command::new(bin())
        .arg("--config")
        .arg(&config)
        .args(["key", "list"])
        .env_remove("KEYCARD_MASTER_KEY")
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (code, found) = doctor(&config);
    assert_eq!(code, Some(0), "{found:?}");
    assert!(found.is_empty(), "{found:?}");
}
