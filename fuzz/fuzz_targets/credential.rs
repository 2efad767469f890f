//! Credential headers from an untrusted client: finding the credential and checking an API
//! key's format must never panic, and a key that passes the format check must have the
//! exact shape of a generated key.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use keycard_core::api_key;
use keycard_core::credential::{Presented, presented};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (names, value) = data.split_at(data.len().min(2));
    let mut headers = HeaderMap::new();
    for (i, b) in names.iter().enumerate() {
        let name = match b % 3 {
            0 => HeaderName::from_static("authorization"),
            1 => HeaderName::from_static("x-api-key"),
            _ => HeaderName::from_static("x-other"),
        };
        let part = if i == 0 { value } else { &value[value.len() / 2..] };
        if let Ok(v) = HeaderValue::from_bytes(part) {
            headers.append(name, v);
        }
    }
    if let Presented::ApiKey(k) = presented(&headers) {
        if api_key::check_format(k).is_ok() {
            assert_eq!(k.len(), api_key::KEY_LEN);
            assert!(k.starts_with(api_key::PREFIX));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = api_key::check_format(text);
    }
});
