//! The keyed hash an API key is looked up by (HMAC-SHA256 under a key derived from the
//! master key), once per authenticated request: keycard's [`KeyedHasher`] beside
//! aws-lc-rs's own HMAC with a prepared key, over a real key's length.
//!
//! `cargo bench -p keycard-core --bench keyed_hash`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use aws_lc_rs::hmac;
use criterion::{Criterion, criterion_group, criterion_main};
use keycard_core::{HashDomain, MasterKey};

fn keyed_hash(c: &mut Criterion) {
    let master = MasterKey::generate().unwrap();
    let hasher = master.keyed_hasher();
    let key = keycard_core::api_key::generate().unwrap();
    let key = key.expose_secret().as_bytes().to_vec();
    let aws = hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]);
    let mut g = c.benchmark_group("api_key_handle");
    g.bench_function("keycard KeyedHasher", |b| {
        b.iter(|| hasher.hash(HashDomain::ApiKey, black_box(&key)))
    });
    g.bench_function("aws-lc-rs hmac::sign", |b| {
        b.iter(|| {
            let mut ctx = hmac::Context::with_key(&aws);
            ctx.update(b"api_key\0");
            ctx.update(black_box(&key));
            ctx.sign()
        })
    });
    g.finish();
}

criterion_group!(benches, keyed_hash);
criterion_main!(benches);
