//! The admin API (`/_keycard/admin/v1/`): every path refuses without an admin credential;
//! an API key, a client-credentials token and a certificate with `keycard:admin` work;
//! what it creates works through the gateway and its secrets are shown once; schemathesis
//! finds no 5xx and no answer outside the OpenAPI document.

use std::process::Command;
use std::time::Duration;

use http::Method;

use crate::common::{Keycard, eventually, http::Http, route, tools, upstream};

const V1: &str = "/_keycard/admin/v1";

async fn setup() -> (Keycard, Http, String) {
    let up = upstream::start().await;
    let mut kc = Keycard::new(None, &route("/api/", &up, ""));
    kc.start();
    let (_, admin) = kc.create_key("ops", &["keycard:admin"], &[]);
    (kc, Http::new(), admin)
}

/// Every operation of the document, with its path parameters filled in.
fn operations(doc: &serde_json::Value) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { "x1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        for m in item.as_object().unwrap().keys() {
            out.push((m.to_uppercase().parse().unwrap(), concrete.clone()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_admin_path_refuses_without_an_admin_credential() {
    let (kc, http, admin) = setup().await;
    let doc = http
        .get(
            &kc.url(&format!("{V1}/openapi.json")),
            &[("x-api-key", &admin)],
        )
        .await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let (_, plain) = kc.create_key("app", &["orders:read"], &[]);
    let mut ops = operations(&doc);
    ops.push((Method::GET, "/openapi.json".into()));
    ops.push((Method::GET, "/no-such-thing".into()));
    assert!(ops.len() >= 20, "{ops:?}");
    for (m, p) in &ops {
        let url = kc.url(&format!("{V1}{p}"));
        // No credential, a wrong one, and a valid key without the admin scope.
        for (headers, want) in [
            (vec![], 401),
            (vec![("x-api-key", "kc_notavalidkeyatall")], 401),
            (vec![("authorization", "Bearer garbage")], 401),
            (vec![("x-api-key", plain.as_str())], 403),
        ] {
            let mut headers = headers.clone();
            headers.push(("content-type", "application/json"));
            let r = http.send(m.clone(), &url, &headers, "{}").await;
            assert_eq!(r.status, want, "{m} {p} {headers:?}: {:?}", r.body);
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("application/problem+json"),
                "{m} {p}"
            );
            let body = r.json();
            assert_eq!(body["status"], want);
            if want == 401 {
                assert!(r.header("www-authenticate").is_some(), "{m} {p}");
            }
        }
    }
    // The refusals are audited like any route's (the writer batches every 100 ms).
    let audited = eventually(Duration::from_secs(5), || async {
        kc.cli_ok(&["audit", "--json", "--outcome", "forbidden"])
            .contains("/_keycard/admin/")
    })
    .await;
    assert!(
        audited.is_some(),
        "no forbidden admin attempt in the audit trail"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_api_creates_works_and_its_secrets_are_shown_once() {
    let (kc, http, admin) = setup().await;
    let auth = [("x-api-key", admin.as_str())];
    let post = |path: &str, body: serde_json::Value| {
        post_json(&http, kc.url(&format!("{V1}{path}")), admin.clone(), body)
    };

    // An API key: created, used, listed without its text, revoked.
    let r = post(
        "/keys",
        serde_json::json!({"subject": "billing", "scopes": ["orders:read"], "expires_in": "30d"}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let created = r.json();
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    assert!(key.starts_with("kc_"));
    kc.secret(key);
    assert!(created["expires_at"].is_string());
    let through = http.get(&kc.url("/api/x"), &[("x-api-key", key)]).await;
    assert_eq!(through.status, 200);
    assert_eq!(
        through.upstream_header("x-keycard-subject").as_deref(),
        Some("billing")
    );
    let list = http
        .get(&kc.url(&format!("{V1}/keys?subject=billing")), &auth)
        .await;
    assert_eq!(list.status, 200);
    assert!(
        !String::from_utf8_lossy(&list.body).contains(key),
        "a key's text in a list"
    );
    assert_eq!(list.json()[0]["id"], id);
    let del = http
        .send(
            Method::DELETE,
            &kc.url(&format!("{V1}/keys/{id}")),
            &auth,
            "",
        )
        .await;
    assert_eq!(del.status, 204, "{:?}", del.body);
    let refused = eventually(Duration::from_secs(2), || async {
        http.get(&kc.url("/api/x"), &[("x-api-key", key)])
            .await
            .status
            == 401
    })
    .await;
    assert!(
        refused.is_some(),
        "a key revoked through the API still works"
    );
    // Revoking it again is a conflict; an unknown id is 404; bad input is 400.
    let again = http
        .send(
            Method::DELETE,
            &kc.url(&format!("{V1}/keys/{id}")),
            &auth,
            "",
        )
        .await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    let missing = http
        .send(
            Method::DELETE,
            &kc.url(&format!("{V1}/keys/key_nope")),
            &auth,
            "",
        )
        .await;
    assert_eq!(missing.status, 404);
    for bad in [
        serde_json::json!({"subject": ""}),
        serde_json::json!({"subject": "a", "scopes": ["bad scope"]}),
        serde_json::json!({"subject": "a", "expires_in": "soon"}),
        serde_json::json!({"subject": "a", "unknown": 1}),
    ] {
        let r = post("/keys", bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {:?}", r.body);
        assert!(r.json()["detail"].is_string());
    }
    // Locking oneself out is refused: the admin key cannot revoke itself.
    let own_id = kc.cli_ok(&["key", "list", "--subject", "ops", "--json"]);
    let own_id: serde_json::Value = serde_json::from_str(&own_id).unwrap();
    let own_id = own_id[0]["id"].as_str().unwrap();
    let own = http
        .send(
            Method::DELETE,
            &kc.url(&format!("{V1}/keys/{own_id}")),
            &auth,
            "",
        )
        .await;
    assert_eq!(own.status, 409);

    // A user: Basic works with the password given.
    let r = post("/users", serde_json::json!({"name": "carol", "password": "a long enough passphrase", "scopes": ["orders:read"]})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(!String::from_utf8_lossy(&r.body).contains("passphrase"));
    let basic = http
        .get(
            &kc.url("/api/x"),
            &[(
                "authorization",
                "Basic Y2Fyb2w6YSBsb25nIGVub3VnaCBwYXNzcGhyYXNl",
            )],
        )
        .await;
    assert_eq!(basic.status, 200);
    kc.secret("a long enough passphrase");
    let totp = post("/users/carol/totp", serde_json::json!({})).await;
    assert_eq!(totp.status, 201, "{:?}", totp.body);
    let seed = totp.json()["secret"].as_str().unwrap().to_owned();
    kc.secret(&seed);
    assert!(
        totp.json()["uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    let listed = http.get(&kc.url(&format!("{V1}/users/carol")), &auth).await;
    assert!(!String::from_utf8_lossy(&listed.body).contains(&seed));
    let dup = post(
        "/users",
        serde_json::json!({"name": "carol", "password": "another long passphrase"}),
    )
    .await;
    assert_eq!(dup.status, 409);
    // Sessions and grants: listed, ended, revoked; an unknown grant is a 404.
    let grants = http
        .get(&kc.url(&format!("{V1}/users/carol/grants")), &auth)
        .await;
    assert_eq!((grants.status, grants.json()), (200, serde_json::json!([])));
    let out = post("/users/carol/logout", serde_json::json!({})).await;
    assert_eq!(out.status, 200, "{:?}", out.body);
    assert_eq!(
        out.json(),
        serde_json::json!({"name": "carol", "sessions": 0, "grants": 0})
    );
    let mut delete_auth = auth.to_vec();
    delete_auth.push(("content-type", "application/json"));
    for (path, want) in [
        ("/users/carol/grants", 200),
        ("/users/carol/grants/gr_x", 404),
    ] {
        let r = http
            .send(
                Method::DELETE,
                &kc.url(&format!("{V1}{path}")),
                &delete_auth,
                "",
            )
            .await;
        assert_eq!(r.status, want, "{path}: {:?}", r.body);
    }

    // A client with keycard:admin: its client-credentials token administers too.
    let r = post(
        "/clients",
        serde_json::json!({"client_id": "automation", "scopes": ["keycard:admin"]}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let secret = r.json()["client_secret"].as_str().unwrap().to_owned();
    kc.secret(&secret);
    let listed = http.get(&kc.url(&format!("{V1}/clients")), &auth).await;
    assert!(!String::from_utf8_lossy(&listed.body).contains(&secret));
    let basic_auth = format!(
        "Basic {}",
        base64_encode(format!("automation:{secret}").as_bytes())
    );
    let tok = http
        .send(
            Method::POST,
            &kc.url("/oauth2/token"),
            &[
                ("authorization", basic_auth.as_str()),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "grant_type=client_credentials&scope=keycard:admin",
        )
        .await;
    assert_eq!(tok.status, 200, "{:?}", tok.body);
    let token = tok.json()["access_token"].as_str().unwrap().to_owned();
    kc.secret(&token);
    let bearer = format!("Bearer {token}");
    let users = http
        .get(
            &kc.url(&format!("{V1}/users")),
            &[("authorization", bearer.as_str())],
        )
        .await;
    assert_eq!(users.status, 200, "{:?}", users.body);
    assert_eq!(users.json()[0]["name"], "carol");

    // An HMAC key's secret once; a signing-key rotation; subjects.
    let r = post("/hmac-keys", serde_json::json!({"subject": "partner"})).await;
    assert_eq!(r.status, 201);
    let hmac_secret = r.json()["secret"].as_str().unwrap().to_owned();
    kc.secret(&hmac_secret);
    let listed = http.get(&kc.url(&format!("{V1}/hmac-keys")), &auth).await;
    assert!(!String::from_utf8_lossy(&listed.body).contains(&hmac_secret));
    let r = post("/signing-keys/rotate", serde_json::json!({})).await;
    assert_eq!(r.status, 201);
    assert!(r.json()["previous"].is_string());
    let subjects = http
        .get(&kc.url(&format!("{V1}/subjects")), &auth)
        .await
        .json();
    let names: Vec<&str> = subjects
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for n in ["ops", "billing", "carol", "partner"] {
        assert!(names.contains(&n), "{names:?}");
    }

    // The audit trail, a page at a time.
    let page = http
        .get(&kc.url(&format!("{V1}/audit?limit=2")), &auth)
        .await;
    assert_eq!(page.status, 200);
    let page = page.json();
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let before = page["next_before"].as_i64().unwrap();
    let older = http
        .get(
            &kc.url(&format!("{V1}/audit?limit=2&before={before}")),
            &auth,
        )
        .await
        .json();
    assert_eq!(older["events"].as_array().unwrap().len(), 2);
    assert_ne!(older["events"][0], page["events"][0]);
    let bad = http
        .get(&kc.url(&format!("{V1}/audit?limit=0")), &auth)
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_schema() {
    if !tools::schemathesis() {
        return;
    }
    let (kc, _http, admin) = setup().await;
    // A second admin key: the run may revoke or rotate the other one (it cannot revoke
    // the one it uses: that is refused).
    kc.create_key("ops2", &["keycard:admin"], &[]);
    let out = Command::new("schemathesis")
        .arg("run")
        .arg(kc.url(&format!("{V1}/openapi.json")))
        .args(["-H", &format!("X-API-Key: {admin}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            "40",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("passed"), "{text}");
    // Nothing in the server's log is an error or a panic.
    let log = kc.log(0).join("\n");
    assert!(!log.contains("panicked"), "{log}");
}

async fn post_json(
    http: &Http,
    url: String,
    admin: String,
    body: serde_json::Value,
) -> crate::common::http::Resp {
    http.send(
        Method::POST,
        &url,
        &[
            ("x-api-key", admin.as_str()),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Every management operation through the admin API is audited with its actor (the
/// credential), operation, target and outcome — refused ones too.
#[tokio::test(flavor = "multi_thread")]
async fn admin_operations_are_audited_with_actor_operation_target_and_outcome() {
    let (mut kc, http, admin) = setup().await;
    let admin_id: serde_json::Value =
        serde_json::from_str(&kc.cli_ok(&["key", "list", "--json"])).unwrap();
    let admin_id = admin_id[0]["id"].as_str().unwrap().to_owned();
    let r = post_json(
        &http,
        kc.url(&format!("{V1}/keys")),
        admin.clone(),
        serde_json::json!({"subject": "billing"}),
    )
    .await;
    assert_eq!(r.status, 201);
    let new_id = r.json()["id"].as_str().unwrap().to_owned();
    let gone = http
        .send(
            Method::DELETE,
            &kc.url(&format!("{V1}/keys/key_nosuchkey")),
            &[("x-api-key", &admin)],
            "",
        )
        .await;
    assert_eq!(gone.status, 404);
    let own = http
        .send(
            Method::DELETE,
            &kc.url(&format!("{V1}/keys/{admin_id}")),
            &[("x-api-key", &admin)],
            "",
        )
        .await;
    assert_eq!(own.status, 409);
    // Names are bounded when disabled by name too: no bidi override, no control character.
    for bad in ["%E2%80%AEnimda", "a%0Ab", "%1B%5B31m"] {
        let r = http
            .send(
                Method::POST,
                &kc.url(&format!("{V1}/subjects/{bad}/disable")),
                &[("x-api-key", &admin)],
                "",
            )
            .await;
        assert_eq!(r.status, 400, "{bad}");
    }
    kc.stop();
    let file = std::fs::read_to_string(kc.path("data/audit.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["route"] == "admin")
        .collect();
    let seen: Vec<(&str, &str, &str, &str)> = events
        .iter()
        .map(|e| {
            assert_eq!(e["actor"], admin_id.as_str(), "{e}");
            assert_eq!(e["method"], "api_key", "{e}");
            (
                e["operation"].as_str().unwrap(),
                e["target"].as_str().unwrap_or("-"),
                e["outcome"].as_str().unwrap(),
                e["reason"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("key.create", new_id.as_str(), "success", "-"),
            ("key.revoke", "key_nosuchkey", "failure", "not_found"),
            ("key.revoke", admin_id.as_str(), "failure", "conflict"),
            ("subject.disable", "\u{202E}nimda", "failure", "invalid"),
            ("subject.disable", "a\nb", "failure", "invalid"),
            ("subject.disable", "\u{1b}[31m", "failure", "invalid"),
        ]
    );
    // The store keeps them as the file does.
    let stored: Vec<serde_json::Value> =
        serde_json::from_str(&kc.cli_ok(&["audit", "--json"])).unwrap();
    assert_eq!(
        stored
            .iter()
            .filter(|e| e["route"] == "admin" && e["operation"].is_string())
            .count(),
        6
    );
}
