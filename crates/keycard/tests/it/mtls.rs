//! Mutual TLS: keycard's TLS listener, client certificates as identities (bindings and
//! SPIFFE rules), forwarded certificates from trusted proxies, RFC 8705 client
//! authentication and certificate-bound tokens — driven with curl and Python `requests`,
//! with certificates the test makes.

use std::process::Command;
use std::time::Duration;

use crate::common::pki::{Issued, Names, Pki};
use crate::common::{Keycard, eventually, route, tools, upstream};

/// A keycard serving TLS with a client CA, an echo upstream behind `/api/` (mtls only) and
/// `/any/` (every method), a CA and a second, foreign CA.
struct Tls {
    kc: Keycard,
    pki: Pki,
    other: Pki,
    base: String,
    _dir: tempfile::TempDir,
}

/// The answer curl got: status (0: no HTTP answer, such as a failed handshake) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
    version: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }
}

impl Tls {
    async fn start(client_auth: &str, extra: &str) -> Tls {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "test-ca");
        let other = Pki::new(dir.path(), "other-ca");
        let server = pki.server("server");
        let up = upstream::start().await;
        let config = format!(
            "{}{}{extra}\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nclient_auth = \"{client_auth}\"\n",
            route("/api/", &up, "methods = [\"mtls\"]"),
            route("/any/", &up, ""),
            server.cert.display(),
            server.key.display(),
            pki.ca.display()
        );
        let mut kc = Keycard::new(None, &config);
        let addr = kc.start();
        Tls {
            kc,
            pki,
            other,
            base: format!("https://{addr}"),
            _dir: dir,
        }
    }

    /// curl `path` with `cert` (and extra arguments).
    fn curl(&self, cert: Option<&Issued>, path: &str, extra: &[&str]) -> Answer {
        curl_to(&self.pki.ca, cert, &format!("{}{path}", self.base), extra)
    }

    fn bind(&self, cert: &Issued, subject: &str, scopes: &[&str]) -> String {
        let mut args = vec![
            "cert".to_owned(),
            "add".into(),
            "--subject".into(),
            subject.into(),
            "--cert".into(),
            cert.cert.display().to_string(),
            "--json".into(),
        ];
        for s in scopes {
            args.extend(["--scope".to_owned(), (*s).to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let v: serde_json::Value = serde_json::from_str(&self.kc.cli_ok(&args)).unwrap();
        assert_eq!(v["fingerprint"], cert.fingerprint());
        v["id"].as_str().unwrap().to_owned()
    }
}

fn curl_to(ca: &std::path::Path, cert: Option<&Issued>, url: &str, extra: &[&str]) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code} %{http_version}",
        "--cacert",
    ])
    .arg(ca);
    if let Some(c) = cert {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    let out = cmd.args(extra).arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut tail = tail.split_whitespace();
    Answer {
        status: tail.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        version: tail.next().unwrap_or("").to_owned(),
        body: body.to_owned(),
    }
}

