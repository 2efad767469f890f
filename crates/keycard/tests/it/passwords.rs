//! Users, HTTP Basic (RFC 7617) and HTTP Digest (RFC 7616): real clients (curl, Python
//! `requests`), a hand-computed Digest client for the attacks, the failed-attempt throttle,
//! and changes made with the CLI reaching a running server within a second.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use http::Method;
use keycard_core::digest::HashAlg;

use crate::common::http::{Http, Resp};
use crate::common::{
    Keycard, all_bytes_under, contains, engines, eventually, route, store_for, tools, upstream,
};

const ALICE_PW: &str = "plum-orbit-kettle";
const JURGEN: &str = "jürgen";
const JURGEN_PW: &str = "pa:ss:wörd-über-long";

fn basic(user: &str, pw: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

/// A quoted or token parameter of a challenge.
pub(crate) fn param(challenge: &str, name: &str) -> Option<String> {
    let start = challenge.find(&format!("{name}="))? + name.len() + 1;
    let rest = &challenge[start..];
    Some(match rest.strip_prefix('"') {
        Some(q) => q[..q.find('"')?].to_owned(),
        None => rest.split([',', ' ']).next()?.to_owned(),
    })
}

fn digest_challenges(r: &Resp) -> Vec<String> {
    r.header_all("www-authenticate")
        .into_iter()
        .filter(|c| c.starts_with("Digest "))
        .collect()
}

/// The first bytes `s` answers within 5 s.
async fn first_line(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A Digest client written from RFC 7616 §3.4.1, independent of keycard's own code (only the
/// hash primitives are shared).
pub(crate) struct DigestReq<'a> {
    pub(crate) user: &'a str,
    pub(crate) pw: &'a str,
    pub(crate) method: &'a str,
    pub(crate) uri: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) opaque: &'a str,
    pub(crate) nc: u32,
    pub(crate) cnonce: &'a str,
    pub(crate) qop: &'a str,
    pub(crate) body: &'a [u8],
    pub(crate) alg: HashAlg,
    pub(crate) userhash: bool,
}

impl DigestReq<'_> {
    fn h(&self, s: &str) -> String {
        self.alg.hex(&[s.as_bytes()])
    }

    fn response(&self) -> String {
        let ha1 = self.h(&format!("{}:keycard:{}", self.user, self.pw));
        let ha2 = if self.qop == "auth-int" {
            let hb = self.alg.hex(&[self.body]);
            self.h(&format!("{}:{}:{hb}", self.method, self.uri))
        } else {
            self.h(&format!("{}:{}", self.method, self.uri))
        };
        self.h(&format!(
            "{ha1}:{}:{:08x}:{}:{}:{ha2}",
            self.nonce, self.nc, self.cnonce, self.qop
        ))
    }

    fn rspauth(&self) -> String {
        let ha1 = self.h(&format!("{}:keycard:{}", self.user, self.pw));
        let ha2 = self.h(&format!(":{}", self.uri));
        self.h(&format!(
            "{ha1}:{}:{:08x}:{}:{}:{ha2}",
            self.nonce, self.nc, self.cnonce, self.qop
        ))
    }

    pub(crate) fn header(&self) -> String {
        let username = if self.userhash {
            self.h(&format!("{}:keycard", self.user))
        } else {
            self.user.to_owned()
        };
        format!(
            r#"Digest username="{username}", realm="keycard", uri="{}", algorithm={}, nonce="{}", nc={:08x}, cnonce="{}", qop={}, response="{}", opaque="{}", userhash={}"#,
            self.uri,
            self.alg.name(),
            self.nonce,
            self.nc,
            self.cnonce,
            self.qop,
            self.response(),
            self.opaque,
            self.userhash
        )
    }
}

/// A fresh (nonce, opaque) from a 401.
pub(crate) async fn challenge(http: &Http, kc: &Keycard) -> (String, String) {
    let r = http.get(&kc.url("/api/x"), &[]).await;
    assert_eq!(r.status, 401);
    let c = digest_challenges(&r).remove(0);
    (param(&c, "nonce").unwrap(), param(&c, "opaque").unwrap())
}

