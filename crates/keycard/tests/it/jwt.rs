//! The `jwt` method against tokens signed by an independent library (PyJWT + cryptography):
//! ES256, EdDSA and RS256 with a JWKS file and a JWKS URL; every attack of RFC 8725 refused
//! with the same 401 and its own audit reason; keys rotated at the issuer picked up.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::http::{Http, Resp};
use crate::common::{Keycard, eventually, route, tools, upstream};

const FILE_ISS: &str = "https://idp-file.test/";
const URL_ISS: &str = "https://idp-url.test/";
pub(crate) const AUD: &str = "orders-api";

/// Keys and tokens for `iss` (audience [`AUD`]) from `py/jwt_tokens.py` (PyJWT).
pub(crate) fn tokens(iss: &str) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/py/jwt_tokens.py");
    let out = Command::new("python3")
        .args([script, iss, AUD, &now.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn bearer(http: &Http, kc: &Keycard, token: &str) -> Resp {
    http.get(
        &kc.url("/api/orders"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn pyjwt_tokens_verify_and_every_attack_is_refused() {
    if !tools::python_pyjwt() {
        return;
    }
    let file_side = tokens(FILE_ISS);
    let url_side = tokens(URL_ISS);
    let jwks_doc = Arc::new(Mutex::new(url_side["jwks"].to_string()));
    let hits = Arc::new(AtomicUsize::new(0));
    let jwks_url = upstream::serve_json(jwks_doc.clone(), hits.clone()).await;
    let up = upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, file_side["jwks"].to_string()).unwrap();
    let mut kc = Keycard::new(
        None,
        &format!(
            "[[jwt.issuers]]\nissuer = \"{FILE_ISS}\"\njwks_file = \"{}\"\naudiences = [\"{AUD}\"]\n\n\
             [[jwt.issuers]]\nissuer = \"{URL_ISS}\"\njwks_url = \"{jwks_url}/jwks.json\"\naudiences = [\"{AUD}\"]\n\n{}",
            jwks_file.display(),
            route("/api/", &up, "methods = [\"jwt\", \"api_key\"]")
        ),
    );
    kc.start();
    let http = Http::new();
    assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once at start");

    for side in [&file_side, &url_side] {
        for alg in ["ES256", "EdDSA", "RS256"] {
            let r = bearer(&http, &kc, side["good"][alg].as_str().unwrap()).await;
            assert_eq!(r.status, 200, "{alg}: {:?}", r.body);
            assert_eq!(
                r.upstream_header("x-keycard-method").as_deref(),
                Some("jwt")
            );
            assert_eq!(
                r.upstream_header("x-keycard-subject").as_deref(),
                Some("partner-svc")
            );
            assert_eq!(
                r.upstream_header("x-keycard-credential").as_deref(),
                Some("tok-1")
            );
            assert_eq!(
                r.upstream_header("x-keycard-scopes").as_deref(),
                Some("orders:read")
            );
        }
    }

    let expected = [
        ("alg_none", "alg_none"),
        ("alg_None", "alg_none"),
        ("hs256_with_public_key", "alg_mismatch"),
        ("embedded_jwk", "foreign_key_header"),
        ("jku", "foreign_key_header"),
        ("x5u", "foreign_key_header"),
        ("unknown_crit", "unknown_crit"),
        ("unknown_kid", "unknown_kid"),
        ("kid_path", "bad_kid"),
        ("kid_sql", "bad_kid"),
        ("expired", "expired"),
        ("not_yet_valid", "not_yet_valid"),
        ("wrong_iss", "wrong_issuer"),
        ("wrong_aud", "wrong_audience"),
        ("missing_aud", "wrong_audience"),
        ("tampered_payload", "bad_signature"),
        ("tampered_header", "bad_signature"),
        ("empty_signature", "bad_signature"),
        ("truncated_signature", "bad_signature"),
        ("zero_signature", "bad_signature"),
        ("too_large", "token_too_large"),
        ("jwe", "jwe"),
        ("duplicate_claims", "duplicate_key"),
    ];
    let bad = file_side["bad"].as_object().unwrap();
    assert_eq!(bad.len(), expected.len());
    let mut shapes = Vec::new();
    for (name, _) in expected {
        let r = bearer(&http, &kc, bad[name].as_str().unwrap()).await;
        assert_eq!(r.status, 401, "{name}");
        shapes.push((name, r.header_all("www-authenticate"), r.body.clone()));
    }
    for (name, challenges, body) in &shapes {
        assert_eq!(
            (challenges, body),
            (&shapes[0].1, &shapes[0].2),
            "{name} answers differently"
        );
    }
    assert!(shapes[0].1[0].contains(r#"error="invalid_token""#));
    // The jku/x5u addresses were never fetched, and the JWKS URL not more than allowed.
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Each refusal's reason, in order, in the audit log.
    let audit_file = kc.path("data/audit.jsonl");
    let n = expected.len();
    let reasons = eventually(Duration::from_secs(3), || {
        let audit = std::fs::read_to_string(&audit_file).unwrap_or_default();
        async move {
            audit
                .lines()
                .filter(|l| l.contains(r#""outcome":"failure""#))
                .count()
                >= n
        }
    })
    .await;
    assert!(reasons.is_some());
    let audit = std::fs::read_to_string(&audit_file).unwrap();
    let got: Vec<String> = audit
        .lines()
        .filter(|l| l.contains(r#""outcome":"failure""#))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["method"], "jwt", "{l}");
            v["reason"].as_str().unwrap().to_owned()
        })
        .collect();
    let want: Vec<&str> = expected.iter().map(|(_, r)| *r).collect();
    assert_eq!(got, want);

    // Keys rotated at the issuer: a new kid is fetched on first sight, without a restart.
    *jwks_doc.lock().unwrap() = url_side["jwks_rotated"].to_string();
    let r = bearer(&http, &kc, url_side["rotated"].as_str().unwrap()).await;
    assert_eq!(r.status, 200, "rotated key");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // Unknown kids do not hammer the issuer: at most one refetch per 30 s.
    for _ in 0..5 {
        let r = bearer(&http, &kc, url_side["bad"]["unknown_kid"].as_str().unwrap()).await;
        assert_eq!(r.status, 401);
    }
    assert!(hits.load(Ordering::SeqCst) <= 3);
    kc.stop();
}

#[test]
fn a_broken_jwks_file_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, "{\"keys\": [{\"kty\": \"oct\", \"k\": \"AAAA\"}]}").unwrap();
    let kc = Keycard::new(
        None,
        &format!(
            "[[jwt.issuers]]\nissuer = \"{FILE_ISS}\"\njwks_file = \"{}\"\naudiences = [\"{AUD}\"]\n",
            jwks.display()
        ),
    );
    let out = kc.cli(&["serve"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no usable signature key"), "{err}");
}

/// Mints an access token with the current key in the store, as the OAuth endpoints will.
async fn mint_with_stored_key(kc: &Keycard, sub: &str) -> String {
    use keycard_core::signing::{AccessTokenClaims, mint_access_token};
    let store = keycard_store::Store::open(&kc.store_url).await.unwrap();
    let rows = store
        .published_signing_keys(keycard_server::now_secs())
        .await
        .unwrap();
    let current = rows.iter().find(|r| r.retired_at.is_none()).unwrap();
    let master = keycard_server::master_key::load_or_create(&kc.path("data/master.key")).unwrap();
    let key = keycard_server::open_signing_key(current, &master.sealer()).unwrap();
    store.close().await;
    let now = keycard_server::now_secs();
    mint_access_token(
        &key,
        &AccessTokenClaims {
            iss: "http://keycard.test".into(),
            sub: sub.into(),
            aud: AUD.into(),
            exp: now + 300,
            iat: now,
            jti: format!("at_{sub}"),
            client_id: "cli".into(),
            scope: "orders:read".into(),
            cnf: None,
            gty: None,
        },
    )
    .unwrap()
}

fn pyjwt_verify(jwks_url: &str, token: &str) -> String {
    let script = r#"
import sys, jwt
client = jwt.PyJWKClient(sys.argv[1])
key = client.get_signing_key_from_jwt(sys.argv[2])
claims = jwt.decode(sys.argv[2], key.key, algorithms=["ES256", "EdDSA", "RS256"],
                    audience="orders-api", issuer="http://keycard.test")
assert jwt.get_unverified_header(sys.argv[2])["typ"] == "at+jwt"
print(claims["sub"])
"#;
    let out = Command::new("python3")
        .args(["-c", script, jwks_url, token])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT refused keycard's token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn pyjwt_verifies_keycard_tokens_against_its_jwks_across_a_rotation() {
    if !tools::python_pyjwt() {
        return;
    }
    let mut kc = Keycard::new(None, "");
    kc.start();
    let http = Http::new();
    let url = kc.url("/.well-known/jwks.json");
    let r = http.get(&url, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/jwk-set+json")
    );
    let doc = r.json();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["alg"], "ES256");
    assert_eq!(keys[0]["use"], "sig");
    assert!(keys[0].get("d").is_none(), "no private part published");
    let first_kid = keys[0]["kid"].as_str().unwrap().to_owned();

    let old = mint_with_stored_key(&kc, "alice").await;
    assert_eq!(pyjwt_verify(&url, &old), "alice");

    let out: serde_json::Value =
        serde_json::from_str(&kc.cli_ok(&["signing-key", "rotate", "--json"])).unwrap();
    assert_eq!(out["previous"], first_kid.as_str());
    let new_kid = out["kid"].as_str().unwrap().to_owned();
    let both = eventually(Duration::from_secs(5), || {
        let (http, url, new_kid) = (http.clone(), url.clone(), new_kid.clone());
        async move {
            let doc = http.get(&url, &[]).await.json();
            let kids: Vec<&str> = doc["keys"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|k| k["kid"].as_str())
                .collect();
            kids.len() == 2 && kids[0] == new_kid
        }
    })
    .await;
    assert!(
        both.is_some(),
        "the new key is published, the old one still too"
    );
    let new = mint_with_stored_key(&kc, "bob").await;
    assert!(new.contains('.'));
    assert_eq!(pyjwt_verify(&url, &new), "bob");
    assert_eq!(
        pyjwt_verify(&url, &old),
        "alice",
        "tokens of the retired key still verify"
    );
    kc.stop();
}

/// `keycard jwt mint`: PyJWT verifies what it signs with a key Python made, and its default
/// `kid` is the RFC 7638 thumbprint Authlib computes — for P-256 written out here instead:
/// Authlib drops an EC coordinate's leading zero bytes (RFC 7518 §6.2.1.2 wants all 32), so
/// it disagrees with the RFC for about one key in 128.
#[test]
fn keycard_jwt_mint_interoperates_with_pyjwt_and_authlib() {
    if !crate::common::tools::python_authlib() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import base64, hashlib, subprocess, sys, warnings, jwt
warnings.simplefilter("ignore")
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives import serialization
from authlib.jose import JsonWebKey
def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def thumbprint(key, pub, kty):
    if kty == "EC":
        n = key.public_key().public_numbers()
        doc = '{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}' % (b64(n.x.to_bytes(32, "big")), b64(n.y.to_bytes(32, "big")))
        return b64(hashlib.sha256(doc.encode()).digest())
    return JsonWebKey.import_key(pub, {"kty": kty}).thumbprint()
for name, key, kty, alg in [("ec", ec.generate_private_key(ec.SECP256R1()), "EC", "ES256"),
                            ("ed", ed25519.Ed25519PrivateKey.generate(), "OKP", "EdDSA")]:
    path = sys.argv[2] + "/" + name + ".pem"
    open(path, "wb").write(key.private_bytes(serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    tok = subprocess.check_output([sys.argv[1], "jwt", "mint", "--key", path, "--issuer",
        "https://idp.test/", "--audience", "api", "--subject", "svc", "--scope", "a:b"]).decode().strip()
    claims = jwt.decode(tok, key.public_key(), algorithms=[alg], audience="api", issuer="https://idp.test/")
    assert claims["sub"] == "svc" and claims["scope"] == "a:b", claims
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert jwt.get_unverified_header(tok)["kid"] == thumbprint(key, pub, kty)
    print(name, "ok")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, crate::common::bin()])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ec ok\ned ok\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A file that is no private key is a usage error naming the flag.
    std::fs::write(dir.path().join("junk.pem"), "junk").unwrap();
    let bad = std::process::Command::new(crate::common::bin())
        .args([
            "jwt",
            "mint",
            "--issuer",
            "i",
            "--audience",
            "a",
            "--subject",
            "s",
            "--key",
        ])
        .arg(dir.path().join("junk.pem"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--key"));
}

/// A rate limit is spent per method, issuer and subject: a JWT whose `sub` names a keycard
/// subject, or the same `sub` from another issuer, has a budget of its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_jwt_subject_does_not_spend_a_keycard_subjects_rate_limit() {
    if !tools::python_pyjwt() {
        return;
    }
    let file_side = tokens(FILE_ISS);
    let other_side = tokens(URL_ISS);
    let up = upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (file_jwks, other_jwks) = (dir.path().join("a.json"), dir.path().join("b.json"));
    std::fs::write(&file_jwks, file_side["jwks"].to_string()).unwrap();
    std::fs::write(&other_jwks, other_side["jwks"].to_string()).unwrap();
    let mut kc = Keycard::new(
        None,
        &format!(
            "[[jwt.issuers]]\nissuer = \"{FILE_ISS}\"\njwks_file = \"{}\"\naudiences = [\"{AUD}\"]\n\n\
             [[jwt.issuers]]\nissuer = \"{URL_ISS}\"\njwks_file = \"{}\"\naudiences = [\"{AUD}\"]\n\n{}",
            file_jwks.display(),
            other_jwks.display(),
            route(
                "/api/",
                &up,
                "methods = [\"jwt\", \"api_key\"]\nrate_limit = \"3/min\""
            ) + &route("/open/", &up, "methods = [\"jwt\", \"api_key\"]")
        ),
    );
    kc.start();
    // The tokens' subject, as a keycard key's subject too.
    let (_, key) = kc.create_key("partner-svc", &["orders:read"], &[]);
    let http = Http::new();
    let token = file_side["good"]["ES256"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(bearer(&http, &kc, token).await.status, 200);
    }
    assert_eq!(bearer(&http, &kc, token).await.status, 429);
    // Same name, other source: its own budget.
    let other = other_side["good"]["ES256"].as_str().unwrap();
    assert_eq!(bearer(&http, &kc, other).await.status, 200);
    let r = http
        .get(&kc.url("/api/orders"), &[("x-api-key", key.as_str())])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-keycard-subject").as_deref(),
        Some("partner-svc")
    );
    // Disabling the name refuses it whatever proves it — the other issuer's JWT included,
    // which has no credential in keycard to carry the state — within a second.
    let open = kc.url("/open/x");
    let token_header = format!("Bearer {other}");
    let status = |name: &'static str, value: String| {
        let (http, open) = (http.clone(), open.clone());
        async move { http.get(&open, &[(name, value.as_str())]).await.status }
    };
    assert_eq!(status("authorization", token_header.clone()).await, 200);
    kc.cli_ok(&["user", "disable", "partner-svc"]);
    let refused = eventually(Duration::from_secs(1), || {
        let s = status("authorization", token_header.clone());
        async move { s.await == 401 }
    })
    .await;
    assert!(refused.is_some());
    assert_eq!(status("x-api-key", key.clone()).await, 401);
    kc.cli_ok(&["user", "enable", "partner-svc"]);
    let back = eventually(Duration::from_secs(1), || {
        let s = status("authorization", token_header.clone());
        async move { s.await == 200 }
    })
    .await;
    assert!(back.is_some());
}

/// A JWKS URL that starts answering a set with no usable key (empty, or only a symmetric
/// key) is a failed fetch: the last good keys stay and the issuer's tokens still verify.
#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_with_no_usable_key_keeps_the_last_good_set() {
    if !tools::python_pyjwt() {
        return;
    }
    let side = tokens(URL_ISS);
    let doc = Arc::new(Mutex::new(side["jwks"].to_string()));
    let hits = Arc::new(AtomicUsize::new(0));
    let jwks_url = upstream::serve_json(doc.clone(), hits.clone()).await;
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &format!(
            "[[jwt.issuers]]\nissuer = \"{URL_ISS}\"\njwks_url = \"{jwks_url}/jwks.json\"\naudiences = [\"{AUD}\"]\n\n{}",
            route("/api/", &up, "methods = [\"jwt\"]")
        ),
    );
    kc.start();
    let http = Http::new();
    let good = side["good"]["ES256"].as_str().unwrap();
    assert_eq!(bearer(&http, &kc, good).await.status, 200);
    *doc.lock().unwrap() = r#"{"keys":[{"kty":"oct","kid":"k1","k":"c2VjcmV0"}]}"#.into();
    // An unknown kid makes keycard fetch again at once.
    let unknown = side["bad"]["unknown_kid"].as_str().unwrap();
    assert_eq!(bearer(&http, &kc, unknown).await.status, 401);
    assert_eq!(hits.load(Ordering::SeqCst), 2, "fetched again");
    assert_eq!(
        bearer(&http, &kc, good).await.status,
        200,
        "last good keys kept"
    );
    // The log line is written by the fetch, which may finish after the answer it served.
    let logged = eventually(Duration::from_secs(3), || async {
        kc.log(0).iter().any(|l| l.contains("no usable key"))
    })
    .await;
    assert!(logged.is_some(), "the failed fetch is logged");
}
