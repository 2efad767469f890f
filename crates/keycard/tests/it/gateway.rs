//! The gateway's proxying: paths, headers, bodies, errors, HTTP/2.

use http::Method;

use crate::common::{Keycard, http::Http, route, upstream};

async fn setup(extra: &str) -> (Keycard, Http, String) {
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &format!(
            "{}{}{}{}{}",
            route("/api/", &up, ""),
            route("/public/", &up, "public = true"),
            route("/v1/", &format!("{up}/inner/"), ""),
            route("/slow/", &up, "upstream_timeout = \"500ms\""),
            extra
        ),
    );
    kc.start();
    let (_, key) = kc.create_key("svc", &[], &[]);
    (kc, Http::new(), key)
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_longest_prefix_unknown_and_unsafe_paths() {
    let (kc, http, key) = setup("[[routes]]\nprefix = \"/auth-only/\"\n").await;
    let k = [("x-api-key", key.as_str())];
    assert_eq!(http.get(&kc.url("/nowhere"), &k).await.status, 404);
    assert_eq!(http.get(&kc.url("/_keycard/nothing"), &k).await.status, 404);
    // A forward-auth-only route (no upstream) is not served by the gateway.
    assert_eq!(http.get(&kc.url("/auth-only/x"), &k).await.status, 404);
    // Dot segments could make an upstream serve a route keycard never checked.
    for p in [
        "/public/../api/x",
        "/public/%2e%2e/api/x",
        "/public/..%2fapi/x",
        "/public/.%2E/api",
    ] {
        assert_eq!(http.get(&kc.url(p), &[]).await.status, 400, "{p}");
    }
    // Encoded unreserved characters and empty segments would let an upstream that decodes or
    // merges them serve /api/ through another route: refused.
    for p in ["/%61pi/x", "//api/x", "/public//api/x", "/public/%2Fapi/x"] {
        assert_eq!(http.get(&kc.url(p), &[]).await.status, 400, "{p}");
    }
    // nginx-style prefix replacement when the upstream has a path.
    let r = http.get(&kc.url("/v1/things?a=b"), &k).await;
    assert_eq!(r.json()["path"], "/inner/things");
    assert_eq!(r.json()["query"], "a=b");
}

