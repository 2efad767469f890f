//! The store goes away: keycard answers 503, never 200, and recovers by itself.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{
    Keycard, TempStore, eventually, http::Http, postgres_admin_url, route, tcp_proxy::TcpProxy,
    upstream,
};

#[tokio::test(flavor = "multi_thread")]
async fn postgres_unreachable_means_503_and_service_resumes_when_it_returns() {
    let Some((temp, proxy, mut kc)) = behind_a_proxy().await else {
        return;
    };
    let http = Http::new();
    let (_, cached) = kc.create_key("svc", &[], &[]);
    let (_, uncached) = kc.create_key("svc", &[], &[]);
    assert_eq!(
        http.get(&kc.url("/api/x"), &[("x-api-key", &cached)])
            .await
            .status,
        200
    );
    assert_eq!(http.get(&kc.url("/_keycard/ready"), &[]).await.status, 200);

    proxy.cut();
    // Within a second, every verification fails closed, cached or not.
    let closed = eventually(Duration::from_secs(3), || {
        let (http, url, k) = (http.clone(), kc.url("/api/x"), cached.clone());
        async move { http.get(&url, &[("x-api-key", &k)]).await.status == 503 }
    })
    .await;
    assert!(
        closed.is_some(),
        "a cached key was still served with the store gone"
    );
    for _ in 0..5 {
        for k in [&cached, &uncached] {
            let r = http.get(&kc.url("/api/x"), &[("x-api-key", k)]).await;
            assert_eq!(r.status, 503);
            assert_eq!(r.body.as_ref(), br#"{"error":"unavailable"}"#);
        }
    }
    assert_eq!(http.get(&kc.url("/_keycard/ready"), &[]).await.status, 503);
    assert_eq!(http.get(&kc.url("/_keycard/health"), &[]).await.status, 200);
    // A mistyped key (the cached one, one character changed: its checksum fails) is
    // refused for what it is, 401, with the store away: it never needed the store.
    let mut typo = cached.clone().into_bytes();
    typo[10] = if typo[10] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).unwrap();
    let r = http.get(&kc.url("/api/x"), &[("x-api-key", &typo)]).await;
    assert_eq!(r.status, 401);

    proxy.restore().await;
    let back = eventually(Duration::from_secs(15), || {
        let (http, url, k) = (http.clone(), kc.url("/api/x"), uncached.clone());
        async move { http.get(&url, &[("x-api-key", &k)]).await.status == 200 }
    })
    .await;
    assert!(
        back.is_some(),
        "keycard did not recover when the store returned"
    );
    assert_eq!(
        http.get(&kc.url("/api/x"), &[("x-api-key", &cached)])
            .await
            .status,
        200
    );
    assert_eq!(http.get(&kc.url("/_keycard/ready"), &[]).await.status, 200);
    kc.stop();
    // Events refused by the store during the outage were retried, not lost.
    let events = kc.cli_ok(&["audit", "--json", "--limit", "1000"]);
    let events: Vec<serde_json::Value> = serde_json::from_str(&events).unwrap();
    let unavailable = events
        .iter()
        .filter(|e| e["reason"] == "store_unavailable")
        .count();
    assert!(
        unavailable >= 10,
        "only {unavailable} outage events reached the store"
    );
    temp.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_store_port_is_never_a_200() {
    // The proxy is cut before keycard's first store read of this key.
    let Some((temp, proxy, mut kc)) = behind_a_proxy().await else {
        return;
    };
    let (_, key) = kc.create_key("svc", &[], &[]);
    proxy.cut();
    let http = Http::new();
    for _ in 0..20 {
        let s = http
            .get(&kc.url("/api/x"), &[("x-api-key", &key)])
            .await
            .status;
        assert_eq!(s, 503);
    }
    kc.stop();
    temp.cleanup().await;
}

/// A keycard on a fresh PostgreSQL database reached through a proxy the test can cut,
/// with an `/api/` route. `None` (and a note) when PostgreSQL is not configured.
async fn behind_a_proxy() -> Option<(TempStore, TcpProxy, Keycard)> {
    let Some(admin) = postgres_admin_url() else {
        eprintln!("note: KEYCARD_TEST_POSTGRES_URL is not set; the store outage tests are skipped");
        return None;
    };
    let temp = TempStore::new("postgres")
        .await
        .expect("PostgreSQL is configured but does not answer");
    let pg_addr: SocketAddr = host_port(&admin).parse().unwrap();
    let proxy = TcpProxy::start(pg_addr).await;
    let url = temp
        .url
        .replacen(&host_port(&admin), &proxy.addr.to_string(), 1);
    let up = upstream::start().await;
    let mut kc = Keycard::new(Some(&url), &route("/api/", &up, ""));
    kc.start();
    Some((temp, proxy, kc))
}

/// `host:port` of a postgres URL, as an IP address for the proxy.
fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap();
    let rest = rest.rsplit('@').next().unwrap();
    let hp = rest.split('/').next().unwrap();
    let hp = if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:5432")
    };
    hp.replace("localhost", "127.0.0.1")
}