fn users(kc: &Keycard) {
    kc.add_user("alice", ALICE_PW, &["--digest", "--scope", "orders:read"]);
    kc.add_user(JURGEN, JURGEN_PW, &["--digest"]);
    kc.add_user("bob", "violet-anchor-drift", &["--digest"]);
    kc.add_user("carol", "copper-willow-seven", &[]);
    kc.cli_ok(&["user", "disable", "bob"]);
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn python(script: &str, url: &str) -> serde_json::Value {
    let out = Command::new("python3")
        .args(["-c", script, url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_and_requests_succeed_with_basic_and_digest() {
    let up = upstream::start().await;
    let mut kc = Keycard::new(None, &route("/api/", &up, ""));
    users(&kc);
    kc.start();
    let http = Http::new();

    // A route that also takes other methods: several challenges in one 401.
    let r = http.get(&kc.url("/api/x"), &[]).await;
    assert_eq!(r.status, 401);
    let challenges = r.header_all("www-authenticate");
    assert_eq!(challenges[0], r#"Bearer realm="keycard""#);
    assert_eq!(challenges[1], r#"Basic realm="keycard", charset="UTF-8""#);
    assert_eq!(challenges.len(), 3, "MD5 is off: one Digest challenge");
    assert!(challenges[2].starts_with(
        r#"Digest realm="keycard", qop="auth, auth-int", algorithm=SHA-256, nonce=""#
    ));

    if tools::curl() {
        let url = kc.url("/api/orders?id=7");
        let creds = format!("alice:{ALICE_PW}");
        let (out, _) = curl(&["--basic", "-u", &creds, &url]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["headers"]["x-keycard-subject"], "alice");
        assert_eq!(v["headers"]["x-keycard-method"], "basic");
        assert_eq!(v["headers"]["x-keycard-scopes"], "orders:read");
        assert_eq!(v["headers"].get("authorization"), None, "not forwarded");
        // Non-ASCII user name, colons in the password.
        let (out, _) = curl(&["--basic", "-u", &format!("{JURGEN}:{JURGEN_PW}"), &url]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["headers"]["x-keycard-subject"], "j%C3%BCrgen");

        for (method_args, body) in [(vec![], ""), (vec!["-d", r#"{"qty":2}"#], r#"{"qty":2}"#)] {
            let mut args = vec!["--digest", "-v", "-D", "-", "-u", &creds];
            args.extend(method_args.iter().copied());
            args.push(&url);
            let (out, err) = curl(&args);
            assert!(err.contains("algorithm=SHA-256"), "{err}");
            assert!(out.starts_with("HTTP/1.1 401"), "the first leg: {out}");
            assert!(out.contains("HTTP/1.1 200"), "{out}");
            assert!(
                out.to_ascii_lowercase()
                    .contains("authentication-info: qop=auth, rspauth=\""),
                "{out}"
            );
            let json = &out[out.find("\r\n\r\n{").unwrap() + 4..];
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(v["headers"]["x-keycard-method"], "digest");
            assert_eq!(v["headers"]["x-keycard-subject"], "alice");
            assert_eq!(v["body"], body);
        }
        let (out, _) = curl(&["--digest", "-u", &format!("{JURGEN}:{JURGEN_PW}"), &url]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["headers"]["x-keycard-subject"], "j%C3%BCrgen");
        // Wrong password: curl gives up after the second 401.
        let (out, _) = curl(&[
            "--digest",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            "alice:wrong-password-123",
            &url,
        ]);
        assert_eq!(out, "401");
    }

    if tools::python_requests() {
        let script = r#"
import json, sys, requests
from requests.auth import HTTPBasicAuth, HTTPDigestAuth
url = sys.argv[1]
out = {}
s = requests.Session()
r = s.get(url, auth=HTTPBasicAuth("alice", "plum-orbit-kettle"))
out["basic_get"] = [r.status_code, r.json()["headers"].get("x-keycard-method")]
r = s.post(url, data=b"hello body", auth=HTTPBasicAuth("j\u00fcrgen".encode(), "pa:ss:w\u00f6rd-\u00fcber-long".encode()))
out["basic_post"] = [r.status_code, r.json()["body"], r.json()["headers"].get("x-keycard-subject")]
d = HTTPDigestAuth("alice", "plum-orbit-kettle")
r = s.get(url, auth=d)
out["digest_get"] = [r.status_code, r.json()["headers"].get("x-keycard-method"), r.request.headers["Authorization"]]
r = s.post(url, data=b'{"qty":3}', auth=d)
out["digest_post"] = [r.status_code, r.json()["body"], "rspauth" in r.headers.get("Authentication-Info", "")]
r = s.get(url, auth=HTTPDigestAuth("alice", "not-the-password"))
out["digest_wrong"] = r.status_code
print(json.dumps(out))
"#;
        let v = python(script, &kc.url("/api/orders"));
        assert_eq!(v["basic_get"], serde_json::json!([200, "basic"]));
        assert_eq!(
            v["basic_post"],
            serde_json::json!([200, "hello body", "j%C3%BCrgen"])
        );
        assert_eq!(v["digest_get"][0], 200);
        assert_eq!(v["digest_get"][1], "digest");
        assert!(v["digest_get"][2].as_str().unwrap().contains("SHA-256"));
        assert_eq!(
            v["digest_post"],
            serde_json::json!([200, r#"{"qty":3}"#, true])
        );
        assert_eq!(v["digest_wrong"], 401);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn md5_only_when_configured() {
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &format!(
            "[digest]\nalgorithms = [\"SHA-256\", \"MD5\"]\n\n{}",
            route("/api/", &up, "methods = [\"digest\"]")
        ),
    );
    kc.add_user("alice", ALICE_PW, &["--digest"]);
    kc.start();
    let http = Http::new();
    let r = http.get(&kc.url("/api/x"), &[]).await;
    let algs: Vec<String> = digest_challenges(&r)
        .iter()
        .map(|c| param(c, "algorithm").unwrap())
        .collect();
    assert_eq!(algs, ["SHA-256", "MD5"], "SHA-256 first");
    assert_eq!(
        r.header_all("www-authenticate").len(),
        2,
        "only Digest on this route"
    );

    // RFC 7616's hash, by hand: MD5 accepted here.
    let (nonce, opaque) = challenge(&http, &kc).await;
    let req = DigestReq {
        user: "alice",
        pw: ALICE_PW,
        method: "GET",
        uri: "/api/x",
        nonce: &nonce,
        opaque: &opaque,
        nc: 1,
        cnonce: "c1",
        qop: "auth",
        body: b"",
        alg: HashAlg::Md5,
        userhash: false,
    };
    let r = http
        .get(&kc.url("/api/x"), &[("authorization", &req.header())])
        .await;
    assert_eq!(r.status, 200);

    if tools::python_requests() {
        // requests merges the challenges and takes the last one's algorithm: MD5.
        let script = r#"
import json, sys, requests
from requests.auth import HTTPDigestAuth
r = requests.get(sys.argv[1], auth=HTTPDigestAuth("alice", "plum-orbit-kettle"))
print(json.dumps([r.status_code, r.request.headers["Authorization"]]))
"#;
        let v = python(script, &kc.url("/api/x"));
        assert_eq!(v[0], 200);
        assert!(v[1].as_str().unwrap().contains(r#"algorithm="MD5""#), "{v}");
    }
    if tools::curl() {
        let (_, err) = curl(&[
            "--digest",
            "-v",
            "-u",
            &format!("alice:{ALICE_PW}"),
            &kc.url("/api/x"),
        ]);
        assert!(err.contains("< HTTP/1.1 200"), "{err}");
    }
    kc.stop();

    // curl --digest with MD5: a server that offers only MD5.
    if tools::curl() {
        let up = upstream::start().await;
        let mut md5 = Keycard::new(
            None,
            &format!(
                "[digest]\nalgorithms = [\"MD5\"]\n\n{}",
                route("/api/", &up, "")
            ),
        );
        md5.add_user("alice", ALICE_PW, &["--digest"]);
        md5.start();
        let (out, err) = curl(&[
            "--digest",
            "-v",
            "-u",
            &format!("alice:{ALICE_PW}"),
            "-d",
            "md5 body",
            &md5.url("/api/x"),
        ]);
        assert!(err.contains("algorithm=MD5"), "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["headers"]["x-keycard-method"], "digest");
        assert_eq!(v["body"], "md5 body");
    }

    // The same MD5 credential where only SHA-256 is configured: refused.
    let up = upstream::start().await;
    let mut strict = Keycard::new(None, &route("/api/", &up, ""));
    strict.add_user("alice", ALICE_PW, &["--digest"]);
    strict.start();
    let (nonce, opaque) = challenge(&http, &strict).await;
    let req = DigestReq {
        nonce: &nonce,
        opaque: &opaque,
        ..req
    };
    let r = http
        .get(&strict.url("/api/x"), &[("authorization", &req.header())])
        .await;
    assert_eq!(r.status, 401);
    let sha = DigestReq {
        alg: HashAlg::Sha256,
        ..req
    };
    let r = http
        .get(&strict.url("/api/x"), &[("authorization", &sha.header())])
        .await;
    assert_eq!(r.status, 200);
}

/// The parts of a 401 a client can compare: everything but the fresh nonce.
fn shape(r: &Resp) -> (u16, Vec<u8>, Vec<String>) {
    let challenges = r
        .header_all("www-authenticate")
        .into_iter()
        .map(|c| match param(&c, "nonce") {
            Some(n) => c.replace(&n, "N"),
            None => c,
        })
        .collect();
    (r.status, r.body.to_vec(), challenges)
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_and_basic_attacks_are_refused() {
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &format!(
            "[digest]\nnonce_ttl = \"3s\"\n\n{}",
            route("/api/", &up, "")
        ),
    );
    users(&kc);
    kc.start();
    let http = Http::new();
    let url = kc.url("/api/x");
    let get = |h: String| {
        let (http, url) = (http.clone(), url.clone());
        async move { http.get(&url, &[("authorization", &h)]).await }
    };

    let (nonce, opaque) = challenge(&http, &kc).await;
    let ok = DigestReq {
        user: "alice",
        pw: ALICE_PW,
        method: "GET",
        uri: "/api/x",
        nonce: &nonce,
        opaque: &opaque,
        nc: 1,
        cnonce: "0a4f113b",
        qop: "auth",
        body: b"",
        alg: HashAlg::Sha256,
        userhash: false,
    };
    let r = get(ok.header()).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("authentication-info").unwrap(),
        format!(
            r#"qop=auth, rspauth="{}", cnonce="0a4f113b", nc=00000001"#,
            ok.rspauth()
        )
    );

    // Replays: the same header again; an nc that did not grow.
    let refused = get(ok.header()).await;
    assert_eq!(refused.status, 401, "replayed header");
    let baseline = shape(&refused);
    let r = get(DigestReq {
        cnonce: "other",
        ..ok
    }
    .header())
    .await;
    assert_eq!(r.status, 401, "nc=1 again with another cnonce");
    let r = get(DigestReq { nc: 2, ..ok }.header()).await;
    assert_eq!(r.status, 200, "nc grew");

    // A nonce with a forged MAC, and one from another server's challenge.
    let mut forged = nonce.clone().into_bytes();
    forged[20] = if forged[20] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let r = get(DigestReq {
        nonce: &forged,
        nc: 3,
        ..ok
    }
    .header())
    .await;
    assert_eq!(shape(&r), baseline, "forged nonce");
    let r = get(DigestReq {
        nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        nc: 3,
        ..ok
    }
    .header())
    .await;
    assert_eq!(shape(&r), baseline, "RFC 7616's example nonce");
    // A response for another request-target.
    let r = get(DigestReq {
        uri: "/api/other",
        nc: 4,
        ..ok
    }
    .header())
    .await;
    assert_eq!(shape(&r), baseline, "uri of another request");

    // Wrong password, unknown user, disabled user, user without Digest: the same 401.
    for (user, pw) in [
        ("alice", "not-her-password"),
        ("nobody", "whatever-password"),
        ("bob", "violet-anchor-drift"),
        ("carol", "copper-willow-seven"),
    ] {
        let r = get(DigestReq {
            user,
            pw,
            nc: 10,
            ..ok
        }
        .header())
        .await;
        assert_eq!(shape(&r), baseline, "digest {user}");
    }
    // Basic: same answer for all of these too.
    let basic_baseline = shape(&get(basic("alice", "not-her-password")).await);
    assert_eq!(basic_baseline, baseline);
    for (user, pw) in [
        ("nobody", "whatever-password"),
        ("bob", "violet-anchor-drift"),
        ("alice", ""),
    ] {
        assert_eq!(shape(&get(basic(user, pw)).await), baseline, "basic {user}");
    }
    assert_eq!(get(basic("carol", "copper-willow-seven")).await.status, 200);

    // userhash=true (RFC 7616 §3.4.4).
    let r = get(DigestReq {
        userhash: true,
        nc: 20,
        ..ok
    }
    .header())
    .await;
    assert_eq!(r.status, 200, "userhash");
    assert_eq!(
        r.upstream_header("x-keycard-subject").as_deref(),
        Some("alice")
    );

    // auth-int covers the body: accepted as signed, refused when the body changes.
    let body = br#"{"amount":100}"#;
    let int = DigestReq {
        method: "POST",
        qop: "auth-int",
        body,
        nc: 30,
        ..ok
    };
    let r = http
        .send(
            Method::POST,
            &url,
            &[("authorization", &int.header())],
            &body[..],
        )
        .await;
    assert_eq!(r.status, 200, "auth-int");
    assert_eq!(r.json()["body"], r#"{"amount":100}"#);
    let tampered = DigestReq { nc: 31, ..int };
    let r = http
        .send(
            Method::POST,
            &url,
            &[("authorization", &tampered.header())],
            &br#"{"amount":999}"#[..],
        )
        .await;
    assert_eq!(shape(&r), baseline, "auth-int with another body");
    // Signed over an empty body, padded so that only a parse of the untrimmed text fails:
    // the body is still read and checked.
    let empty = DigestReq {
        nc: 32,
        body: b"",
        ..int
    };
    let params = empty.header();
    let params = params.strip_prefix("Digest ").unwrap();
    let filler = "a".repeat(8150 - params.len() - 6);
    let padded = format!("Digest {}{params}, x=\"{filler}\"", " ".repeat(400));
    let r = http
        .send(
            Method::POST,
            &url,
            &[("authorization", &padded)],
            &br#"{"amount":999}"#[..],
        )
        .await;
    assert_eq!(shape(&r), baseline, "auth-int signed over no body");

    // An expired nonce: right credentials get stale=true, wrong ones do not.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = get(DigestReq { nc: 40, ..ok }.header()).await;
    assert_eq!(r.status, 401);
    let c = digest_challenges(&r).remove(0);
    assert!(c.ends_with(", stale=true"), "{c}");
    let r = get(DigestReq {
        pw: "not-her-password",
        nc: 41,
        ..ok
    }
    .header())
    .await;
    assert_eq!(shape(&r), baseline, "wrong password on an expired nonce");

    // Why each was refused went to the audit log only.
    let reasons = [
        "replay",
        "bad_nonce",
        "uri_mismatch",
        "bad_password",
        "unknown_credential",
        "disabled",
        "stale_nonce",
    ];
    let audit_file = kc.path("data/audit.jsonl");
    let found = eventually(Duration::from_secs(3), || {
        let audit = std::fs::read_to_string(&audit_file).unwrap_or_default();
        async move {
            reasons
                .iter()
                .all(|r| audit.contains(&format!(r#""reason":"{r}""#)))
        }
    })
    .await;
    let audit = std::fs::read_to_string(&audit_file).unwrap();
    assert!(found.is_some(), "{audit}");
    for pw in [ALICE_PW, "not-her-password", "violet-anchor-drift"] {
        assert!(!audit.contains(pw), "a password in the audit log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_users_cost_the_same_time_as_wrong_passwords() {
    let up = upstream::start().await;
    let mut kc = Keycard::new(None, &route("/api/", &up, ""));
    kc.add_user("alice", ALICE_PW, &[]);
    kc.start();
    let http = Http::new();
    let url = kc.url("/api/x");
    let mut mean = |user: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let start = Instant::now();
            for i in 0..6 {
                let r = http
                    .get(
                        &url,
                        &[(
                            "authorization",
                            &basic(user, &format!("wrong-{i}-password")),
                        )],
                    )
                    .await;
                assert_eq!(r.status, 401);
            }
            start.elapsed() / 6
        }
    };
    let known = mean("alice").await;
    let unknown = mean("nobody-at-all").await;
    // Without the dummy hash an unknown user answers in well under a millisecond while a
    // known one pays for argon2id (tens of milliseconds): a gap of 30x or more.
    assert!(
        unknown * 3 >= known,
        "unknown user {unknown:?} vs wrong password {known:?}: timing tells them apart"
    );
    let _ = &mut mean;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_eleventh_failure_from_one_ip_is_throttled() {
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &format!(
            "[limits]\nfailed_auth = \"10/min\"\n\n{}",
            route("/api/", &up, "")
        ),
    );
    kc.add_user("alice", ALICE_PW, &["--digest"]);
    kc.start();
    let url = kc.url("/api/x");
    let attacker = Http::bound("127.0.0.2".parse::<IpAddr>().unwrap());
    let bystander = Http::bound("127.0.0.3".parse::<IpAddr>().unwrap());
    let right = basic("alice", ALICE_PW);

    // The first leg of Digest (no credential) is not a failure.
    for _ in 0..12 {
        assert_eq!(attacker.get(&url, &[]).await.status, 401);
    }
    for i in 0..10 {
        let r = attacker
            .get(
                &url,
                &[(
                    "authorization",
                    &basic("alice", &format!("guess-{i}-guess")),
                )],
            )
            .await;
        assert_eq!(r.status, 401, "attempt {}", i + 1);
    }
    let r = attacker
        .get(
            &url,
            &[("authorization", &basic("alice", "guess-11-guess"))],
        )
        .await;
    assert_eq!(r.status, 429, "the 11th");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.header("ratelimit-limit").as_deref(), Some("10"));
    assert_eq!(r.header("ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(
        r.header("ratelimit-reset").unwrap().parse::<u64>().unwrap(),
        retry
    );
    assert_eq!(r.json()["error"], "too_many_requests");
    // The right password from that address waits too; another address is unaffected.
    let r = attacker.get(&url, &[("authorization", &right)]).await;
    assert_eq!(r.status, 429, "right password, throttled address");
    let r = bystander.get(&url, &[("authorization", &right)]).await;
    assert_eq!(r.status, 200);

    let audit_file = kc.path("data/audit.jsonl");
    let found = eventually(Duration::from_secs(3), || {
        let audit = std::fs::read_to_string(&audit_file).unwrap_or_default();
        async move {
            audit
                .lines()
                .filter(|l| l.contains(r#""outcome":"throttled""#) && l.contains("127.0.0.2"))
                .count()
                >= 2
        }
    })
    .await;
    assert!(found.is_some(), "throttled attempts are audited");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_throttle_lifts_when_the_window_passes_and_counts_every_method() {
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &format!(
            "[limits]\nfailed_auth = \"3/2s\"\n\n{}",
            route("/api/", &up, "")
        ),
    );
    kc.add_user("alice", ALICE_PW, &[]);
    kc.start();
    let url = kc.url("/api/x");
    let attacker = Http::bound("127.0.0.4".parse::<IpAddr>().unwrap());
    let right = basic("alice", ALICE_PW);
    // Failures of different methods add up.
    attacker
        .get(&url, &[("x-api-key", "kc_not_a_real_key")])
        .await;
    attacker
        .get(
            &url,
            &[("authorization", &basic("alice", "wrong-one-here"))],
        )
        .await;
    attacker
        .get(&url, &[("authorization", "Digest garbage")])
        .await;
    let r = attacker.get(&url, &[("authorization", &right)]).await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry <= 2);
    let lifted = eventually(Duration::from_secs(3), || {
        let (a, u, h) = (attacker.clone(), url.clone(), right.clone());
        async move { a.get(&u, &[("authorization", &h)]).await.status == 200 }
    })
    .await;
    assert!(lifted.is_some(), "the window passed");
}

#[tokio::test(flavor = "multi_thread")]
async fn password_changes_and_disables_apply_within_a_second() {
    for engine in engines() {
        let temp = store_for(engine).await;
        let up = upstream::start().await;
        let mut kc = Keycard::new(
            temp.as_ref().map(|t| t.url.as_str()),
            &route("/api/", &up, ""),
        );
        kc.add_user("alice", ALICE_PW, &["--digest"]);
        kc.start();
        let http = Http::new();
        let url = kc.url("/api/x");
        let status = |h: String| {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(&url, &[("authorization", &h)]).await.status }
        };
        let old = basic("alice", ALICE_PW);
        let new_pw = "quartz-lantern-meadow";
        let new = basic("alice", new_pw);
        // Verified once, then served from the cache of verified pairs.
        assert_eq!(status(old.clone()).await, 200, "{engine}");
        let start = Instant::now();
        assert_eq!(status(old.clone()).await, 200, "{engine}");
        assert!(start.elapsed() < Duration::from_millis(500));

        let out = kc.cli_stdin(
            &["user", "passwd", "alice", "--password-stdin"],
            &format!("{new_pw}\n"),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let took = eventually(Duration::from_secs(1), || {
            let (o, n) = (old.clone(), new.clone());
            let status = &status;
            async move { status(o).await == 401 && status(n).await == 200 }
        })
        .await;
        assert!(
            took.is_some(),
            "{engine}: the old password still works after 1 s"
        );

        // Disable: Basic (cached) and Digest both stop.
        let (nonce, opaque) = challenge(&http, &kc).await;
        let d = |nc| {
            DigestReq {
                user: "alice",
                pw: new_pw,
                method: "GET",
                uri: "/api/x",
                nonce: &nonce,
                opaque: &opaque,
                nc,
                cnonce: "cc",
                qop: "auth",
                body: b"",
                alg: HashAlg::Sha256,
                userhash: false,
            }
            .header()
        };
        assert_eq!(status(d(1)).await, 200, "{engine}: digest follows passwd");
        kc.cli_ok(&["user", "disable", "alice"]);
        let mut nc = 2;
        let took = eventually(Duration::from_secs(1), || {
            nc += 2;
            let (b, dg) = (new.clone(), d(nc));
            let status = &status;
            async move { status(b).await == 401 && status(dg).await == 401 }
        })
        .await;
        assert!(
            took.is_some(),
            "{engine}: a disabled user still gets in after 1 s"
        );
        kc.cli_ok(&["user", "enable", "alice"]);
        let took = eventually(Duration::from_secs(1), || {
            let b = new.clone();
            let status = &status;
            async move { status(b).await == 200 }
        })
        .await;
        assert!(took.is_some(), "{engine}: enable");

        // The store holds argon2id hashes and no password text.
        let listed: serde_json::Value =
            serde_json::from_str(&kc.cli_ok(&["user", "list", "--json"])).unwrap();
        assert_eq!(listed[0]["name"], "alice");
        assert_eq!(listed[0]["digest"], true);
        kc.stop();
        let mut haystacks = all_bytes_under(kc.dir.path());
        if let Some(t) = &temp {
            let dump = Command::new("pg_dump")
                .arg("--data-only")
                .arg(&t.url)
                .output()
                .unwrap();
            assert!(dump.status.success());
            haystacks.push(("pg_dump".into(), dump.stdout));
        }
        assert!(
            haystacks
                .iter()
                .any(|(_, b)| contains(b, b"$argon2id$v=19$m=19456,t=2,p=1$")),
            "{engine}: no argon2id hash stored"
        );
        for pw in [ALICE_PW, new_pw] {
            for (path, bytes) in &haystacks {
                assert!(
                    !contains(bytes, pw.as_bytes()),
                    "{engine}: password text in {}",
                    path.display()
                );
            }
        }
        if let Some(t) = temp {
            t.cleanup().await;
        }
    }
}

#[test]
fn user_cli_enforces_the_password_policy() {
    let kc = Keycard::new(None, "");
    for (pw, why) in [
        ("short-pw", "at least 12"),
        ("password1234", "too common"),
        ("aaaaaaaaaaaaaaaa", "too common"),
        ("xx-alice-xx-2026", "user name"),
    ] {
        let out = kc.cli_stdin(
            &["user", "add", "alice", "--password-stdin"],
            &format!("{pw}\n"),
        );
        assert_eq!(out.status.code(), Some(2), "{pw}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{pw}: {err}");
    }
    let out = kc.cli_stdin(
        &["user", "add", "a:b", "--password-stdin"],
        "plum-orbit-kettle\n",
    );
    assert_eq!(out.status.code(), Some(2));
    kc.add_user("alice", ALICE_PW, &["--scope", "a", "--scope", "b"]);
    let out = kc.cli_stdin(
        &["user", "add", "alice", "--password-stdin"],
        "plum-orbit-kettle\n",
    );
    assert_eq!(out.status.code(), Some(1), "already exists");
    let out = kc.cli_stdin(
        &["user", "passwd", "nobody", "--password-stdin"],
        "plum-orbit-kettle\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // Enabling a name nobody holds is an error; disabling one records it (a name only a
    // certificate rule or an external issuer gives can be disabled ahead of use).
    assert_eq!(kc.cli(&["user", "enable", "nobody"]).status.code(), Some(1));
    assert_eq!(
        kc.cli(&["user", "disable", "nobody"]).status.code(),
        Some(0)
    );
    // Without --password-stdin and no terminal, it says how to pass the password.
    let out = kc.cli(&["user", "add", "dave"]);
    assert!(!out.status.success());
    let listed: serde_json::Value =
        serde_json::from_str(&kc.cli_ok(&["user", "list", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["scopes"], serde_json::json!(["a", "b"]));
    assert_eq!(listed[0]["status"], "active");
    assert_eq!(listed[0]["digest"], false);
    assert!(
        listed[0]["password_id"]
            .as_str()
            .unwrap()
            .starts_with("pwd_")
    );
    let text = kc.cli_ok(&["user", "list"]);
    assert!(text.contains("alice") && !text.contains("argon2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_checks_digest_against_the_original_request() {
    let mut kc = Keycard::new(None, "[[routes]]\nprefix = \"/api/\"\n");
    kc.add_user("alice", ALICE_PW, &["--digest"]);
    kc.trust_proxies("127.0.0.1/32");
    kc.start();
    let http = Http::new();
    let verify = kc.url("/_keycard/verify");
    let r = http
        .get(&verify, &[("x-forwarded-uri", "/api/orders?id=1")])
        .await;
    assert_eq!(r.status, 401);
    let c = digest_challenges(&r).remove(0);
    let (nonce, opaque) = (param(&c, "nonce").unwrap(), param(&c, "opaque").unwrap());
    let d = DigestReq {
        user: "alice",
        pw: ALICE_PW,
        method: "POST",
        uri: "/api/orders?id=1",
        nonce: &nonce,
        opaque: &opaque,
        nc: 1,
        cnonce: "fa",
        qop: "auth",
        body: b"",
        alg: HashAlg::Sha256,
        userhash: false,
    };
    let ask = |uri: &'static str, method: &'static str, h: String| {
        let (http, verify) = (http.clone(), verify.clone());
        async move {
            http.get(
                &verify,
                &[
                    ("x-forwarded-uri", uri),
                    ("x-forwarded-method", method),
                    ("authorization", &h),
                ],
            )
            .await
        }
    };
    // Without the original method the proxy's own (GET) would be the one judged: refused.
    let r = http
        .get(
            &verify,
            &[
                ("x-forwarded-uri", "/api/orders?id=1"),
                ("authorization", &d.header()),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    let r = ask("/api/orders?id=1", "POST", d.header()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-keycard-method").as_deref(), Some("digest"));
    assert!(
        r.header("authentication-info")
            .unwrap()
            .contains("rspauth=")
    );
    // Signed for POST /api/orders?id=1: another method or target is refused.
    let r = ask(
        "/api/orders?id=1",
        "DELETE",
        DigestReq { nc: 2, ..d }.header(),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = ask(
        "/api/orders?id=2",
        "POST",
        DigestReq { nc: 3, ..d }.header(),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = ask(
        "/api/orders?id=1",
        "POST",
        DigestReq { nc: 4, ..d }.header(),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_int_body_reads_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream::start().await;
    let mut kc = Keycard::new(None, &route("/api/", &up, ""));
    kc.add_user("a", ALICE_PW, &["--digest"]);
    kc.start();
    let addr = kc.addr(0);
    let r = Http::new().get(&kc.url("/api/x"), &[]).await;
    let c = digest_challenges(&r).remove(0);
    let (nonce, opaque) = (param(&c, "nonce").unwrap(), param(&c, "opaque").unwrap());
    let head = |nonce: &str, opaque: &str| {
        format!(
            "POST /api/x HTTP/1.1\r\nHost: k\r\nContent-Length: 1000000\r\n\
             Authorization: Digest username=\"a\", realm=\"keycard\", nonce=\"{nonce}\", uri=\"/api/x\", \
             algorithm=SHA-256, qop=auth-int, nc=00000001, cnonce=\"c\", response=\"r\", opaque=\"{opaque}\"\r\n\r\n"
        )
    };
    // A nonce keycard never minted: no body is read for it, however many come and stall;
    // each is refused at once.
    let mut forged = Vec::new();
    for _ in 0..24 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(head("n", &opaque).as_bytes()).await.unwrap();
        forged.push(s);
    }
    for s in &mut forged {
        let text = first_line(s).await;
        assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    }
    // A real user behind a fresh nonce: clients announce a body and never send it. One
    // address holds at most 4 of the 16 body-reading slots; 4 addresses hold them all, and
    // a 17th read is answered 503.
    let from = |ip: String| async move {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        s.connect(addr).await.unwrap()
    };
    let mut held = Vec::new();
    for i in 0..16 {
        let mut s = from(format!("127.0.0.{}", 10 + i / 4)).await;
        s.write_all(head(&nonce, &opaque).as_bytes()).await.unwrap();
        held.push(s);
        if i == 3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut fifth = from("127.0.0.10".into()).await;
            fifth
                .write_all(head(&nonce, &opaque).as_bytes())
                .await
                .unwrap();
            let text = first_line(&mut fifth).await;
            assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = from("127.0.0.20".into()).await;
    s.write_all(head(&nonce, &opaque).as_bytes()).await.unwrap();
    let text = first_line(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    // The stalled reads are cut off below the minimum rate (408), and reading works again
    // (the request is then refused for its credential).
    for s in &mut held {
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("a stalled read was never cut off")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    let r = Http::new()
        .send(
            Method::POST,
            &format!("http://{addr}/api/x"),
            &[(
                "authorization",
                head(&nonce, &opaque)
                    .split("Authorization: ")
                    .nth(1)
                    .unwrap()
                    .trim_end(),
            )],
            &b"x"[..],
        )
        .await;
    assert_eq!(r.status, 401);
}

/// A Digest user added by the CLI while keycard serves answers with `userhash=true` at
/// once, though keycard built its userhash index before the user existed and the change
/// feed has not been read since (it is read every 200 ms); a userhash of nobody is still
/// refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_digest_user_is_known_by_userhash_at_once() {
    let up = upstream::start().await;
    let mut kc = Keycard::new(None, &route("/api/", &up, "methods = [\"digest\"]"));
    kc.add_user("alice", ALICE_PW, &["--digest"]);
    kc.start();
    let http = Http::new();
    let send = |user: &'static str, pw: &'static str, nonce: String, opaque: String| {
        let (http, url) = (http.clone(), kc.url("/api/x"));
        async move {
            let header = DigestReq {
                user,
                pw,
                method: "GET",
                uri: "/api/x",
                nonce: &nonce,
                opaque: &opaque,
                nc: 1,
                cnonce: "c-userhash",
                qop: "auth",
                body: b"",
                alg: HashAlg::Sha256,
                userhash: true,
            }
            .header();
            http.get(&url, &[("authorization", &header)]).await.status
        }
    };
    // The index is built now, with alice alone.
    let (nonce, opaque) = challenge(&http, &kc).await;
    assert_eq!(send("alice", ALICE_PW, nonce, opaque).await, 200);
    for (user, pw) in [
        ("dora", "amber-falcon-ridge"),
        ("emil", "quiet-harbor-lamp"),
        ("fay", "silver-meadow-kite"),
    ] {
        let (nonce, opaque) = challenge(&http, &kc).await;
        kc.add_user(user, pw, &["--digest"]);
        let started = Instant::now();
        let status = send(user, pw, nonce, opaque).await;
        assert_eq!(
            status,
            200,
            "{user}, {:?} after it was added",
            started.elapsed()
        );
    }
    let (nonce, opaque) = challenge(&http, &kc).await;
    assert_eq!(send("nobody", "no-such-password", nonce, opaque).await, 401);
    kc.stop();
}
