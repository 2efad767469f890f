//! What the keycard layer adds to a trivial axum handler: the same request through the same
//! router with and without the layer, an API key in `X-API-Key` (cached after the first
//! request, as in steady state). Target: under 5 µs added per request.
//!
//! `cargo bench -p keycard-embedded-example --bench layer`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use keycard_server::manage::{Manager, NewKeyRequest};
use tower_service::Service;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keycard.toml");
    std::fs::write(
        &config,
        "[store]\nurl = \"sqlite://data/k.db\"\n[secrets]\nmaster_key_file = \"data/master.key\"\n[audit]\nfile = \"data/audit.jsonl\"\n",
    )
    .unwrap();
    let settings = keycard_server::Settings::load(&config).unwrap();
    let (keycard, key) = rt.block_on(async {
        let keycard = keycard_server::layer::Embedded::start(&settings)
            .await
            .unwrap();
        let master = keycard_server::master_key::load_or_create(&settings.master_key_file).unwrap();
        let store = keycard_store::Store::open(settings.store_url.as_str())
            .await
            .unwrap();
        let key = Manager::new(store, &master, &settings)
            .create_api_key(NewKeyRequest {
                subject: "bench".into(),
                scopes: vec!["orders:read".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .key;
        (keycard, key)
    });
    let plain: Router = Router::new().route("/orders", get(|| async { "ok" }));
    let layered: Router = Router::new().route(
        "/orders",
        get(|| async { "ok" }).layer(
            keycard
                .layer("/orders")
                .methods([keycard_core::Method::ApiKey])
                .scopes(["orders:read"])
                .unwrap(),
        ),
    );
    let request = |key: &str| {
        Request::builder()
            .uri("/orders")
            .header("x-api-key", key)
            .body(Body::empty())
            .unwrap()
    };
    // Warm the cache, and check both answer 200.
    rt.block_on(async {
        for r in [&plain, &layered] {
            let resp = r.clone().call(request(&key)).await.unwrap();
            assert_eq!(resp.status(), 200);
        }
    });
    let mut g = c.benchmark_group("axum handler");
    g.bench_function("without keycard", |b| {
        b.iter(|| rt.block_on(plain.clone().call(request(&key))).unwrap())
    });
    g.bench_function("with keycard layer, API key", |b| {
        b.iter(|| rt.block_on(layered.clone().call(request(&key))).unwrap())
    });
    g.finish();
    rt.block_on(keycard.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
