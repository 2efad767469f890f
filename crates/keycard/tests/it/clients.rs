//! docs/clients.md, run as printed: every Python and JavaScript snippet of every method
//! against a live keycard (TLS, so that `mtls` is among them), each proving who it is the
//! way the page says; and each one fails when its credential is wrong.

use std::collections::BTreeMap;
use std::process::Command;

use crate::common::pki::{Names, Pki};
use crate::common::{Keycard, route, tools, upstream};

const METHODS: [&str; 7] = [
    "api_key", "basic", "digest", "oauth2", "jwt", "hmac", "mtls",
];

/// The page's snippets: method → language (`python`, `js`) → code.
fn snippets() -> BTreeMap<String, BTreeMap<String, String>> {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/clients.md"
    ))
    .unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let (mut method, mut lang, mut code) = (None::<String>, None::<String>, String::new());
    for line in page.lines() {
        if let Some(l) = &lang {
            if line == "```" {
                if let Some(m) = &method {
                    out.entry(m.clone())
                        .or_default()
                        .insert(l.clone(), std::mem::take(&mut code));
                }
                lang = None;
            } else {
                code.push_str(line);
                code.push('\n');
            }
        } else if let Some(h) = line.strip_prefix("## `") {
            method = h.split('`').next().map(str::to_owned);
        } else if let Some(l) = line.strip_prefix("```").filter(|l| !l.is_empty()) {
            lang = Some(l.to_owned());
            code.clear();
        }
    }
    out
}

/// Environment variables for a snippet.
type Env = Vec<(String, String)>;

