//! RFC 9421 `Signature-Input` / `Signature` and RFC 9530 `Content-Digest` from an
//! untrusted client: parsing and building signature bases must never panic, and a
//! signature under a key the fuzzer does not know never verifies.
#![no_main]

use http::HeaderMap;
use keycard_core::httpsig::{self, Policy, RequestParts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line is Signature-Input, the second Signature, the rest a header value.
    let mut lines = text.splitn(3, '\n');
    let (input, sig, rest) = (
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
    );
    let mut headers = HeaderMap::new();
    if let Ok(v) = rest.parse() {
        headers.insert("content-digest", v);
    }
    let _ = httpsig::check_content_digest(rest, rest.as_bytes());
    let req = RequestParts {
        method: "POST",
        scheme: "https",
        authority: "example.com",
        path: "/foo",
        query: Some(rest),
        headers: &headers,
    };
    if let Ok(sigs) = httpsig::parse(input, sig) {
        let key = httpsig::SharedKey::new(b"a key the fuzzer never sees 0123");
        for s in &sigs {
            let _ = httpsig::signature_base(s, &req);
            let policy = Policy { required: Vec::new(), max_skew: i64::MAX / 2 };
            assert!(httpsig::verify(s, &key, &req, true, &policy, 0).is_err());
        }
    }
});