#[tokio::test(flavor = "multi_thread")]
async fn public_routes_need_no_credential_but_still_strip_identity_headers() {
    let (kc, http, _) = setup("").await;
    let r = http
        .get(
            &kc.url("/public/x"),
            &[
                ("x-keycard-subject", "root"),
                ("authorization", "Bearer upstream-own"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-keycard-subject"), None);
    // On a public route the upstream may do its own authentication.
    assert_eq!(
        r.upstream_header("authorization").as_deref(),
        Some("Bearer upstream-own")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_and_hop_by_hop_headers() {
    let (kc, http, key) = setup("").await;
    let r = http
        .get(
            &kc.url("/api/x"),
            &[
                ("x-api-key", &key),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-proto", "https"),
                ("connection", "x-hop"),
                ("x-hop", "1"),
                ("host", "api.example.com"),
                // Underscore spellings a CGI-style upstream reads as the dashed names.
                ("x_forwarded_for", "6.6.6.6"),
                ("x_real_ip", "6.6.6.6"),
                ("x_request_id", "forged"),
                ("x_keycard_subject", "root"),
                ("x_ssl_client_cert", "forged"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    for spelled in [
        "x_forwarded_for",
        "x_real_ip",
        "x_request_id",
        "x_keycard_subject",
        "x_ssl_client_cert",
    ] {
        assert_eq!(
            r.upstream_header(spelled),
            None,
            "{spelled} reached the upstream"
        );
    }
    // The client is not a trusted proxy: its X-Forwarded-* are replaced.
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-host").as_deref(),
        Some("api.example.com")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(r.upstream_header("x-hop"), None);
    // The upstream's own hop-by-hop header does not come back.
    assert_eq!(r.header("x-upstream-hop"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_proxies_may_set_forwarded_headers() {
    let up = upstream::start().await;
    let mut kc = Keycard::new(None, &format!("{}\n{}", "", route("/api/", &up, "")));
    // Prepend the server section: the test client (127.0.0.1) is a trusted proxy here.
    kc.trust_proxies("127.0.0.0/8");
    kc.start();
    let (_, key) = kc.create_key("svc", &[], &[]);
    let r = Http::new()
        .get(
            &kc.url("/api/x"),
            &[
                ("x-api-key", &key),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    kc.stop();
    let audit = std::fs::read_to_string(kc.path("data/audit.jsonl")).unwrap();
    assert!(audit.contains(r#""ip":"203.0.113.7""#), "{audit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_stream_both_ways_and_methods_pass() {
    let (kc, http, key) = setup("").await;
    let body: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 251) as u8).collect();
    let expect = format!(
        "{:x}",
        body.iter()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)))
    );
    let r = http
        .send(
            Method::PUT,
            &kc.url("/api/upload"),
            &[("x-api-key", &key)],
            body.clone(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "PUT");
    assert_eq!(r.json()["body_len"], body.len());
    assert_eq!(r.json()["body_sha"], expect);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_502_and_slow_is_504() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (kc, http, key) = setup(&route("/dead/", &format!("http://{dead}"), "")).await;
    let r = http.get(&kc.url("/dead/x"), &[("x-api-key", &key)]).await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (502, &br#"{"error":"bad_gateway"}"#[..])
    );
    let start = std::time::Instant::now();
    let r = http.get(&kc.url("/slow/x"), &[("x-api-key", &key)]).await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (504, &br#"{"error":"gateway_timeout"}"#[..])
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(3));
    // Refused requests never reach an upstream, dead or not.
    assert_eq!(http.get(&kc.url("/dead/x"), &[]).await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_clients_are_served() {
    let (kc, _, key) = setup("").await;
    let r = Http::http2()
        .get(&kc.url("/api/h2"), &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-keycard-subject").as_deref(),
        Some("svc")
    );
    assert_eq!(Http::http2().get(&kc.url("/api/h2"), &[]).await.status, 401);
}

/// `https://` upstreams: the certificate verified against the system roots (here
/// `SSL_CERT_FILE`, which they honour), HTTP/2 when the upstream offers it by ALPN — one
/// connection per worker carrying every request — else HTTP/1.1 with `Host`; an upstream
/// whose certificate no root vouches for is a 502.
#[tokio::test(flavor = "multi_thread")]
async fn https_upstreams_speak_http2_or_http1_as_they_offer() {
    use crate::common::pki::Pki;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "upstream-ca");
    let server = pki.server("upstream");
    let h2 = upstream::start_tls(&server.cert, &server.key, &[b"h2", b"http/1.1"]).await;
    let h1 = upstream::start_tls(&server.cert, &server.key, &[b"http/1.1"]).await;
    let stranger = Pki::new(dir.path(), "stranger-ca").server("stranger");
    let untrusted = upstream::start_tls(&stranger.cert, &stranger.key, &[b"h2"]).await;
    let mut kc = Keycard::new(
        None,
        &format!(
            "{}{}{}",
            route("/h2/", &h2, ""),
            route("/h1/", &h1, ""),
            route("/untrusted/", &untrusted, "public = true"),
        ),
    );
    kc.env("SSL_CERT_FILE", pki.ca.to_str().unwrap());
    kc.env(
        "KEYCARD_LOG",
        "info,keycard::access=info,keycard_server::upstream::pool=debug",
    );
    kc.start();
    let (_, key) = kc.create_key("svc", &[], &[]);
    let http = Http::new();
    let k = [("x-api-key", key.as_str())];
    for i in 0..20 {
        let r = http.get(&kc.url(&format!("/h2/x{i}?q={i}")), &k).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let j = r.json();
        assert_eq!(j["version"], "HTTP/2.0");
        assert_eq!(j["path"], format!("/h2/x{i}"));
        assert_eq!(j["query"], format!("q={i}"));
        assert_eq!(j["headers"]["x-keycard-subject"], "svc");
        assert!(j["headers"].get("x-api-key").is_none());
        let r = http.get(&kc.url(&format!("/h1/y{i}")), &k).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let j = r.json();
        assert_eq!(j["version"], "HTTP/1.1");
        assert_eq!(j["path"], format!("/h1/y{i}"));
        assert_eq!(j["headers"]["host"], h1.trim_start_matches("https://"));
        assert_eq!(j["headers"]["x-keycard-subject"], "svc");
    }
    assert_eq!(http.get(&kc.url("/untrusted/x"), &[]).await.status, 502);
    let opened = |protocol: &str| {
        kc.log(0)
            .iter()
            .filter(|l| l.contains("opened an upstream connection"))
            .filter(|l| l.contains(protocol))
            .count()
    };
    // At most one per worker thread (one per core), however many requests.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert!((1..=workers).contains(&opened("h2")), "{:?}", kc.log(0));
    assert!(
        (1..=workers).contains(&opened("http/1.1")),
        "{:?}",
        kc.log(0)
    );
}