/// Runs `code` in `lang` with `env`; its exit status and standard output.
fn run(lang: &str, code: &str, env: &[(String, String)]) -> (bool, String, String) {
    let mut cmd = match lang {
        "python" => {
            let mut c = Command::new("python3");
            c.args(["-c", code]);
            c
        }
        "js" => {
            let mut c = Command::new("node");
            c.args(["--input-type=module", "-e", code]);
            c
        }
        other => panic!("no runner for {other}"),
    };
    let out = cmd.envs(env.iter().map(|(k, v)| (k, v))).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_snippet_of_the_client_recipes_works() {
    if !tools::node() || !tools::python_httpsig() || !tools::python_pyjwt() {
        return;
    }
    let page = snippets();
    for m in METHODS {
        for lang in ["python", "js"] {
            assert!(
                page.get(m).is_some_and(|s| s.contains_key(lang)),
                "no {lang} snippet for {m}"
            );
        }
    }
    const ISS: &str = "https://idp.test/";
    let tokens = crate::jwt::tokens(ISS);
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, tokens["jwks"].to_string()).unwrap();
    let pki = Pki::new(dir.path(), "clients-ca");
    let server = pki.server("server");
    let device = pki.client(
        "device",
        &Names {
            cn: "device",
            ..Default::default()
        },
    );
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &format!(
            "{}[[jwt.issuers]]\nissuer = \"{ISS}\"\njwks_file = \"{}\"\naudiences = [\"{}\"]\n\n\
             [server.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
            route("/api/", &up, ""),
            jwks.display(),
            crate::jwt::AUD,
            server.cert.display(),
            server.key.display(),
            pki.ca.display(),
        ),
    );
    let (_, key) = kc.create_key("svc", &[], &[]);
    let password = "copper-lantern-meadow";
    kc.add_user("alice", password, &["--digest"]);
    let client_secret = kc.create_worker_client("worker");
    let hmac = kc.create_hmac("signer");
    kc.cli_ok(&[
        "cert",
        "add",
        "--subject",
        "device",
        "--cert",
        device.cert.to_str().unwrap(),
    ]);
    let addr = kc.start();
    let base = format!("https://localhost:{}", addr.port());

    let ca = pki.ca.display().to_string();
    let env = |pairs: &[(&str, &str)]| -> Env {
        let mut v: Env = vec![
            ("KEYCARD_URL".into(), format!("{base}/api/orders?page=2")),
            // The server's CA, for every snippet's TLS (and CA_CERT for mtls's).
            ("REQUESTS_CA_BUNDLE".into(), ca.clone()),
            ("NODE_EXTRA_CA_CERTS".into(), ca.clone()),
            ("CA_CERT".into(), ca.clone()),
        ];
        v.extend(
            pairs
                .iter()
                .map(|(k, val)| ((*k).to_owned(), (*val).to_owned())),
        );
        v
    };
    let token_url = format!("{base}/oauth2/token");
    let good_jwt = tokens["good"]["ES256"].as_str().unwrap();
    let (cert, cert_key) = (device.cert.to_str().unwrap(), device.key.to_str().unwrap());
    let other = pki.client(
        "other",
        &Names {
            cn: "nobody-bound-this",
            ..Default::default()
        },
    );
    let (other_cert, other_key) = (other.cert.to_str().unwrap(), other.key.to_str().unwrap());
    let client_id = "worker";
    let client_secret = client_secret.as_str();
    let (key_id, secret) = (
        hmac["key_id"].as_str().unwrap(),
        hmac["secret"].as_str().unwrap(),
    );
    let wrong_secret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    // Each method: what makes it pass, and what is wrong enough to be refused.
    let cases: [(&str, Env, Env); 7] = [
        (
            "api_key",
            env(&[("API_KEY", &key)]),
            env(&[("API_KEY", "kc_wrong")]),
        ),
        (
            "basic",
            env(&[("KEYCARD_USER", "alice"), ("KEYCARD_PASSWORD", password)]),
            env(&[
                ("KEYCARD_USER", "alice"),
                ("KEYCARD_PASSWORD", "wrong-password-here"),
            ]),
        ),
        (
            "digest",
            env(&[("KEYCARD_USER", "alice"), ("KEYCARD_PASSWORD", password)]),
            env(&[
                ("KEYCARD_USER", "alice"),
                ("KEYCARD_PASSWORD", "wrong-password-here"),
            ]),
        ),
        (
            "oauth2",
            env(&[
                ("TOKEN_URL", &token_url),
                ("CLIENT_ID", client_id),
                ("CLIENT_SECRET", client_secret),
            ]),
            env(&[
                ("TOKEN_URL", &token_url),
                ("CLIENT_ID", client_id),
                ("CLIENT_SECRET", "kcs_wrong"),
            ]),
        ),
        (
            "jwt",
            env(&[("JWT", good_jwt)]),
            env(&[("JWT", tokens["bad"]["expired"].as_str().unwrap())]),
        ),
        (
            "hmac",
            env(&[("HMAC_KEY_ID", key_id), ("HMAC_SECRET", secret)]),
            env(&[("HMAC_KEY_ID", key_id), ("HMAC_SECRET", wrong_secret)]),
        ),
        (
            "mtls",
            env(&[("CLIENT_CERT", cert), ("CLIENT_KEY", cert_key)]),
            env(&[("CLIENT_CERT", other_cert), ("CLIENT_KEY", other_key)]),
        ),
    ];
    let mut failures = Vec::new();
    for (method, good, bad) in &cases {
        for lang in ["python", "js"] {
            let code = &page[*method][lang];
            let (ok, out, err) = run(lang, code, good);
            let seen = serde_json::from_str::<serde_json::Value>(out.trim())
                .ok()
                .and_then(|b| b["headers"]["x-keycard-method"].as_str().map(str::to_owned));
            if !ok || seen.as_deref() != Some(*method) {
                failures.push(format!(
                    "{method}/{lang}: ok={ok} method={seen:?}\n{out}\n{err}"
                ));
            }
            let (refused_ok, out, _) = run(lang, code, bad);
            if refused_ok {
                failures.push(format!("{method}/{lang}: a wrong credential passed\n{out}"));
            }
        }
    }
    kc.stop();
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}