fn alice<'a>() -> Names<'a> {
    Names {
        cn: "alice-svc",
        org: Some("Example"),
        ..Names::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bound_certificate_authenticates_with_curl_and_python_requests() {
    if !tools::curl() {
        return;
    }
    let t = Tls::start("optional", "").await;
    let cert = t.pki.client("alice", &alice());
    t.bind(&cert, "alice-svc", &["orders:read"]);
    let a = t.curl(Some(&cert), "/api/orders", &[]);
    assert_eq!(a.status, 200, "{a:?}");
    let v = a.json();
    assert_eq!(v["headers"]["x-keycard-method"], "mtls");
    assert_eq!(v["headers"]["x-keycard-subject"], "alice-svc");
    assert_eq!(v["headers"]["x-keycard-scopes"], "orders:read");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    // HTTP/2 by ALPN.
    let h2 = t.curl(Some(&cert), "/api/orders", &["--http2"]);
    assert_eq!((h2.status, h2.version.as_str()), (200, "2"), "{h2:?}");
    if tools::python_requests() {
        let script = "import sys, requests\nr = requests.get(sys.argv[1], cert=(sys.argv[2], sys.argv[3]), verify=sys.argv[4])\nprint(r.status_code)\nprint(r.json()['headers']['x-keycard-subject'])";
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(format!("{}/api/orders", t.base))
            .arg(&cert.cert)
            .arg(&cert.key)
            .arg(&t.pki.ca)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200\nalice-svc\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The binding shows in `cert list`.
    let list: serde_json::Value =
        serde_json::from_str(&t.kc.cli_ok(&["cert", "list", "--json"])).unwrap();
    assert_eq!(list[0]["fingerprint"], cert.fingerprint());
    assert_eq!(list[0]["status"], "active");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spiffe_rule_maps_a_san_uri_to_its_subject() {
    if !tools::curl() {
        return;
    }
    let t = Tls::start(
        "optional",
        "[[mtls.rules]]\nsan_uri_prefix = \"spiffe://example.org/\"\nsubject = \"{san_uri}\"\nscopes = [\"orders:read\"]\n\n[[mtls.rules]]\nsan_dns = \"*.svc.example.org\"\nsubject = \"dns-{san_dns}\"\n",
    )
    .await;
    let spiffe = t.pki.client(
        "workload",
        &Names {
            cn: "workload",
            uris: &["spiffe://example.org/ns/a/sa/b"],
            ..Names::default()
        },
    );
    let a = t.curl(Some(&spiffe), "/api/x", &[]);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.json()["headers"]["x-keycard-subject"],
        "spiffe://example.org/ns/a/sa/b"
    );
    assert_eq!(a.json()["headers"]["x-keycard-scopes"], "orders:read");
    let dns = t.pki.client(
        "dns",
        &Names {
            cn: "dns",
            dns: &["billing.svc.example.org"],
            ..Names::default()
        },
    );
    let a = t.curl(Some(&dns), "/api/x", &[]);
    assert_eq!(
        a.json()["headers"]["x-keycard-subject"],
        "dns-billing.svc.example.org"
    );
    // Another trust domain, and a name one label too deep: no rule, refused.
    for (file, names) in [
        (
            "foreign-td",
            Names {
                cn: "x",
                uris: &["spiffe://other.org/ns/a/sa/b"],
                ..Names::default()
            },
        ),
        (
            "deep",
            Names {
                cn: "y",
                dns: &["a.b.svc.example.org"],
                ..Names::default()
            },
        ),
    ] {
        let c = t.pki.client(file, &names);
        assert_eq!(t.curl(Some(&c), "/api/x", &[]).status, 401, "{file}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_that_must_be_refused_are() {
    if !tools::curl() {
        return;
    }
    let t = Tls::start("optional", "").await;
    let good = t.pki.client("alice", &alice());
    t.bind(&good, "alice-svc", &[]);
    // No certificate on an mtls-only route.
    let a = t.curl(None, "/api/x", &[]);
    assert_eq!(a.status, 401, "{a:?}");
    // A certificate of another CA: the handshake fails (or 401), never 200.
    let foreign = t.other.client("foreign", &alice());
    let a = t.curl(Some(&foreign), "/api/x", &[]);
    assert!(matches!(a.status, 0 | 401), "{a:?}");
    // An expired certificate of the right CA, even bound.
    let expired = t.pki.client(
        "expired",
        &Names {
            cn: "old",
            expired: true,
            ..Names::default()
        },
    );
    let a = t.curl(Some(&expired), "/api/x", &[]);
    assert!(matches!(a.status, 0 | 401), "{a:?}");
    // A certificate of the right CA that maps to no subject.
    let stranger = t.pki.client(
        "stranger",
        &Names {
            cn: "stranger",
            ..Names::default()
        },
    );
    assert_eq!(t.curl(Some(&stranger), "/api/x", &[]).status, 401);
    // A self-signed certificate, even bound: never an mtls identity.
    let selfie = t.pki.self_signed(
        "selfie",
        &Names {
            cn: "selfie",
            ..Names::default()
        },
    );
    t.bind(&selfie, "selfie", &[]);
    let a = t.curl(Some(&selfie), "/api/x", &[]);
    assert_eq!(a.status, 401, "{a:?}");
    // A forwarded-certificate header from a client that is not a trusted proxy is not
    // believed: no certificate, 401.
    let pem = std::fs::read_to_string(&good.cert).unwrap();
    let header = format!("X-SSL-Client-Cert: {}", urlencode(&pem));
    assert_eq!(t.curl(None, "/api/x", &["-H", &header]).status, 401);
    // The audit log has the reasons.
    audit_has(&t.kc, "\"untrusted_certificate\"").await;
    audit_has(&t.kc, "\"unknown_credential\"").await;
    // The good one still passes.
    assert_eq!(t.curl(Some(&good), "/api/x", &[]).status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binding_revoked_while_serving_is_refused_within_a_second() {
    if !tools::curl() {
        return;
    }
    let t = Tls::start("optional", "").await;
    let cert = t.pki.client("alice", &alice());
    let id = t.bind(&cert, "alice-svc", &[]);
    assert_eq!(t.curl(Some(&cert), "/api/x", &[]).status, 200);
    t.kc.cli_ok(&["cert", "revoke", &id]);
    let took = eventually(Duration::from_secs(1), || async {
        t.curl(Some(&cert), "/api/x", &[]).status == 401
    })
    .await;
    assert!(took.is_some(), "still accepted a second after revocation");
    // Bound again: accepted again.
    t.bind(&cert, "alice-svc", &[]);
    let back = eventually(Duration::from_secs(2), || async {
        t.curl(Some(&cert), "/api/x", &[]).status == 200
    })
    .await;
    assert!(back.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn required_client_auth_refuses_the_handshake_without_a_certificate() {
    if !tools::curl() {
        return;
    }
    let t = Tls::start("required", "").await;
    let cert = t.pki.client("alice", &alice());
    t.bind(&cert, "alice-svc", &[]);
    let a = t.curl(None, "/_keycard/health", &[]);
    assert_eq!(
        a.status, 0,
        "a client without a certificate got an answer: {a:?}"
    );
    assert_eq!(t.curl(Some(&cert), "/_keycard/health", &[]).status, 200);
    // A self-signed certificate: only one registered to a client completes the handshake,
    // from within a second of its registration, and no longer once the client is revoked.
    let device = t.pki.self_signed(
        "device",
        &Names {
            cn: "device-2",
            ..Names::default()
        },
    );
    let stranger = t.pki.self_signed(
        "stranger",
        &Names {
            cn: "device-2",
            ..Names::default()
        },
    );
    assert_eq!(t.curl(Some(&device), "/_keycard/health", &[]).status, 0);
    t.kc.cli_ok(&[
        "client",
        "create",
        "device-2",
        "--auth",
        "self_signed_tls_client_auth",
        "--cert",
        device.cert.to_str().unwrap(),
        "--grant",
        "client_credentials",
    ]);
    let admitted = eventually(Duration::from_secs(1), || async {
        t.curl(Some(&device), "/_keycard/health", &[]).status == 200
    })
    .await;
    assert!(admitted.is_some(), "the registered certificate is admitted");
    assert_eq!(token_with(&t, &device, "device-2").status, 200);
    assert_eq!(t.curl(Some(&stranger), "/_keycard/health", &[]).status, 0);
    t.kc.cli_ok(&["client", "revoke", "device-2"]);
    let refused = eventually(Duration::from_secs(1), || async {
        t.curl(Some(&device), "/_keycard/health", &[]).status == 0
    })
    .await;
    assert!(
        refused.is_some(),
        "a revoked client's certificate is refused"
    );
    // No session is ever resumed on a listener that asks for certificates: a resumed one
    // skips the verifier, and would outlive the revocation above.
    let sess = t.kc.dir.path().join("session.pem");
    let addr = t.base.trim_start_matches("https://").to_owned();
    let connect = |extra: &[&std::ffi::OsStr]| {
        use std::io::Write as _;
        // A whole request that closes the connection: the session (and any ticket) is in
        // hand by the time the answer is.
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &addr, "-CAfile"])
            .arg(&t.pki.ca)
            .arg("-cert")
            .arg(&cert.cert)
            .arg("-key")
            .arg(&cert.key)
            .arg("-ign_eof")
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"GET /_keycard/health HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n")
            .unwrap();
        // Kept open a moment: the session tickets of TLS 1.3 come after the handshake.
        std::thread::sleep(Duration::from_millis(500));
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let first = connect(&["-sess_out".as_ref(), sess.as_os_str()]);
    assert!(first.contains("200 OK"), "{first}");
    // Without a ticket openssl has no session to write; with one, it must not be taken.
    if sess.exists() {
        let again = connect(&["-sess_in".as_ref(), sess.as_os_str()]);
        assert!(again.contains("200 OK"), "{again}");
        assert!(again.contains("New, TLS"), "a session was resumed: {again}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_other_method_works_over_tls() {
    if !tools::curl() {
        return;
    }
    let t = Tls::start("optional", "").await;
    // API key.
    let (_, key) = t.kc.create_key("svc", &[], &[]);
    let a = t.curl(None, "/any/x", &["-H", &format!("X-API-Key: {key}")]);
    assert_eq!(a.json()["headers"]["x-keycard-method"], "api_key", "{a:?}");
    // Basic and Digest.
    t.kc.add_user("bob", "correct horse battery", &["--digest"]);
    let a = t.curl(None, "/any/x", &["-u", "bob:correct horse battery"]);
    assert_eq!(a.json()["headers"]["x-keycard-method"], "basic", "{a:?}");
    let a = t.curl(
        None,
        "/any/x",
        &["--digest", "-u", "bob:correct horse battery"],
    );
    assert_eq!(a.json()["headers"]["x-keycard-method"], "digest", "{a:?}");
    // HMAC: `keycard sign` output through curl.
    let hk: serde_json::Value =
        serde_json::from_str(
            &t.kc
                .cli_ok(&["hmac", "create", "--subject", "signer", "--json"]),
        )
        .unwrap();
    let secret_file = t.kc.path("hmac.b64");
    std::fs::write(&secret_file, hk["secret"].as_str().unwrap()).unwrap();
    let url = format!("{}/any/x", t.base);
    let signed = t.kc.cli_ok(&[
        "sign",
        "--key-id",
        hk["key_id"].as_str().unwrap(),
        "--secret-file",
        secret_file.to_str().unwrap(),
        &url,
    ]);
    let mut extra = Vec::new();
    for line in signed.lines().filter(|l| !l.trim().is_empty()) {
        extra.push("-H".to_owned());
        extra.push(line.to_owned());
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let a = t.curl(None, "/any/x", &extra);
    assert_eq!(a.json()["headers"]["x-keycard-method"], "hmac", "{a:?}");
    // oauth2: a client-credentials token fetched and used over TLS.
    let c: serde_json::Value = serde_json::from_str(&t.kc.cli_ok(&[
        "client",
        "create",
        "batch",
        "--grant",
        "client_credentials",
        "--json",
    ]))
    .unwrap();
    let auth = format!("batch:{}", c["client_secret"].as_str().unwrap());
    let tok = t.curl(
        None,
        "/oauth2/token",
        &["-u", &auth, "-d", "grant_type=client_credentials"],
    );
    let token = tok.json()["access_token"].as_str().unwrap().to_owned();
    let a = t.curl(
        None,
        "/any/x",
        &["-H", &format!("Authorization: Bearer {token}")],
    );
    assert_eq!(a.json()["headers"]["x-keycard-method"], "oauth2", "{a:?}");
    // The issuer is the https URL.
    let meta = t
        .curl(None, "/.well-known/oauth-authorization-server", &[])
        .json();
    assert!(
        meta["issuer"].as_str().unwrap().starts_with("https://"),
        "{meta}"
    );
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
    let methods = meta["token_endpoint_auth_methods_supported"].to_string();
    assert!(
        methods.contains("\"tls_client_auth\"")
            && methods.contains("\"self_signed_tls_client_auth\""),
        "{methods}"
    );
}

/// A client-credentials token for `client_id`, authenticated by `cert` (RFC 8705).
fn token_with(t: &Tls, cert: &Issued, client_id: &str) -> Answer {
    t.curl(
        Some(cert),
        "/oauth2/token",
        &[
            "-d",
            "grant_type=client_credentials",
            "-d",
            &format!("client_id={client_id}"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_bound_tokens_work_only_with_their_certificate() {
    if !tools::curl() {
        return;
    }
    let t = Tls::start("optional", "").await;
    let svc = t.pki.client(
        "svc",
        &Names {
            cn: "svc-client",
            org: Some("Example"),
            ..Names::default()
        },
    );
    let other = t.pki.client("other", &alice());
    t.kc.cli_ok(&[
        "client",
        "create",
        "svc-client",
        "--auth",
        "tls_client_auth",
        "--tls-subject-dn",
        "CN=svc-client, O=Example",
        "--grant",
        "client_credentials",
        "--scope",
        "orders:read",
    ]);
    let tok = token_with(&t, &svc, "svc-client");
    assert_eq!(tok.status, 200, "{tok:?}");
    let token = tok.json()["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Authorization: Bearer {token}");
    // Bound: cnf.x5t#S256 is the certificate's SHA-256, base64url.
    let claims = token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    let x5t = keycard_core::cert::CertIdentity::from_der(&svc.der)
        .unwrap()
        .x5t_s256();
    assert_eq!(claims["cnf"]["x5t#S256"], x5t.as_str());
    // With its certificate: accepted. With another certificate, or none: refused.
    let a = t.curl(Some(&svc), "/any/x", &["-H", &bearer]);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["headers"]["x-keycard-method"], "oauth2");
    assert_eq!(t.curl(Some(&other), "/any/x", &["-H", &bearer]).status, 401);
    assert_eq!(t.curl(None, "/any/x", &["-H", &bearer]).status, 401);
    audit_has(&t.kc, "\"certificate_mismatch\"").await;
    // Introspection, by the client itself (authenticated by its certificate), shows cnf.
    let i = t.curl(
        Some(&svc),
        "/oauth2/introspect",
        &[
            "-d",
            "client_id=svc-client",
            "-d",
            &format!("token={token}"),
        ],
    );
    assert_eq!(i.json()["cnf"]["x5t#S256"], x5t.as_str(), "{i:?}");
    // Client authentication refused: another certificate (its DN differs), no
    // certificate, or a secret instead.
    for (cert, extra) in [
        (Some(&other), ""),
        (None, ""),
        (Some(&svc), "client_secret=x"),
    ] {
        let mut args = vec![
            "-d",
            "grant_type=client_credentials",
            "-d",
            "client_id=svc-client",
        ];
        if !extra.is_empty() {
            args.extend(["-d", extra]);
        }
        let a = t.curl(cert, "/oauth2/token", &args);
        assert_eq!(a.status, 401, "{a:?}");
        assert_eq!(a.json()["error"], "invalid_client");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn self_signed_client_authentication_matches_the_registered_certificate() {
    if !tools::curl() {
        return;
    }
    let t = Tls::start("optional", "").await;
    let mine = t.pki.self_signed(
        "mine",
        &Names {
            cn: "device-1",
            ..Names::default()
        },
    );
    let theirs = t.pki.self_signed(
        "theirs",
        &Names {
            cn: "device-1",
            ..Names::default()
        },
    );
    t.kc.cli_ok(&[
        "client",
        "create",
        "device-1",
        "--auth",
        "self_signed_tls_client_auth",
        "--cert",
        mine.cert.to_str().unwrap(),
        "--grant",
        "client_credentials",
    ]);
    let tok = token_with(&t, &mine, "device-1");
    assert_eq!(tok.status, 200, "{tok:?}");
    let bearer = format!(
        "Authorization: Bearer {}",
        tok.json()["access_token"].as_str().unwrap()
    );
    assert_eq!(t.curl(Some(&mine), "/any/x", &["-H", &bearer]).status, 200);
    assert_eq!(
        t.curl(Some(&theirs), "/any/x", &["-H", &bearer]).status,
        401
    );
    // The same name, another key: not the registered certificate.
    let a = token_with(&t, &theirs, "device-1");
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // A CA-issued certificate is not the registered self-signed one either.
    let ca_issued = t.pki.client(
        "ca-issued",
        &Names {
            cn: "device-1",
            ..Names::default()
        },
    );
    assert_eq!(token_with(&t, &ca_issued, "device-1").status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_are_reloaded_when_the_files_change() {
    if !tools::curl() {
        return;
    }
    let t = Tls::start("optional", "").await;
    let server_pem = || {
        let out = Command::new("python3")
            .args(["-c", "import ssl, sys; print(ssl.get_server_certificate(('127.0.0.1', int(sys.argv[1]))))"])
            .arg(t.base.rsplit(':').next().unwrap())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = server_pem();
    assert!(before.contains("BEGIN CERTIFICATE"), "{before}");
    // A connection opened before the change: one request now, one after the reload, on
    // the same connection (http.client does not reconnect: a dropped connection fails).
    let open = Command::new("python3")
        .args([
            "-c",
            "import http.client, ssl, sys, time\nctx = ssl.create_default_context(cafile=sys.argv[2])\nc = http.client.HTTPSConnection('127.0.0.1', int(sys.argv[1]), context=ctx)\nc.request('GET', '/_keycard/health'); r = c.getresponse(); r.read(); a = r.status\ntime.sleep(5)\nc.request('GET', '/_keycard/health'); r = c.getresponse(); r.read()\nprint(a, r.status)",
        ])
        .arg(t.base.rsplit(':').next().unwrap())
        .arg(&t.pki.ca)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // A new certificate from another CA written over the files (as certbot would).
    let next = t.other.server("next");
    let cfg = std::fs::read_to_string(&t.kc.config).unwrap();
    let cert_path = cfg
        .lines()
        .find_map(|l| l.strip_prefix("cert = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let key_path = cfg
        .lines()
        .find_map(|l| l.strip_prefix("key = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    std::fs::copy(&next.key, &key_path).unwrap();
    std::fs::copy(&next.cert, &cert_path).unwrap();
    let changed = eventually(Duration::from_secs(8), || async { server_pem() != before }).await;
    assert!(changed.is_some(), "the new certificate was not served");
    let out = open.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200 200",
        "the open connection did not survive the reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A broken file keeps the last good certificate, and the server keeps serving.
    std::fs::write(&cert_path, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let a = curl_to(
        &t.other.ca,
        None,
        &format!("{}/_keycard/health", t.base),
        &[],
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        t.kc.log(0)
            .iter()
            .any(|l| l.contains("cannot reload the TLS certificates"))
    );
}

/// What a client reaching keycard through a proxy can send: `headers` (`Name: value`) on a
/// request to `url`, answered with the status and body.
fn curl_headers(url: &str, extra: &[String]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "10", "-w", "\n%{http_code}"]);
    for h in extra {
        cmd.arg("-H").arg(h);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse::<u16>().unwrap(), body.to_owned())
}

/// The two shapes a forwarded certificate arrives in: nginx's `$ssl_client_escaped_cert` and
/// Envoy's XFCC.
fn ssl_client_cert(c: &Issued) -> String {
    let pem = urlencode(&std::fs::read_to_string(&c.cert).unwrap());
    format!("X-SSL-Client-Cert: {pem}")
}

fn xfcc(c: &Issued) -> String {
    let pem = urlencode(&std::fs::read_to_string(&c.cert).unwrap());
    format!("X-Forwarded-Client-Cert: By=spiffe://proxy;Hash=00;Cert=\"{pem}\";Subject=\"CN=x\"")
}

/// One header, chosen by the operator, read only from the proxies named for it: the other
/// header is never a certificate (the attack: a client behind nginx sends Envoy's header, or
/// the reverse, with an admin's certificate — certificates are public), a repeated header is
/// refused, `trusted_proxies` alone believes neither, and the default believes neither.
#[tokio::test(flavor = "multi_thread")]
async fn forwarded_certificates_come_only_from_the_named_header_and_proxies() {
    if !tools::curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test-ca");
    let other = Pki::new(dir.path(), "other-ca");
    let (up, hits) = upstream::start_counting().await;
    let alice_cert = pki.client("alice", &alice());
    let admin_cert = pki.client(
        "admin",
        &Names {
            cn: "admin",
            ..Names::default()
        },
    );
    let foreign = other.client("foreign", &alice());
    // (forwarded_cert_header, forwarded_cert_from): which header, if any, is believed.
    let cases: [(Option<&str>, &str, Option<&str>); 4] = [
        (
            Some("x-ssl-client-cert"),
            "127.0.0.1/32",
            Some("X-SSL-Client-Cert"),
        ),
        (
            Some("x-forwarded-client-cert"),
            "127.0.0.0/8",
            Some("X-Forwarded-Client-Cert"),
        ),
        // Named, but this peer is not a forwarding proxy (it is a trusted proxy).
        (Some("x-ssl-client-cert"), "10.0.0.0/8", None),
        // Not configured: forwarded certificates are off, whoever sends them.
        (None, "", None),
    ];
    for (header, from, believed) in cases {
        let forwarding = match header {
            Some(h) => {
                format!("forwarded_cert_header = \"{h}\"\nforwarded_cert_from = [\"{from}\"]\n")
            }
            None => String::new(),
        };
        let config = format!(
            "{}\n[mtls]\nclient_ca = \"{}\"\n{forwarding}",
            route("/api/", &up, "methods = [\"mtls\"]"),
            pki.ca.display()
        );
        let mut kc = Keycard::new(None, &config);
        kc.trust_proxies("127.0.0.1/32");
        kc.start();
        for (cert, subject, scope) in [
            (&alice_cert, "alice-svc", "orders:read"),
            (&admin_cert, "root", "keycard:admin"),
        ] {
            let c = cert.cert.to_str().unwrap();
            kc.cli_ok(&[
                "cert",
                "add",
                "--subject",
                subject,
                "--cert",
                c,
                "--scope",
                scope,
            ]);
        }
        let url = kc.url("/api/x");
        for (shape, name) in [
            (
                ssl_client_cert as fn(&Issued) -> String,
                "X-SSL-Client-Cert",
            ),
            (xfcc, "X-Forwarded-Client-Cert"),
        ] {
            let before = hits.load(std::sync::atomic::Ordering::SeqCst);
            let (code, body) = curl_headers(&url, &[shape(&alice_cert)]);
            if believed == Some(name) {
                assert_eq!(code, 200, "{name} with {header:?}: {body}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["headers"]["x-keycard-method"], "mtls");
                assert_eq!(v["headers"]["x-keycard-subject"], "alice-svc");
                // Neither header reaches the upstream, whoever sent it.
                assert!(v["headers"].get("x-ssl-client-cert").is_none());
                assert!(v["headers"].get("x-forwarded-client-cert").is_none());
            } else {
                assert_eq!(code, 401, "{name} with {header:?}: {body}");
                assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before);
                // The admin API: an admin's certificate in a header keycard does not read
                // creates nothing.
                let admin = kc.url("/_keycard/admin/v1/keys");
                let out = Command::new("curl")
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
                    .args(["-H", "Content-Type: application/json", "-H"])
                    .arg(shape(&admin_cert))
                    .args([
                        "--data",
                        r#"{"subject":"attacker","scopes":["keycard:admin"]}"#,
                    ])
                    .arg(&admin)
                    .output()
                    .unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout),
                    "401",
                    "{name} {header:?}"
                );
            }
        }
        let keys = kc.cli_ok(&["key", "list", "--json"]);
        assert!(!keys.contains("attacker"), "{keys}");
        if let Some(name) = believed {
            let shape = if name == "X-SSL-Client-Cert" {
                ssl_client_cert
            } else {
                xfcc
            };
            // Both headers: only the named one counts (a foreign CA's certificate in the
            // named one, alice's in the other: refused).
            let other_shape = if name == "X-SSL-Client-Cert" {
                xfcc
            } else {
                ssl_client_cert
            };
            let (code, _) = curl_headers(&url, &[shape(&foreign), other_shape(&alice_cert)]);
            assert_eq!(code, 401);
            // The named header twice: which one the proxy set cannot be told.
            let before = hits.load(std::sync::atomic::Ordering::SeqCst);
            let (code, _) = curl_headers(&url, &[shape(&alice_cert), shape(&admin_cert)]);
            assert_eq!(code, 400);
            assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before);
            audit_has(&kc, r#""reason":"untrusted_forwarded_header""#).await;
            // Re-verified against the client CA even from a forwarding proxy; garbage is no
            // certificate.
            assert_eq!(curl_headers(&url, &[shape(&foreign)]).0, 401);
            let garbage = format!("{name}: -----BEGIN%20CERTIFICATE-----%0AAAAA");
            assert_eq!(curl_headers(&url, &[garbage]).0, 401);
            // Behind a proxy that appends its element to the client's XFCC: a client prefix
            // crafted to swallow the proxy's element makes the header unreadable, never the
            // admin's certificate the identity.
            if name == "X-Forwarded-Client-Cert" {
                let pem = |c: &Issued| urlencode(&std::fs::read_to_string(&c.cert).unwrap());
                let proxy = format!(
                    "By=spiffe://envoy;Hash=abcd;Cert=\"{}\";Subject=\"CN=alice\";URI=",
                    pem(&alice_cert)
                );
                for prefix in [
                    format!("Chain={};x=\\", pem(&admin_cert)),
                    format!("Cert={};x=\"", pem(&admin_cert)),
                ] {
                    let h = format!("X-Forwarded-Client-Cert: {prefix},{proxy}");
                    let (code, body) = curl_headers(&url, &[h]);
                    assert_eq!(code, 401, "{body}");
                }
                // The same proxy element after a well-formed client element: the proxy's.
                let h = format!(
                    "X-Forwarded-Client-Cert: By=x;Cert=\"{}\",{proxy}",
                    pem(&admin_cert)
                );
                let (code, body) = curl_headers(&url, &[h]);
                assert_eq!(code, 200, "{body}");
                assert!(body.contains("alice-svc"), "{body}");
            }
            // The audit event says where the certificate came from.
            audit_has(&kc, r#""subject":"alice-svc","credential_id":"#).await;
            audit_has(&kc, r#""cert_source":"forwarded""#).await;
        }
    }
}

/// With one client CA bundle holding two trust domains' roots, each rule maps only
/// certificates of its own bundle (`ca`): the other domain's CA cannot mint this domain's
/// SPIFFE IDs. A SPIFFE rule also wants exactly one URI SAN and a clean path.
#[tokio::test(flavor = "multi_thread")]
async fn a_rule_maps_only_certificates_of_its_own_trust_bundle() {
    if !tools::curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = Pki::new(dir.path(), "domain-a");
    let b = Pki::new(dir.path(), "domain-b");
    let bundle = dir.path().join("bundle.pem");
    let pem = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    std::fs::write(&bundle, pem(&a.ca) + &pem(&b.ca)).unwrap();
    let (up, hits) = upstream::start_counting().await;
    let rules = format!(
        "[[mtls.rules]]\nsan_uri_prefix = \"spiffe://a.example/\"\nca = \"{}\"\nsubject = \"{{san_uri}}\"\n\n\
         [[mtls.rules]]\nsan_uri_prefix = \"spiffe://b.example/\"\nca = \"{}\"\nsubject = \"{{san_uri}}\"\n",
        a.ca.display(),
        b.ca.display()
    );
    let config = format!(
        "{}\n[mtls]\nclient_ca = \"{}\"\nforwarded_cert_header = \"x-ssl-client-cert\"\nforwarded_cert_from = [\"127.0.0.1\"]\n\n{rules}",
        route("/api/", &up, "methods = [\"mtls\"]"),
        bundle.display()
    );
    let mut kc = Keycard::new(None, &config);
    kc.start();
    let url = kc.url("/api/x");
    let svid = |pki: &Pki, file: &str, uris: &[&str]| {
        pki.client(
            file,
            &Names {
                cn: file,
                uris,
                ..Names::default()
            },
        )
    };
    for (cert, want) in [
        (
            svid(&a, "a-w", &["spiffe://a.example/w"]),
            Some("spiffe://a.example/w"),
        ),
        (
            svid(&b, "b-w", &["spiffe://b.example/w"]),
            Some("spiffe://b.example/w"),
        ),
        // Domain b's CA naming a workload of domain a.
        (svid(&b, "b-as-a", &["spiffe://a.example/admin"]), None),
        (svid(&a, "a-dots", &["spiffe://a.example/w/../admin"]), None),
        (svid(&a, "a-evil", &["spiffe://a.example.evil/w"]), None),
        (
            svid(
                &a,
                "a-two",
                &["spiffe://a.example/w", "spiffe://a.example/admin"],
            ),
            None,
        ),
    ] {
        let before = hits.load(std::sync::atomic::Ordering::SeqCst);
        let (code, body) = curl_headers(&url, &[ssl_client_cert(&cert)]);
        match want {
            Some(subject) => {
                assert_eq!(code, 200, "{body}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["headers"]["x-keycard-subject"], subject);
            }
            None => {
                assert_eq!(code, 401, "{:?}: {body}", cert.cert);
                assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before);
            }
        }
    }
    audit_has(&kc, r#""reason":"unknown_credential""#).await;
    // A name only a rule gives can be disabled by that name: refused within a second,
    // audited as disabled; enabled again, admitted.
    let workload = svid(&a, "a-w2", &["spiffe://a.example/w"]);
    kc.cli_ok(&["user", "disable", "spiffe://a.example/w"]);
    let refused = eventually(Duration::from_secs(1), || async {
        curl_headers(&url, &[ssl_client_cert(&workload)]).0 == 401
    })
    .await;
    assert!(refused.is_some());
    audit_has(&kc, r#""reason":"disabled""#).await;
    kc.cli_ok(&["user", "enable", "spiffe://a.example/w"]);
    let back = eventually(Duration::from_secs(1), || async {
        curl_headers(&url, &[ssl_client_cert(&workload)]).0 == 200
    })
    .await;
    assert!(back.is_some());
}

/// Real nginx terminating TLS in front of keycard, with the shipped
/// `examples/nginx/keycard-mtls.conf`: the certificate of nginx's handshake is the identity;
/// a client with no certificate, or with one of its own, who adds either forwarded header
/// with somebody else's certificate gets nothing from it.
#[tokio::test(flavor = "multi_thread")]
async fn behind_real_nginx_only_the_handshake_certificate_counts() {
    if !tools::curl() || !crate::common::nginx::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test-ca");
    let server = pki.server("server");
    let (up, hits) = upstream::start_counting().await;
    let config = format!(
        "{}\n[mtls]\nclient_ca = \"{}\"\nforwarded_cert_header = \"x-ssl-client-cert\"\nforwarded_cert_from = [\"127.0.0.1/32\"]\n",
        route("/api/", &up, "methods = [\"mtls\", \"api_key\"]"),
        pki.ca.display()
    );
    let mut kc = Keycard::new(None, &config);
    kc.trust_proxies("127.0.0.1/32");
    let kc_addr = kc.start();
    let alice_cert = pki.client("alice", &alice());
    let bob_cert = pki.client(
        "bob",
        &Names {
            cn: "bob",
            ..Names::default()
        },
    );
    for (cert, subject) in [(&alice_cert, "alice-svc"), (&bob_cert, "bob")] {
        let c = cert.cert.to_str().unwrap();
        kc.cli_ok(&["cert", "add", "--subject", subject, "--cert", c]);
    }
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/nginx/keycard-mtls.conf"
    ))
    .unwrap();
    let port = crate::common::nginx::free_port();
    let conf = example
        .replace("127.0.0.1:8080", &kc_addr.to_string())
        .replace("127.0.0.1:8443", &format!("127.0.0.1:{port}"))
        .replace("server-key.pem", &server.key.display().to_string())
        .replace(" server.pem", &format!(" {}", server.cert.display()))
        .replace("client-ca.pem", &pki.ca.display().to_string());
    let _nginx = crate::common::nginx::Nginx::start(&dir.path().join("nginx"), &conf, port);
    let url = format!("https://127.0.0.1:{port}/api/x");
    // The handshake's certificate.
    for cert in [&alice_cert, &bob_cert] {
        let a = curl_to(&pki.ca, Some(cert), &url, &[]);
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.json()["headers"]["x-keycard-method"], "mtls");
    }
    audit_has(&kc, r#""cert_source":"forwarded""#).await;
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    for forged in [ssl_client_cert(&alice_cert), xfcc(&alice_cert)] {
        // No certificate of its own: nginx sends no certificate header, keycard reads no
        // other.
        let a = curl_to(&pki.ca, None, &url, &["-H", &forged]);
        assert_eq!(a.status, 401, "{forged:.40}: {a:?}");
        // A certificate of its own: that one, never the forged one.
        let a = curl_to(&pki.ca, Some(&bob_cert), &url, &["-H", &forged]);
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.json()["headers"]["x-keycard-subject"], "bob");
    }
    // Only bob's two requests reached the upstream.
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before + 2);
}

/// Forward-auth with client certificates: real nginx terminating TLS with the shipped
/// `examples/nginx/keycard-forward-auth-mtls.conf` passes each handshake's certificate to
/// `/_keycard/verify`; a registered one is the identity, the header a client sends is not.
#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_behind_nginx_with_client_certificates() {
    if !tools::curl() || !crate::common::nginx::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test-ca");
    let server = pki.server("server");
    let (up, hits) = upstream::start_counting().await;
    let config = format!(
        "[[routes]]\nprefix = \"/api/\"\nmethods = [\"mtls\", \"api_key\"]\n\n[mtls]\nclient_ca = \"{}\"\nforwarded_cert_header = \"x-ssl-client-cert\"\nforwarded_cert_from = [\"127.0.0.1/32\"]\n",
        pki.ca.display()
    );
    let mut kc = Keycard::new(None, &config);
    kc.trust_proxies("127.0.0.1/32");
    let kc_addr = kc.start();
    let alice_cert = pki.client("alice", &alice());
    // From the same CA, but bound to no one.
    let bob_cert = pki.client(
        "bob",
        &Names {
            cn: "bob",
            ..Names::default()
        },
    );
    let c = alice_cert.cert.to_str().unwrap();
    kc.cli_ok(&["cert", "add", "--subject", "alice-svc", "--cert", c]);
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/nginx/keycard-forward-auth-mtls.conf"
    ))
    .unwrap();
    let port = crate::common::nginx::free_port();
    let conf = example
        .replace("127.0.0.1:8080", &kc_addr.to_string())
        .replace("127.0.0.1:9000", up.trim_start_matches("http://"))
        .replace("127.0.0.1:8444", &format!("127.0.0.1:{port}"))
        .replace("server-key.pem", &server.key.display().to_string())
        .replace(" server.pem", &format!(" {}", server.cert.display()))
        .replace("client-ca.pem", &pki.ca.display().to_string());
    let _nginx = crate::common::nginx::Nginx::start(&dir.path().join("nginx"), &conf, port);
    let url = format!("https://127.0.0.1:{port}/api/x");

    let a = curl_to(&pki.ca, Some(&alice_cert), &url, &[]);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["headers"]["x-keycard-method"], "mtls");
    assert_eq!(a.json()["headers"]["x-keycard-subject"], "alice-svc");
    // The application never sees a certificate header.
    assert!(
        a.json()["headers"].get("x-ssl-client-cert").is_none(),
        "{a:?}"
    );
    audit_has(&kc, r#""cert_source":"forwarded""#).await;
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    for forged in [ssl_client_cert(&alice_cert), xfcc(&alice_cert)] {
        // No certificate, or an unbound one of its own, plus alice's in a header: refused.
        let a = curl_to(&pki.ca, None, &url, &["-H", &forged]);
        assert_eq!(a.status, 401, "{forged:.40}: {a:?}");
        let a = curl_to(&pki.ca, Some(&bob_cert), &url, &["-H", &forged]);
        assert_eq!(a.status, 401, "{forged:.40}: {a:?}");
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_tls_config_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test-ca");
    let server = pki.server("server");
    let truncated = dir.path().join("truncated.pem");
    let text = std::fs::read_to_string(&server.cert).unwrap();
    std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
    let cases = [
        (
            format!(
                "cert = \"{}\"\nkey = \"{}\"",
                truncated.display(),
                server.key.display()
            ),
            "server.tls.cert",
        ),
        (
            format!(
                "cert = \"{}\"\nkey = \"{}\"",
                server.cert.display(),
                pki.ca.display()
            ),
            "server.tls.key",
        ),
        (
            format!(
                "cert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"",
                server.cert.display(),
                server.key.display(),
                dir.path().join("missing.pem").display()
            ),
            "server.tls.client_ca",
        ),
        (
            format!(
                "cert = \"{}\"\nkey = \"{}\"\nclient_auth = \"sometimes\"",
                server.cert.display(),
                server.key.display()
            ),
            "server.tls.client_auth",
        ),
    ];
    // A broken key file: refused, and none of its content in the message.
    let broken_key = dir.path().join("broken-key.pem");
    std::fs::write(
        &broken_key,
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA\n-----BEGIN KEYMATERIAL-----\n",
    )
    .unwrap();
    let mut cases = cases.to_vec();
    cases.push((
        format!(
            "cert = \"{}\"\nkey = \"{}\"",
            server.cert.display(),
            broken_key.display()
        ),
        "server.tls.key",
    ));
    for (tls, key) in cases {
        let kc = Keycard::new(None, &format!("[server.tls]\n{tls}\n"));
        let out = Command::new(crate::common::bin())
            .arg("--config")
            .arg(&kc.config)
            .arg("serve")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key}: {err}");
        assert!(
            !err.contains("KEYMATERIAL"),
            "key material in the message: {err}"
        );
    }
}

/// Waits (up to 3 s) for the audit file to contain `needle`: it is written in the background.
async fn audit_has(kc: &Keycard, needle: &str) {
    let path = kc.path("data/audit.jsonl");
    let found = eventually(Duration::from_secs(3), || async {
        std::fs::read_to_string(&path).is_ok_and(|a| a.contains(needle))
    })
    .await;
    assert!(found.is_some(), "no {needle} in the audit log");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_flags_plain_http_off_loopback_and_not_with_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test-ca");
    let server = pki.server("server");
    let doctor = |kc: &Keycard| {
        let out = Command::new(crate::common::bin())
            .arg("--config")
            .arg(&kc.config)
            .args(["doctor", "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v)
    };
    let codes = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|f| {
                format!(
                    "{}:{}",
                    f["severity"].as_str().unwrap(),
                    f["code"].as_str().unwrap()
                )
            })
            .collect()
    };
    let plain = Keycard::new(None, "");
    let cfg = std::fs::read_to_string(&plain.config)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:8080\"");
    std::fs::write(&plain.config, cfg).unwrap();
    plain.cli_ok(&["key", "create", "--subject", "svc"]);
    let (code, v) = doctor(&plain);
    assert_eq!(code, Some(1), "{v}");
    let c = codes(&v);
    assert!(c.contains(&"critical:plain_http".to_owned()), "{c:?}");
    // The key was made without an expiry.
    assert!(c.contains(&"warning:no_expiry".to_owned()), "{c:?}");
    // A master key file others can read is critical too.
    use std::os::unix::fs::PermissionsExt;
    let key = plain.path("data/master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(codes(&doctor(&plain).1).contains(&"critical:master_key_readable".to_owned()));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The same listener with TLS: no plain_http, and with nothing critical, exit 0.
    let tls = Keycard::new(
        None,
        &format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            server.cert.display(),
            server.key.display()
        ),
    );
    let cfg = std::fs::read_to_string(&tls.config)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:8443\"");
    std::fs::write(&tls.config, cfg).unwrap();
    let (code, v) = doctor(&tls);
    assert!(!codes(&v).iter().any(|c| c.ends_with(":plain_http")), "{v}");
    assert_eq!(code, Some(0), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificates() {
    if !tools::curl() {
        return;
    }
    let t = Tls::start("optional", "").await;
    let cfg = std::fs::read_to_string(&t.kc.config).unwrap();
    let path = |k: &str| {
        cfg.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
            .unwrap()
            .trim_end_matches('"')
            .to_owned()
    };
    let (cert_path, key_path) = (path("cert"), path("key"));
    let old_times = |p: &str| std::fs::metadata(p).unwrap().modified().unwrap();
    let (cert_time, key_time) = (old_times(&cert_path), old_times(&key_path));
    // New files from another CA, with their old modification times put back: only the
    // signal can make keycard read them.
    let next = t.other.server("by-signal");
    std::fs::copy(&next.key, &key_path).unwrap();
    std::fs::copy(&next.cert, &cert_path).unwrap();
    for (p, time) in [(&cert_path, cert_time), (&key_path, key_time)] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(time)
            .unwrap();
    }
    let health = format!("{}/_keycard/health", t.base);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        curl_to(&t.pki.ca, None, &health, &[]).status,
        200,
        "reloaded without a signal"
    );
    t.kc.hangup(0);
    let reloaded = eventually(Duration::from_secs(3), || async {
        curl_to(&t.other.ca, None, &health, &[]).status == 200
    })
    .await;
    assert!(reloaded.is_some(), "SIGHUP did not reload the certificates");
    assert!(t.kc.log(0).iter().any(|l| l.contains("SIGHUP")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_with_the_admin_scope_uses_the_admin_api() {
    if !tools::curl() {
        return;
    }
    let t = Tls::start("optional", "").await;
    let ops = t.pki.client(
        "ops",
        &Names {
            cn: "ops",
            ..Default::default()
        },
    );
    t.bind(&ops, "ops-robot", &["keycard:admin"]);
    let plain = t.pki.client(
        "plain",
        &Names {
            cn: "plain",
            ..Default::default()
        },
    );
    t.bind(&plain, "plain-svc", &["orders:read"]);
    let a = t.curl(Some(&ops), "/_keycard/admin/v1/certs", &[]);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json().as_array().unwrap().len(), 2);
    // Without the scope: 403; without a certificate: 401.
    assert_eq!(
        t.curl(Some(&plain), "/_keycard/admin/v1/certs", &[]).status,
        403
    );
    assert_eq!(t.curl(None, "/_keycard/admin/v1/certs", &[]).status, 401);

    // A browser holding the admin certificate, on another site's page: a form post
    // (text/plain needs no CORS preflight) or a cross-site fetch is refused before the
    // credential counts, and creates nothing.
    let body = r#"{"subject":"csrf-victim","scopes":["keycard:admin"]}"#;
    for (headers, want) in [
        (
            vec!["Content-Type: text/plain", "Origin: https://evil.example"],
            403,
        ),
        (vec!["Content-Type: text/plain"], 415),
        (vec!["Content-Type: application/x-www-form-urlencoded"], 415),
        (vec![], 415),
        (
            vec![
                "Content-Type: application/json",
                "Sec-Fetch-Site: cross-site",
            ],
            403,
        ),
        (
            vec![
                "Content-Type: application/json",
                "Sec-Fetch-Site: same-site",
            ],
            403,
        ),
        (vec!["Content-Type: application/json", "Origin: null"], 403),
        (
            vec![
                "Content-Type: application/json",
                "Sec-Fetch-Site: none",
                "Sec-Fetch-Site: cross-site",
            ],
            403,
        ),
    ] {
        let mut extra = vec!["-X", "POST", "--data-binary", body];
        for h in &headers {
            extra.extend(["-H", h]);
        }
        if headers.is_empty() {
            // curl would add its own form type: send none at all.
            extra.extend(["-H", "Content-Type:"]);
        }
        let a = t.curl(Some(&ops), "/_keycard/admin/v1/keys", &extra);
        assert_eq!(a.status, want, "{headers:?}: {a:?}");
    }
    let listed = t.curl(Some(&ops), "/_keycard/admin/v1/keys", &[]);
    assert!(!listed.body.contains("csrf-victim"), "{listed:?}");
    audit_has(&t.kc, r#""reason":"cross_site""#).await;
    audit_has(&t.kc, r#""reason":"not_json""#).await;
    // The same request as JSON from a program (no Origin): created.
    let a = t.curl(
        Some(&ops),
        "/_keycard/admin/v1/keys",
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ],
    );
    assert_eq!(a.status, 201, "{a:?}");
}

/// A CA run with the openssl command line, as an operator runs one: it signs client
/// certificates, revokes them and publishes its list with `openssl ca -gencrl`.
struct OpensslCa {
    dir: std::path::PathBuf,
}

impl OpensslCa {
    fn new(dir: &std::path::Path) -> OpensslCa {
        let dir = dir.join("openssl-ca");
        std::fs::create_dir_all(dir.join("newcerts")).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        std::fs::write(dir.join("crlnumber"), "1000\n").unwrap();
        std::fs::write(
            dir.join("ca.cnf"),
            format!(
                "[ca]\ndefault_ca = kc\n[kc]\ndir = {}\ndatabase = $dir/index.txt\nnew_certs_dir = $dir/newcerts\nserial = $dir/serial\ncrlnumber = $dir/crlnumber\ncertificate = $dir/ca.pem\nprivate_key = $dir/ca-key.pem\ndefault_md = sha256\ndefault_days = 30\ndefault_crl_days = 7\npolicy = any\nx509_extensions = client\n[any]\ncommonName = supplied\n[client]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = clientAuth\n",
                dir.display()
            ),
        )
        .unwrap();
        let ca = OpensslCa { dir };
        ca.run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=crl-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        ca
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .current_dir(&self.dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self) -> std::path::PathBuf {
        self.dir.join("ca.pem")
    }

    fn client(&self, cn: &str) -> Issued {
        let (key, csr, cert) = (
            format!("{cn}-key.pem"),
            format!("{cn}.csr"),
            format!("{cn}.pem"),
        );
        self.run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ]);
        self.run(&[
            "ca", "-config", "ca.cnf", "-batch", "-notext", "-in", &csr, "-out", &cert,
        ]);
        let pem = std::fs::read(self.dir.join(&cert)).unwrap();
        Issued {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
            der: keycard_core::cert::certs_from_pem(&pem).unwrap().remove(0),
        }
    }

    fn revoke(&self, cert: &Issued) {
        self.run(&[
            "ca",
            "-config",
            "ca.cnf",
            "-revoke",
            cert.cert.to_str().unwrap(),
        ]);
    }

    /// Publishes the list into `out` (written beside it, then renamed, as a deploy would).
    fn publish_crl(&self, out: &std::path::Path) {
        self.run(&["ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.next.pem"]);
        std::fs::rename(self.dir.join("crl.next.pem"), out).unwrap();
    }
}

/// `server.tls.client_crl`: a client certificate its CA revoked (`openssl ca -revoke`, then
/// `-gencrl`) fails the handshake once the list is read again (SIGHUP); the others still
/// pass. A list that is no list stops start-up naming the key.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_client_certificate_is_refused_once_the_list_is_reloaded() {
    if !tools::curl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "server-ca");
    let server = pki.server("server");
    let ca = OpensslCa::new(dir.path());
    let (alice, bob) = (ca.client("alice"), ca.client("bob"));
    let crl = dir.path().join("client-crl.pem");
    ca.publish_crl(&crl);
    let (up, hits) = upstream::start_counting().await;
    let tls = |crl: &std::path::Path| {
        format!(
            "{}\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nclient_crl = \"{}\"\n",
            route("/api/", &up, "methods = [\"mtls\"]"),
            server.cert.display(),
            server.key.display(),
            ca.ca().display(),
            crl.display()
        )
    };
    let mut kc = Keycard::new(None, &tls(&crl));
    let t = Tls {
        base: format!("https://{}", kc.start()),
        kc,
        pki,
        other: Pki::new(dir.path(), "unused-ca"),
        _dir: tempfile::tempdir().unwrap(),
    };
    t.bind(&alice, "alice", &[]);
    t.bind(&bob, "bob", &[]);
    for c in [&alice, &bob] {
        assert_eq!(t.curl(Some(c), "/api/x", &[]).status, 200);
    }
    let reached = hits.load(std::sync::atomic::Ordering::SeqCst);
    ca.revoke(&bob);
    ca.publish_crl(&crl);
    t.kc.hangup(0);
    let refused = eventually(Duration::from_secs(5), || async {
        t.curl(Some(&bob), "/api/x", &[]).status == 0
    })
    .await;
    assert!(
        refused.is_some(),
        "a revoked certificate still completes the handshake"
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        reached,
        "the revoked certificate reached the upstream"
    );
    assert_eq!(t.curl(Some(&alice), "/api/x", &[]).status, 200);

    // A file that holds no usable list.
    let broken = dir.path().join("broken-crl.pem");
    std::fs::write(
        &broken,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let kc = Keycard::new(None, &tls(&broken));
    let out = kc.cli(&["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("server.tls.client_crl"), "{err}");
}

/// `doctor` on certificates: a server certificate about to expire, a weak client CA (an
/// RSA-1024 key, signed with SHA-1) and a revocation list past its next update are flagged;
/// a fresh P-256 setup is not.
#[test]
fn doctor_flags_expiring_and_weak_certificates_and_a_stale_list() {
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "soon-key.pem",
        "-out",
        "soon.pem",
        "-days",
        "10",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:1024",
        "-sha1",
        "-nodes",
        "-keyout",
        "weak-key.pem",
        "-out",
        "weak.pem",
        "-days",
        "365",
        "-subj",
        "/CN=weak-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ]);
    // A list whose next update has passed: made with rcgen, which takes any dates.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "stale-ca");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    std::fs::write(
        dir.path().join("stale-ca.pem"),
        params.self_signed(&key).unwrap().pem(),
    )
    .unwrap();
    let issuer = rcgen::Issuer::new(params, key);
    let crl = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2021, 1, 1),
        next_update: rcgen::date_time_ymd(2021, 2, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap();
    std::fs::write(dir.path().join("stale-crl.pem"), crl.pem().unwrap()).unwrap();
    std::fs::write(
        dir.path().join("both-cas.pem"),
        [
            std::fs::read(dir.path().join("weak.pem")).unwrap(),
            std::fs::read(dir.path().join("stale-ca.pem")).unwrap(),
        ]
        .concat(),
    )
    .unwrap();

    let doctor = |tls: &str| -> Vec<String> {
        let config = dir.path().join("k.toml");
        std::fs::write(
            &config,
            format!("[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\n{tls}"),
        )
        .unwrap();
        crate::doctor::doctor(&config).1
    };
    let found = doctor(
        "cert = \"soon.pem\"\nkey = \"soon-key.pem\"\nclient_ca = \"both-cas.pem\"\nclient_crl = \"stale-crl.pem\"\n",
    );
    for want in [
        "warning:certificate_expiring",
        "warning:weak_client_ca",
        "warning:crl_stale",
    ] {
        assert!(found.contains(&want.to_owned()), "{want} not in {found:?}");
    }
    // The same checks on a sound setup: nothing about certificates.
    let sound = Pki::new(dir.path(), "sound-ca");
    let server = sound.server("sound-server");
    let found = doctor(&format!(
        "cert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
        server.cert.display(),
        server.key.display(),
        sound.ca.display()
    ));
    assert!(
        !found
            .iter()
            .any(|f| f.contains("certificate") || f.contains("client_ca") || f.contains("crl")),
        "{found:?}"
    );
}
