//! The seams of the request path, attacked as a client would: raw sockets in front of real
//! upstreams (Python's `wsgiref`, which decodes `%2F` and merges `X_Foo` into `X-Foo`, and
//! nginx with a base path), nginx `auth_request` in front of forward-auth, slow and silent
//! connections. Each attack is refused with its status and audit reason, and the upstream
//! log shows that it never arrived.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::http::Http;
use crate::common::nginx::{self, Nginx, free_port};
use crate::common::{Keycard, route, upstream};

/// Python's `wsgiref` server running `tests/it/py/wsgi_echo.py`; killed on drop.
struct Wsgi {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Wsgi {
    /// `None` (a skip) where Python is missing outside CI.
    fn start(dir: &Path) -> Option<Wsgi> {
        let log = dir.join("wsgi.jsonl");
        let spawned = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/it/py/wsgi_echo.py"
            ))
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                assert!(std::env::var_os("CI").is_none(), "python3: {e}");
                eprintln!("note: python3 is missing; this WSGI test is skipped");
                return None;
            }
        };
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().expect("wsgi_echo.py printed no port");
        Some(Wsgi {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        })
    }

    /// Every request the application received, in order.
    fn seen(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Wsgi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` as it is on a new connection and reads until keycard closes it (or
/// 10 s pass); returns everything it answered.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw answer (0 when there is none).
fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The audit events written so far whose `reason` is `reason`.
fn audited(kc: &Keycard, reason: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(kc.path("data/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["reason"] == reason)
        .collect()
}

/// Waits until `n` events with `reason` are in the audit file (it is written in batches).
async fn await_audited(kc: &Keycard, reason: &str, n: usize) -> Vec<serde_json::Value> {
    crate::common::eventually(Duration::from_secs(5), || async {
        audited(kc, reason).len() >= n
    })
    .await;
    audited(kc, reason)
}

/// Nested routes in front of a WSGI server and of nginx with a base path: the route is
/// chosen by the path exactly as sent, that same path is what the upstream receives, and a
/// path an upstream could read as another route's is refused before it gets there.
#[tokio::test(flavor = "multi_thread")]
async fn the_path_routed_is_the_path_forwarded() {
    if !nginx::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(wsgi) = Wsgi::start(dir.path()) else {
        return;
    };
    // nginx as an application under a base path: it answers with the URI it was sent and
    // the path it decoded and normalised from it.
    let nginx_port = free_port();
    let _nginx = Nginx::start(
        &dir.path().join("nginx"),
        &format!(
            "server {{ listen 127.0.0.1:{nginx_port};\n location / {{ add_header X-Seen-Uri $uri always; return 200 \"$request_uri\"; }} }}\n"
        ),
        nginx_port,
    );
    let n = format!("http://127.0.0.1:{nginx_port}");
    let w = &wsgi.url;
    let read = "methods = [\"api_key\"]\nscopes = [\"read\"]";
    let admin = "methods = [\"api_key\"]\nscopes = [\"admin\"]";
    let mut kc = Keycard::new(
        None,
        &[
            route("/w/", w, read),
            route("/w/admin/", w, admin),
            route("/e/", w, &format!("{read}\nallow_encoded_slash = true")),
            route("/e/admin/", w, admin),
            route("/n/", &format!("{n}/base/"), read),
            route("/n/admin/", &format!("{n}/base/admin/"), admin),
        ]
        .concat(),
    );
    let addr = kc.start();
    let (_, key) = kc.create_key("reader", &["read"], &[]);
    let get = |target: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: app.example\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
        )
    };

    // What the reader may do: the WSGI application sees the path as sent.
    let a = raw(addr, get("/w/orders?id=1").as_bytes()).await;
    assert_eq!(status(&a), 200, "{a}");
    assert!(a.contains(r#""PATH_INFO": "/w/orders""#), "{a}");
    assert!(a.contains(r#""QUERY_STRING": "id=1""#), "{a}");
    assert_eq!(
        status(&raw(addr, get("/w/admin/users").as_bytes()).await),
        403
    );
    let before = wsgi.seen().len();

    // Every spelling that an upstream could read as `/w/admin/…`, or that has no path to
    // route by: 400, and nothing reaches the application.
    let attacks = [
        "/w%2Fadmin/users",
        "/w%2fadmin/users",
        "/w/%2e%2e/w/admin/users",
        "/w/..;/admin/users",
        "/w;x=1/admin/users",
        "/w/admin;/users",
        "/w%3Badmin/users",
        "/w%5Cadmin/users",
        "/w/x/..%2Fadmin",
        "//w/admin/users",
        "?/w/admin/users",
        "http://app.example?/w/admin/users",
        "/e%2Fadmin/users",
        "/e/%2E%2E/e/admin/users",
    ];
    for target in attacks {
        let a = raw(addr, get(target).as_bytes()).await;
        assert_eq!(status(&a), 400, "{target}: {a}");
        assert!(!a.contains("PATH_INFO"), "{target} reached the application");
    }
    assert_eq!(
        wsgi.seen().len(),
        before,
        "an attack reached the application"
    );
    let events = await_audited(&kc, "path_not_canonical", attacks.len()).await;
    assert!(events.len() >= attacks.len() - 1, "{events:?}");

    // A route that opts in takes `%2F`, decoded by the application as it pleases, as long
    // as the decoded path chooses the same route.
    let a = raw(addr, get("/e/files/a%2Fb.txt").as_bytes()).await;
    assert_eq!(status(&a), 200, "{a}");
    assert!(a.contains(r#""PATH_INFO": "/e/files/a/b.txt""#), "{a}");

    // nginx with a base path: the prefix is replaced, the query kept apart from the path.
    let http = Http::new();
    let r = http
        .get(&kc.url("/n/items/7?sort=asc&q=%3F"), &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"/base/items/7?sort=asc&q=%3F");
    assert_eq!(r.header("x-seen-uri").as_deref(), Some("/base/items/7"));
    for target in [
        "/n%2Fadmin/x",
        "/n/..;/admin/x",
        "/n/%2e%2e/admin/x",
        "?/n/admin/",
    ] {
        assert_eq!(
            status(&raw(addr, get(target).as_bytes()).await),
            400,
            "{target}"
        );
    }
    // (nginx counts nothing here; its answers above name every URI it was sent.)
}

/// Forward-auth believes the original request only from a trusted proxy, under one
/// configured name per value. Through nginx set up as its `auth_request` documentation
/// does (`X-Original-URI`), a client adding `X-Forwarded-Uri` gets nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_believes_only_its_proxy() {
    let (app, hits) = upstream::start_counting().await;
    let routes = "[[routes]]\nprefix = \"/api/\"\nscopes = [\"read\"]\n\n[[routes]]\nprefix = \"/public/\"\npublic = true\n\n[forward_auth]\nuri_header = \"X-Original-URI\"\nmethod_header = \"X-Original-Method\"\n";
    let mut kc = Keycard::new(None, routes);
    kc.trust_proxies("127.0.0.1/32");
    let kc_addr = kc.start();
    let (_, key) = kc.create_key("svc", &["read"], &[]);
    let verify = kc.url("/_keycard/verify");

    // From an address that is not a trusted proxy: 400, saying why, whatever it sends.
    let outsider = Http::bound("127.0.0.2".parse().unwrap());
    let r = outsider
        .get(
            &verify,
            &[("x-original-uri", "/public/x"), ("x-api-key", &key)],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        String::from_utf8_lossy(&r.body).contains("server.trusted_proxies"),
        "{:?}",
        r.body
    );

    // From the proxy: the configured name only; the other name too, or a value twice: 400.
    let http = Http::new();
    let ok = http
        .get(
            &verify,
            &[("x-original-uri", "/api/x"), ("x-api-key", &key)],
        )
        .await;
    assert_eq!(ok.status, 200);
    for extra in [
        &[("x-forwarded-uri", "/public/x")][..],
        &[("x-original-uri", "/public/x")],
        &[("x-forwarded-method", "GET")],
        &[("x-original-method", "GET"), ("x-original-method", "POST")],
        &[("x-forwarded-host", "a"), ("x-forwarded-host", "b")],
    ] {
        let mut h = vec![("x-original-uri", "/api/x"), ("x-api-key", key.as_str())];
        h.extend_from_slice(extra);
        let r = http.get(&verify, &h).await;
        assert_eq!(r.status, 400, "{extra:?}");
    }
    // Without the configured header (only the default name): 400, not a fallback.
    let r = http.get(&verify, &[("x-forwarded-uri", "/public/x")]).await;
    assert_eq!(r.status, 400);
    // A forward-auth path is routed like the gateway's: not canonical, 400; a fragment,
    // which parsing would drop while the proxy forwards it, too.
    for bad in [
        "/public/..;/api/x",
        "/public%2F..%2Fapi/x",
        "?/api/x",
        "/public/x#/../../api/x",
    ] {
        let r = http.get(&verify, &[("x-original-uri", bad)]).await;
        assert_eq!(r.status, 400, "{bad}");
    }
    await_audited(&kc, "untrusted_forwarded_header", 7).await;
    // A credential bound to the method (an RFC 9421 signature here) needs the original
    // method: the subrequest's own is not it.
    let r = http
        .get(
            &verify,
            &[
                ("x-original-uri", "/api/x"),
                (
                    "signature-input",
                    "sig1=(\"@method\");created=1;keyid=\"k\"",
                ),
                ("signature", "sig1=:AAAA:"),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("no_original_method"));

    if !nginx::available() {
        return;
    }
    // nginx as its own documentation sets `auth_request` up: X-Original-URI.
    let port = free_port();
    let server = format!(
        "server {{ listen 127.0.0.1:{port};\n\
         location /api/ {{ auth_request /auth; proxy_pass {app}; }}\n\
         location /public/ {{ proxy_pass {app}; }}\n\
         location = /auth {{ internal; proxy_pass http://{kc_addr}/_keycard/verify;\n\
           proxy_pass_request_body off; proxy_set_header Content-Length \"\";\n\
           proxy_set_header X-Original-URI $request_uri; }}\n}}\n"
    );
    let _nginx = Nginx::start(&kc.dir.path().join("nginx"), &server, port);
    let base = format!("http://127.0.0.1:{port}");
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    // No credential, the client naming a public path under the other header: refused
    // (keycard answers 400, which nginx turns into a 500), the application never reached.
    let r = http
        .get(
            &format!("{base}/api/secret"),
            &[("x-forwarded-uri", "/public/x")],
        )
        .await;
    assert_ne!(r.status, 200);
    assert!(r.status >= 400, "{}", r.status);
    let r = http.get(&format!("{base}/api/secret"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before);
    // With the key, through.
    let r = http
        .get(&format!("{base}/api/secret"), &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before + 1);
}

/// What only keycard or a trusted proxy may say never reaches the application from anyone
/// else: underscore spellings (which a WSGI server reads as the dashed name), forwarding
/// headers of every dialect. A trusted proxy's chain is one chain, starting at the client
/// keycard audits. The client sees keycard's HTTP version, and HTTP/2 cookies arrive as
/// one header.
#[tokio::test(flavor = "multi_thread")]
async fn only_keycard_and_its_proxies_speak_to_the_application() {
    let dir = tempfile::tempdir().unwrap();
    let Some(wsgi) = Wsgi::start(dir.path()) else {
        return;
    };
    let mut kc = Keycard::new(
        None,
        &[
            route("/api/", &wsgi.url, "methods = [\"api_key\"]"),
            route("/public/", &wsgi.url, "public = true"),
        ]
        .concat(),
    );
    kc.trust_proxies("127.0.0.1/32");
    let addr = kc.start();
    let (_, key) = kc.create_key("svc", &[], &[]);
    let spoofs = [
        "X_Keycard_Subject: root",
        "X_Keycard_Scopes: keycard:admin",
        "X_Forwarded_For: 6.6.6.6",
        "X-Keycard-Subject: root",
        "X-Real-IP: 6.6.6.6",
        "True-Client-IP: 6.6.6.6",
        "Forwarded: for=6.6.6.6;proto=https",
        "X-Forwarded-Port: 443",
        "X-Forwarded-Prefix: /admin",
        "X-Original-URL: /admin/users",
        "X-Rewrite-URL: /admin/users",
        "X-Original-URI: /admin/users",
        "X-Custom_Thing: 1",
        "X-Forwarded-Ssl: on",
        "X-Client-IP: 6.6.6.6",
        "X-Envoy-Original-Path: /admin/users",
    ];
    // From a peer that is not a trusted proxy (127.0.0.2).
    for path in ["/api/x", "/public/x"] {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = s.connect(addr).await.unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: app.example\r\nX-API-Key: {key}\r\n{}\r\nConnection: close\r\n\r\n",
            spoofs.join("\r\n")
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert_eq!(status(&out), 200, "{out}");
        // keycard's own status line, not the HTTP/1.0 of wsgiref.
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let env = wsgi.seen().pop().unwrap();
        for k in [
            "HTTP_X_REAL_IP",
            "HTTP_TRUE_CLIENT_IP",
            "HTTP_FORWARDED",
            "HTTP_X_FORWARDED_PORT",
            "HTTP_X_FORWARDED_PREFIX",
            "HTTP_X_ORIGINAL_URL",
            "HTTP_X_REWRITE_URL",
            "HTTP_X_ORIGINAL_URI",
            "HTTP_X_CUSTOM_THING",
            "HTTP_X_FORWARDED_SSL",
            "HTTP_X_CLIENT_IP",
            "HTTP_X_ENVOY_ORIGINAL_PATH",
        ] {
            assert!(
                env.get(k).is_none(),
                "{path}: {k} reached the application: {env}"
            );
        }
        assert_eq!(env["HTTP_X_FORWARDED_FOR"], "127.0.0.2", "{path}: {env}");
        if path == "/api/x" {
            assert_eq!(env["HTTP_X_KEYCARD_SUBJECT"], "svc", "{env}");
            assert!(
                env.get("HTTP_X_KEYCARD_SCOPES").is_none_or(|s| s == ""),
                "{env}"
            );
        } else {
            assert!(env.get("HTTP_X_KEYCARD_SUBJECT").is_none(), "{env}");
        }
    }

    // From the trusted proxy (127.0.0.1): its chain, over two lines, is one chain; it is
    // told the client keycard audits; its own forwarding headers pass.
    let head = format!(
        "GET /api/x HTTP/1.1\r\nHost: app.example\r\nX-API-Key: {key}\r\nX-Forwarded-For: garbage, 198.51.100.1\r\nX-Forwarded-For: 203.0.113.5\r\nX-Real-IP: 203.0.113.5\r\nX_Forwarded_For: 6.6.6.6\r\nConnection: close\r\n\r\n"
    );
    let out = raw(addr, head.as_bytes()).await;
    assert_eq!(status(&out), 200, "{out}");
    let env = wsgi.seen().pop().unwrap();
    assert_eq!(
        env["HTTP_X_FORWARDED_FOR"], "203.0.113.5, 127.0.0.1",
        "{env}"
    );
    assert_eq!(env["HTTP_X_REAL_IP"], "203.0.113.5", "{env}");
    let head = format!(
        "GET /api/x HTTP/1.1\r\nHost: app.example\r\nX-API-Key: {key}\r\nX-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let out = raw(addr, head.as_bytes()).await;
    assert_eq!(status(&out), 200, "{out}");
    let env = wsgi.seen().pop().unwrap();
    assert_eq!(
        env["HTTP_X_FORWARDED_FOR"], "198.51.100.1, 127.0.0.1, 127.0.0.1",
        "{env}"
    );

    // HTTP/2: cookie crumbs are one Cookie line for the HTTP/1.1 application.
    let r = Http::http2()
        .get(
            &kc.url("/public/c"),
            &[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["HTTP_COOKIE"], "a=1; b=2; c=3");

    kc.stop();
    let audit = std::fs::read_to_string(kc.path("data/audit.jsonl")).unwrap();
    assert!(audit.contains(r#""ip":"198.51.100.1""#), "{audit}");
    assert!(audit.contains(r#""ip":"203.0.113.5""#), "{audit}");

    // `server.allow_underscore_headers = true` keeps the operator's own such headers (never
    // keycard's reserved names).
    let cfg = std::fs::read_to_string(&kc.config).unwrap().replacen(
        "[server]\n",
        "[server]\nallow_underscore_headers = true\n",
        1,
    );
    std::fs::write(&kc.config, cfg).unwrap();
    let addr = kc.start();
    let head = format!(
        "GET /api/x HTTP/1.1\r\nHost: app.example\r\nX-API-Key: {key}\r\nX-Custom_Thing: 1\r\nX_Keycard_Subject: root\r\nConnection: close\r\n\r\n"
    );
    let out = raw(addr, head.as_bytes()).await;
    assert_eq!(status(&out), 200, "{out}");
    let env = wsgi.seen().pop().unwrap();
    assert_eq!(env["HTTP_X_CUSTOM_THING"], "1", "{env}");
    assert_eq!(env["HTTP_X_KEYCARD_SUBJECT"], "svc", "{env}");
}

/// A public route's rate limit counts the clients behind a trusted proxy, one by one.
#[tokio::test(flavor = "multi_thread")]
async fn public_routes_count_clients_not_proxies() {
    let (app, hits) = upstream::start_counting().await;
    let mut kc = Keycard::new(
        None,
        &route("/public/", &app, "public = true\nrate_limit = \"2/min\""),
    );
    kc.trust_proxies("127.0.0.1/32");
    kc.start();
    let http = Http::new();
    let url = kc.url("/public/x");
    for _ in 0..2 {
        let r = http.get(&url, &[("x-forwarded-for", "203.0.113.1")]).await;
        assert_eq!(r.status, 200);
    }
    let r = http.get(&url, &[("x-forwarded-for", "203.0.113.1")]).await;
    assert_eq!(r.status, 429);
    // Another client behind the same proxy has its own allowance.
    let r = http.get(&url, &[("x-forwarded-for", "203.0.113.2")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// HTTP that RFC 9112 forbids is refused before anything else; the absolute-form's
/// authority wins over `Host`; an upstream's `Content-Length` list reaches the client as
/// one value.
#[tokio::test(flavor = "multi_thread")]
async fn only_well_formed_http_is_served() {
    let (app, hits) = upstream::start_counting().await;
    // An upstream answering with a list of equal lengths.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listed = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    let mut kc = Keycard::new(
        None,
        &[
            route("/public/", &app, "public = true"),
            route("/listed/", &format!("http://{listed}"), "public = true"),
        ]
        .concat(),
    );
    let addr = kc.start();
    let malformed = [
        "GET /public/x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /public/x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        "GET /public/x HTTP/1.1\r\nHost: user@a.example\r\nConnection: close\r\n\r\n",
        "GET /public/x HTTP/1.1\r\nHost: a example\r\nConnection: close\r\n\r\n",
        "GET /public/x HTTP/1.1\r\nHost: a.example:80x\r\nConnection: close\r\n\r\n",
        "GET /public/x HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n",
        "GET /public/x HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
        "GET /public/x HTTP/1.0\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
        // The absolute form's authority is held to the same grammar: no user info.
        "GET http://user:pw@evil.example/public/x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        "GET http://a.example:99999/public/x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    ];
    for m in malformed {
        let a = raw(addr, m.as_bytes()).await;
        assert_eq!(status(&a), 400, "{m:?}: {a}");
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    await_audited(&kc, "malformed_request", malformed.len()).await;

    // HTTP/1.0 needs no Host; an IP literal is a host.
    for ok in [
        "GET /public/x HTTP/1.0\r\n\r\n",
        "GET /public/x HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
    ] {
        let a = raw(addr, ok.as_bytes()).await;
        assert_eq!(status(&a), 200, "{ok:?}: {a}");
    }
    // The absolute-form's authority is the one the upstream is told.
    let a = raw(
        addr,
        b"GET http://good.example/public/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&a), 200, "{a}");
    assert!(
        a.contains("good.example") && !a.contains("evil.example"),
        "{a}"
    );

    // One Content-Length, whatever list the upstream sent.
    let a = raw(
        addr,
        b"GET /listed/x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&a), 200, "{a}");
    let lengths: Vec<&str> = a
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("content-length"))
        .collect();
    assert_eq!(lengths, ["content-length: 2"], "{a}");
}

/// Reads until the peer closes; how long that took (`None`: still open after `within`).
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let began = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((began + within).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(began.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads HTTP/2 frames until the peer closes, acknowledging its PINGs as every client
/// does (a graceful shutdown waits for one); how long that took.
async fn h2_closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let began = Instant::now();
    let deadline = tokio::time::Instant::from(began + within);
    let mut head = [0u8; 9];
    loop {
        match tokio::time::timeout_at(deadline, s.read_exact(&mut head)).await {
            Err(_) => return None,
            Ok(Err(_)) => return Some(began.elapsed()),
            Ok(Ok(_)) => {}
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        match tokio::time::timeout_at(deadline, s.read_exact(&mut payload)).await {
            Err(_) => return None,
            Ok(Err(_)) => return Some(began.elapsed()),
            Ok(Ok(_)) => {}
        }
        // PING without ACK: answer it.
        if head[3] == 6 && head[4] & 1 == 0 {
            let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
            ack.extend_from_slice(&payload);
            let _ = s.write_all(&ack).await;
        }
    }
}

/// Connections that bring no request, or hold one open, are closed on their deadlines;
/// one client address cannot take every connection.
#[tokio::test(flavor = "multi_thread")]
async fn silent_and_idle_connections_are_closed() {
    let app = upstream::start().await;
    let mut kc = Keycard::new(None, &route("/public/", &app, "public = true"));
    let cfg = std::fs::read_to_string(&kc.config).unwrap().replacen(
        "[server]\n",
        "[server]\nfirst_request_timeout = \"1s\"\nidle_timeout = \"2s\"\nmax_connections_per_client = 4\n",
        1,
    );
    std::fs::write(&kc.config, cfg).unwrap();
    let addr = kc.start();

    // Silent; half an HTTP/2 preface; a whole preface, then HEADERS without END_HEADERS.
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    h2.extend_from_slice(&[0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82]); // HEADERS, stream 1, no flags
    let openings: [&[u8]; 4] = [
        b"",
        b"PRI * HTTP/2.0\r\n",
        &h2,
        b"GET /public/x HTTP/1.1\r\nHost: a",
    ];
    let mut conns = Vec::new();
    for o in openings {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(o).await.unwrap();
        conns.push(s);
    }
    for (i, s) in conns.iter_mut().enumerate() {
        let took = closed_within(s, Duration::from_secs(5)).await;
        assert!(took.is_some(), "opening {i} is still open");
    }

    // After a request, an idle HTTP/1.1 connection and an idle HTTP/2 one are closed.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /public/x HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let took = closed_within(&mut s, Duration::from_secs(6)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(1500)),
        "{took:?}"
    );
    // HTTP/2: preface, SETTINGS, then HEADERS for `GET /public/x` (HPACK: :method GET,
    // :scheme http, :path and :authority as literals), END_STREAM | END_HEADERS.
    let mut block = vec![0x82, 0x86, 0x04, 9];
    block.extend_from_slice(b"/public/x");
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"a.example");
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    h2.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x5, 0, 0, 0, 1]);
    h2.extend_from_slice(&block);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&h2).await.unwrap();
    let took = h2_closed_within(&mut s, Duration::from_secs(6)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(1500)),
        "{took:?}"
    );

    // Four connections from one address are its share: the fifth is closed unanswered.
    let from = |ip: &str| {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        s.connect(addr)
    };
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = from("127.0.0.4").await.unwrap();
        s.write_all(b"GET /public/x HTTP/1.1\r\nHost: a.example\r\n\r\n")
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let mut fifth = from("127.0.0.4").await.unwrap();
    let _ = fifth
        .write_all(b"GET /public/x HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), fifth.read_to_end(&mut out)).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    // Another address is not affected.
    let other = Http::bound("127.0.0.3".parse().unwrap());
    let r = other.get(&kc.url("/public/x"), &[]).await;
    assert_eq!(r.status, 200);
    // Once they close, the address has its share back.
    drop(held);
    let back = crate::common::eventually(Duration::from_secs(5), || async {
        Http::bound("127.0.0.4".parse().unwrap())
            .try_get(&kc.url("/public/x"))
            .await
            .is_some_and(|r| r.status == 200)
    })
    .await;
    assert!(back.is_some());
}

/// Uploads a credential signs are read only for a credential that could verify, at a
/// minimum rate: stalled uploads without a live key hold nothing, and one with a key is
/// cut off; signed requests keep being served.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_signed_uploads_cannot_starve_signed_requests() {
    let (app, hits) = upstream::start_counting().await;
    let mut kc = Keycard::new(None, &route("/api/", &app, "methods = [\"hmac\"]"));
    let addr = kc.start();
    let created: serde_json::Value =
        serde_json::from_str(&kc.cli_ok(&["hmac", "create", "--subject", "signer", "--json"]))
            .unwrap();
    let key_file = kc.path("key.b64");
    std::fs::write(&key_file, created["secret"].as_str().unwrap()).unwrap();
    let body_file = kc.path("body.txt");
    let body = "x".repeat(100_000);
    std::fs::write(&body_file, &body).unwrap();
    let url = format!("http://{addr}/api/upload");
    let sign = |key_id: &str| -> Vec<(String, String)> {
        let out = Command::new(crate::common::bin())
            .args(["sign", "--json", "--key-id", key_id, "--secret-file"])
            .arg(&key_file)
            .args(["--method", "POST", "--body-file"])
            .arg(&body_file)
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    };
    let head = |headers: &[(String, String)]| {
        let mut h = format!(
            "POST /api/upload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        h
    };
    // More stalled uploads than there are permits, under a key id keycard does not know:
    // each is refused at once, its body never read.
    let unknown = sign("hk_nosuchkey");
    let mut stalled = Vec::new();
    for _ in 0..24 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(head(&unknown).as_bytes()).await.unwrap();
        s.write_all(&body.as_bytes()[..100]).await.unwrap();
        stalled.push(s);
    }
    for s in &mut stalled {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a stalled upload without a key is still waiting")
            .unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 401"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    // With the real key, stalled: cut off (408) once below the minimum rate.
    let key_id = created["key_id"].as_str().unwrap();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(head(&sign(key_id)).as_bytes())
        .await
        .unwrap();
    slow.write_all(&body.as_bytes()[..100]).await.unwrap();
    // Meanwhile, a signed request is served.
    let signed = sign(key_id);
    let h: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = Http::new()
        .send(http::Method::POST, &url, &h, body.clone().into_bytes())
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut buf = [0u8; 256];
    let began = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(15), slow.read(&mut buf))
        .await
        .expect("a stalled upload was never cut off")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(began.elapsed() < Duration::from_secs(10));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A user name longer than any user can have is refused as unknown, before any lookup.
#[tokio::test(flavor = "multi_thread")]
async fn overlong_user_names_are_refused() {
    let app = upstream::start().await;
    let mut kc = Keycard::new(None, &route("/api/", &app, "methods = [\"basic\"]"));
    kc.start();
    kc.add_user("alice", "correct horse battery", &[]);
    // 150 characters (within the 200 a name may have), 300 bytes.
    let long = "é".repeat(150);
    let out = kc.cli_stdin(
        &["user", "add", &long, "--password-stdin"],
        "pw-long-name\n",
    );
    assert!(!out.status.success(), "a 300-byte user name was accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("256 bytes"));
    use base64::Engine;
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let http = Http::new();
    let r = http
        .get(&kc.url("/api/x"), &[("authorization", &basic(&long, "pw"))])
        .await;
    assert_eq!(r.status, 401);
    let r = http
        .get(
            &kc.url("/api/x"),
            &[("authorization", &basic("alice", "correct horse battery"))],
        )
        .await;
    assert_eq!(r.status, 200);
    let unknown = await_audited(&kc, "unknown_credential", 1).await;
    assert!(
        unknown
            .iter()
            .all(|e| e["subject"].as_str().is_none_or(|s| s.len() <= 256))
    );
}

/// An answer that streams for longer than the idle timeout is not idle: it arrives whole,
/// over HTTP/1.1 and HTTP/2. A trusted proxy's connections count against no cap.
#[tokio::test(flavor = "multi_thread")]
async fn streams_outlast_the_idle_timeout_and_proxies_are_not_capped() {
    // An upstream sending a chunk every 400 ms for 3.2 s.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                for i in 0..8 {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    let _ = s.write_all(format!("1\r\n{i}\r\n").as_bytes()).await;
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    let mut kc = Keycard::new(
        None,
        &route("/s/", &format!("http://{up}"), "public = true"),
    );
    kc.trust_proxies("127.0.0.1/32");
    let cfg = std::fs::read_to_string(&kc.config).unwrap().replacen(
        "[server]\n",
        "[server]\nidle_timeout = \"1s\"\nmax_connections = 3\nmax_connections_per_client = 2\n",
        1,
    );
    std::fs::write(&kc.config, cfg).unwrap();
    kc.start();
    for http in [Http::new(), Http::http2()] {
        let r = http.get(&kc.url("/s/events"), &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"01234567");
    }
    // The trusted proxy (127.0.0.1) holds more connections than either cap allows.
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(kc.addr(0)).await.unwrap();
        s.write_all(b"GET /s/x HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        held.push(s);
    }
}

/// keycard's login cookies are its own: no application behind it receives them (HTTP/1.1
/// or HTTP/2), and none can set them (a session swap).
#[tokio::test(flavor = "multi_thread")]
async fn keycards_cookies_never_reach_or_come_from_applications() {
    // An upstream that sets keycard's session cookie beside its own, and says in its body
    // which cookies it was sent.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                let cookies: Vec<&str> = head
                    .lines()
                    .filter_map(|l| l.strip_prefix("cookie: "))
                    .collect();
                let body = cookies.join("|");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nset-cookie: kc_session=attacker; Path=/\r\nset-cookie: __Host-kc_session=attacker; Path=/; Secure\r\nset-cookie: =kc_session=attacker; Path=/\r\nset-cookie: app=1; Path=/\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    let mut kc = Keycard::new(
        None,
        &route("/app/", &format!("http://{up}"), "public = true"),
    );
    kc.start();
    for http in [Http::new(), Http::http2()] {
        let r = http
            .get(
                &kc.url("/app/x"),
                &[
                    ("cookie", "kc_session=victim.tag; theme=dark"),
                    ("cookie", "kc_csrf=t; __Host-kc_session=victim"),
                    ("cookie", "__Host-kc_csrf=t"),
                ],
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"theme=dark");
        let set: Vec<String> = r.header_all("set-cookie");
        assert_eq!(set, ["app=1; Path=/"]);
    }
}
