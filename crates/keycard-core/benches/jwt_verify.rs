//! keycard's whole verification of a typical JWT (size and shape checks, base64url, header
//! and claims JSON with duplicate-key checks, key lookup, signature, claim rules) against
//! the bare signature verification of the same token with the same crypto library
//! (aws-lc-rs): the physical limit. Target: whole / bare ≤ 1.3.
//!
//! `cargo bench -p keycard-core --bench jwt_verify`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use keycard_core::jwt::{self, KeySet, Rules};

const NOW: i64 = 1_800_000_000;

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// A typical access token: what Auth0 or Keycloak put in one.
fn claims() -> String {
    format!(
        r#"{{"iss":"https://idp.example.com/","sub":"auth0|5f7c8ec7c33c6c004bbafe82","aud":["orders-api","https://idp.example.com/userinfo"],"iat":{},"exp":{},"azp":"8Vn3XqX4wZ0pC2sM","scope":"openid profile orders:read orders:write","jti":"b1e0f6a2-7f43-4a8e-9d1c-3f0b8e2a9c11"}}"#,
        NOW - 60,
        NOW + 3600
    )
}

fn rules() -> Rules {
    Rules {
        issuer: "https://idp.example.com/".into(),
        audiences: vec!["orders-api".into()],
        leeway_secs: 30,
        subject_claim: "sub".into(),
        scopes_claim: None,
    }
}

fn bench(c: &mut Criterion) {
    let es = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let ed = Ed25519KeyPair::generate().unwrap();
    let p = es.public_key().as_ref().to_vec();
    let jwks = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"es-2026-11","alg":"ES256","use":"sig","x":"{}","y":"{}"}},{{"kty":"OKP","crv":"Ed25519","kid":"ed-2026-11","alg":"EdDSA","use":"sig","x":"{}"}}]}}"#,
        b64(&p[1..33]),
        b64(&p[33..65]),
        b64(ed.public_key().as_ref())
    );
    let keys = KeySet::from_json(&jwks).unwrap();
    let rules = rules();
    let payload = b64(claims().as_bytes());

    let es_input = format!(
        "{}.{payload}",
        b64(br#"{"alg":"ES256","typ":"JWT","kid":"es-2026-11"}"#)
    );
    let es_sig = es
        .sign(&SystemRandom::new(), es_input.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    let es_token = format!("{es_input}.{}", b64(&es_sig));
    let ed_input = format!(
        "{}.{payload}",
        b64(br#"{"alg":"EdDSA","typ":"JWT","kid":"ed-2026-11"}"#)
    );
    let ed_sig = ed.sign(ed_input.as_bytes()).as_ref().to_vec();
    let ed_token = format!("{ed_input}.{}", b64(&ed_sig));
    assert!(jwt::verify(&es_token, &keys, &rules, NOW).is_ok());
    assert!(jwt::verify(&ed_token, &keys, &rules, NOW).is_ok());

    let mut g = c.benchmark_group("ES256");
    g.bench_function("bare signature", |b| {
        let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &p);
        b.iter(|| {
            key.verify(black_box(es_input.as_bytes()), black_box(&es_sig))
                .unwrap()
        })
    });
    g.bench_function("keycard verify", |b| {
        b.iter(|| jwt::verify(black_box(&es_token), &keys, &rules, NOW).unwrap())
    });
    g.finish();
    let mut g = c.benchmark_group("EdDSA");
    g.bench_function("bare signature", |b| {
        let key = UnparsedPublicKey::new(&ED25519, ed.public_key().as_ref());
        b.iter(|| {
            key.verify(black_box(ed_input.as_bytes()), black_box(&ed_sig))
                .unwrap()
        })
    });
    g.bench_function("keycard verify", |b| {
        b.iter(|| jwt::verify(black_box(&ed_token), &keys, &rules, NOW).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
