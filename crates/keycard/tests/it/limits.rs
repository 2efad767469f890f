//! Rate limits: exact bursts and refill in one instance; one shared count across two
//! instances on the same PostgreSQL and Redis; Redis going away and coming back.
//!
//! The Redis tests need `KEYCARD_TEST_REDIS_URL` (`.ci/run` sets it) and fail, not skip,
//! when it is set but Redis does not answer.

use std::time::Duration;

use crate::common::http::Http;
use crate::common::tcp_proxy::TcpProxy;
use crate::common::{Keycard, eventually, route, upstream};
use keycard_store::testing::TempStore;

/// Status and the RateLimit fields of a GET with an API key.
async fn get(
    http: &Http,
    url: &str,
    key: &str,
) -> (u16, Option<String>, Option<String>, Option<String>) {
    let r = http.get(url, &[("x-api-key", key)]).await;
    let h = |n: &str| {
        r.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    (
        r.status,
        h("ratelimit-limit"),
        h("ratelimit-remaining"),
        h("retry-after"),
    )
}

/// The address of the Redis at `url` (for a TCP proxy in front of it).
fn redis_addr(url: &str) -> std::net::SocketAddr {
    let u = url::Url::parse(url).unwrap();
    format!("{}:{}", u.host_str().unwrap(), u.port().unwrap_or(6379))
        .parse()
        .unwrap()
}

/// A `[limits]` section on `redis` with keys of this test run and `test` alone.
fn limits(redis: &str, test: &str) -> String {
    format!(
        "[limits]\nredis_url = \"{redis}\"\nredis_prefix = \"kct-{}-{test}:\"\nfailed_auth = \"3/min\"\n\n",
        std::process::id()
    )
}

/// `KEYCARD_TEST_REDIS_URL`, checked to answer; `None` (with a note) when not set.
async fn redis_url() -> Option<String> {
    let Ok(url) = std::env::var("KEYCARD_TEST_REDIS_URL") else {
        eprintln!("note: KEYCARD_TEST_REDIS_URL is not set; the Redis tests are skipped");
        return None;
    };
    let client = redis::Client::open(url.as_str()).expect("KEYCARD_TEST_REDIS_URL");
    let mut c = tokio::time::timeout(
        Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("Redis is configured but does not answer")
    .expect("Redis is configured but does not answer");
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");
    Some(url)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_gets_exactly_n_then_429_and_the_budget_refills_at_the_rate() {
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &route(
            "/api/",
            &up,
            "methods = [\"api_key\"]\nrate_limit = \"10/s\"",
        ),
    );
    kc.start();
    let (_, key) = kc.create_key("svc", &[], &[]);
    let (_, other) = kc.create_key("other-svc", &[], &[]);
    let http = Http::new();
    let url = kc.url("/api/x");
    let mut ok = 0;
    let mut first = None;
    let mut refused = None;
    for _ in 0..15 {
        let a = get(&http, &url, &key).await;
        match a.0 {
            200 => {
                ok += 1;
                first.get_or_insert(a);
            }
            429 => {
                refused.get_or_insert(a);
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(ok, 10, "a burst of 15 against 10/s");
    let first = first.unwrap();
    assert_eq!(
        (first.1.as_deref(), first.2.as_deref()),
        (Some("10"), Some("9"))
    );
    let refused = refused.unwrap();
    assert_eq!(refused.1.as_deref(), Some("10"));
    assert_eq!(refused.2.as_deref(), Some("0"));
    assert_eq!(refused.3.as_deref(), Some("1"), "Retry-After");
    // Another subject has its own budget.
    assert_eq!(get(&http, &url, &other).await.0, 200);
    // 10/s refills one every 100 ms: after 250 ms two (or three, with the time the
    // requests take) more go through, not ten.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut again = 0;
    for _ in 0..10 {
        if get(&http, &url, &key).await.0 == 200 {
            again += 1;
        }
    }
    assert!((2..=3).contains(&again), "{again} after 250 ms");
    // The refusals are audited as throttled, reason rate_limited.
    let path = kc.path("data/audit.jsonl");
    let seen = eventually(Duration::from_secs(3), || async {
        std::fs::read_to_string(&path).is_ok_and(|a| {
            a.lines()
                .any(|l| l.contains("\"throttled\"") && l.contains("\"rate_limited\""))
        })
    })
    .await;
    assert!(seen.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_rate_limit_stops_start_up() {
    for (extra, key) in [
        ("rate_limit = \"ten/s\"", "routes[0].rate_limit"),
        (
            "rate_limit = \"10/s\"\nrate_limit_burst = 0",
            "routes[0].rate_limit_burst",
        ),
        ("rate_limit_burst = 5", "routes[0].rate_limit_burst"),
    ] {
        let kc = Keycard::new(None, &route("/api/", "http://127.0.0.1:9", extra));
        let out = kc.cli(&["key", "list"]);
        assert_eq!(out.status.code(), Some(2), "{extra}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(key),
            "{extra}"
        );
    }
    let kc = Keycard::new(None, "[limits]\nredis_url = \"http://127.0.0.1:6379\"\n");
    let out = kc.cli(&["key", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.redis_url"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_redis_share_one_count() {
    let Some(redis) = redis_url().await else {
        return;
    };
    let temp = match crate::common::postgres_admin_url() {
        Some(_) => Some(
            TempStore::new("postgres")
                .await
                .expect("PostgreSQL is configured but does not answer"),
        ),
        None => None,
    };
    let up = upstream::start().await;
    // 20 a minute: refill (one per 3 s) is negligible during the test, so two instances
    // counting apart would let 40 through.
    let mut kc = Keycard::new(
        temp.as_ref().map(|t| t.url.as_str()),
        &format!(
            "{}{}",
            limits(&redis, "count"),
            route("/api/", &up, "rate_limit = \"20/min\"")
        ),
    );
    let a = kc.start();
    let b = kc.start();
    // A subject name of its own: the count in Redis is this test's.
    let subject = format!("svc-{}", std::process::id());
    let (_, key) = kc.create_key(&subject, &[], &[]);
    let http = Http::new();
    let urls = [format!("http://{a}/api/x"), format!("http://{b}/api/x")];
    let mut ok = 0;
    for i in 0..60 {
        let (s, ..) = get(&http, &urls[i % 2], &key).await;
        assert!(s == 200 || s == 429, "{s}");
        if s == 200 {
            ok += 1;
        }
    }
    assert!(
        (19..=21).contains(&ok),
        "{ok} successes for a limit of 20 across two instances"
    );
    for u in &urls {
        let r = http.get(&u.replace("/api/x", "/_keycard/ready"), &[]).await;
        assert_eq!(r.status, 200);
    }
    kc.stop();
    if let Some(t) = temp {
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_away_fails_closed_and_service_resumes_when_it_returns() {
    let Some(redis) = redis_url().await else {
        return;
    };
    let target = redis_addr(&redis);
    let db = url::Url::parse(&redis).unwrap().path().to_owned();
    let proxy = TcpProxy::start(target).await;
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &format!(
            "[limits]\nredis_url = \"redis://{}{db}\"\nredis_prefix = \"kct-{}-away:\"\n\n{}{}",
            proxy.addr,
            std::process::id(),
            route("/api/", &up, "rate_limit = \"1000/s\""),
            route("/free/", &up, "")
        ),
    );
    kc.start();
    let subject = format!("svc-{}", std::process::id());
    let (_, key) = kc.create_key(&subject, &[], &[]);
    let http = Http::new();
    assert_eq!(get(&http, &kc.url("/api/x"), &key).await.0, 200);
    proxy.cut();
    // Rate-limited route: 503 (fail closed); ready: 503; a route without a limit still
    // works (it needs no Redis).
    assert_eq!(get(&http, &kc.url("/api/x"), &key).await.0, 503);
    assert_eq!(http.get(&kc.url("/_keycard/ready"), &[]).await.status, 503);
    assert_eq!(get(&http, &kc.url("/free/x"), &key).await.0, 200);
    // Replay-protected methods refuse rather than accept what might be a replay: a Digest
    // nonce count and a signature cannot be checked without Redis.
    let hk: serde_json::Value =
        serde_json::from_str(&kc.cli_ok(&["hmac", "create", "--subject", &subject, "--json"]))
            .unwrap();
    let secret = kc.path("hk.b64");
    std::fs::write(&secret, hk["secret"].as_str().unwrap()).unwrap();
    let url = kc.url("/free/x");
    let signed = kc.cli_ok(&[
        "sign",
        "--key-id",
        hk["key_id"].as_str().unwrap(),
        "--secret-file",
        secret.to_str().unwrap(),
        &url,
    ]);
    let headers: Vec<(String, String)> = signed
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    let hs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        http.get(&url, &hs).await.status,
        503,
        "a signature accepted without its replay check"
    );
    proxy.restore().await;
    let back = eventually(Duration::from_secs(5), || async {
        get(&http, &kc.url("/api/x"), &key).await.0 == 200
    })
    .await;
    assert!(back.is_some(), "service did not resume when Redis returned");
    assert_eq!(http.get(&kc.url("/_keycard/ready"), &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_are_refused_across_instances_on_redis() {
    use crate::passwords::{DigestReq, param};
    let Some(redis) = redis_url().await else {
        return;
    };
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &format!("{}{}", limits(&redis, "replay"), route("/api/", &up, "")),
    );
    kc.trust_proxies("127.0.0.1/32");
    let a = kc.start();
    let b = kc.start();
    let user = format!("u{}", std::process::id());
    kc.add_user(&user, "plum-orbit-kettle", &["--digest"]);
    let http = Http::new();
    let (url_a, url_b) = (format!("http://{a}/api/x"), format!("http://{b}/api/x"));

    // Digest: a header accepted by A is a replay at B (the nonce count lives in Redis).
    let challenge = http.get(&url_a, &[]).await;
    let digest = challenge
        .header_all("www-authenticate")
        .into_iter()
        .find(|c| c.starts_with("Digest "))
        .unwrap();
    let (nonce, opaque) = (
        param(&digest, "nonce").unwrap(),
        param(&digest, "opaque").unwrap(),
    );
    let req = DigestReq {
        user: &user,
        pw: "plum-orbit-kettle",
        method: "GET",
        uri: "/api/x",
        nonce: &nonce,
        opaque: &opaque,
        nc: 1,
        cnonce: "c1",
        qop: "auth",
        body: b"",
        alg: keycard_core::digest::HashAlg::Sha256,
        userhash: false,
    };
    let h = req.header();
    assert_eq!(http.get(&url_a, &[("authorization", &h)]).await.status, 200);
    assert_eq!(http.get(&url_b, &[("authorization", &h)]).await.status, 401);
    // The next count is accepted at B.
    let next = DigestReq { nc: 2, ..req }.header();
    assert_eq!(
        http.get(&url_b, &[("authorization", &next)]).await.status,
        200
    );

    // HMAC: a signed request accepted by A is a replay at B. Both are reached as
    // api.example (X-Forwarded-Host from a trusted proxy), the authority it is signed for.
    let hk: serde_json::Value =
        serde_json::from_str(&kc.cli_ok(&["hmac", "create", "--subject", &user, "--json"]))
            .unwrap();
    let secret = kc.path("hk.b64");
    std::fs::write(&secret, hk["secret"].as_str().unwrap()).unwrap();
    let signed = kc.cli_ok(&[
        "sign",
        "--key-id",
        hk["key_id"].as_str().unwrap(),
        "--secret-file",
        secret.to_str().unwrap(),
        "http://api.example/api/x",
    ]);
    let mut headers: Vec<(String, String)> = signed
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    headers.push(("x-forwarded-host".into(), "api.example".into()));
    let hs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(http.get(&url_a, &hs).await.status, 200);
    assert_eq!(http.get(&url_b, &hs).await.status, 401);
    assert_eq!(http.get(&url_a, &hs).await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_failed_attempt_throttle_counts_attempts_on_both_instances() {
    let Some(redis) = redis_url().await else {
        return;
    };
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &format!("{}{}", limits(&redis, "throttle"), route("/api/", &up, "")),
    );
    let a = kc.start();
    let b = kc.start();
    kc.add_user("carol", "right-password-1", &[]);
    let http = Http::new();
    let basic = |pw: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("carol:{pw}"))
        )
    };
    let (url_a, url_b) = (format!("http://{a}/api/x"), format!("http://{b}/api/x"));
    let wrong = basic("wrong");
    // Two failures at A and one at B: three in all, the limit of 3/min.
    for url in [&url_a, &url_a, &url_b] {
        assert_eq!(
            http.get(url, &[("authorization", &wrong)]).await.status,
            401
        );
    }
    // Both instances now refuse even the right password.
    let right = basic("right-password-1");
    for url in [&url_a, &url_b] {
        let took = eventually(Duration::from_secs(1), || async {
            http.get(url, &[("authorization", &right)]).await.status == 429
        })
        .await;
        assert!(
            took.is_some(),
            "{url} did not throttle after 3 failures across instances"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_may_fail_open_when_configured() {
    let Some(redis) = redis_url().await else {
        return;
    };
    let target = redis_addr(&redis);
    let proxy = TcpProxy::start(target).await;
    let up = upstream::start().await;
    let mut kc = Keycard::new(
        None,
        &format!(
            "[limits]\nredis_url = \"redis://{}\"\nredis_prefix = \"kct-{}-open:\"\nrate_limit_fail_open = true\n\n{}",
            proxy.addr,
            std::process::id(),
            route("/api/", &up, "rate_limit = \"1000/s\"")
        ),
    );
    kc.start();
    let (_, key) = kc.create_key("svc", &[], &[]);
    let http = Http::new();
    assert_eq!(get(&http, &kc.url("/api/x"), &key).await.0, 200);
    proxy.cut();
    // Let through, and logged; ready still says Redis is away.
    assert_eq!(get(&http, &kc.url("/api/x"), &key).await.0, 200);
    assert_eq!(http.get(&kc.url("/_keycard/ready"), &[]).await.status, 503);
    assert!(kc.log(0).iter().any(|l| l.contains("rate_limit_fail_open")));
}

/// `examples/cluster/run.sh --check`: two instances behind nginx on one PostgreSQL and one
/// Redis behave as one (a shared rate limit, a revocation seen by both).
#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_example_runs_and_acts_as_one() {
    let Some(redis) = redis_url().await else {
        return;
    };
    let Some(pg) = crate::common::postgres_admin_url() else {
        eprintln!("note: KEYCARD_TEST_POSTGRES_URL is not set; the cluster example is not run");
        return;
    };
    if !std::path::Path::new("/usr/sbin/nginx").exists() || !crate::common::tools::curl() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx and curl are installed by .ci/run"
        );
        eprintln!("note: nginx is not installed; the cluster example is not run");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/cluster/run.sh");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(script)
            .arg("--check")
            .env("KEYCARD_BIN", crate::common::bin())
            .env("KEYCARD_CLUSTER_PG", pg)
            .env("KEYCARD_CLUSTER_REDIS", redis)
            .env("KEYCARD_CLUSTER_PORT", port.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("cluster OK"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
