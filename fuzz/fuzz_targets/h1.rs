//! An upstream's answer, as keycard's HTTP/1.1 client reads it (head, framing, chunk
//! decoder): whatever the bytes, no panic; the result does not depend on how the bytes
//! are split as they arrive; what is passed on has one framing (never `Content-Length`
//! beside `Transfer-Encoding`, never two lengths), and a body read by its length is that
//! long.
#![no_main]

use keycard_server::fuzzing::read_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let head_request = control & 1 == 1;
    let step = usize::from(control >> 1) + 1;
    let whole = read_answer(bytes, head_request, bytes.len().max(1));
    let pieces = read_answer(bytes, head_request, step);
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the same bytes, split otherwise"),
        (Err(_), Err(_)) => {}
        _ => panic!("whole: {whole:?}, in pieces of {step}: {pieces:?}"),
    }
    let Ok(answer) = whole else {
        return;
    };
    let named = |n: &str| answer.headers.iter().filter(|(k, _)| k == n).count();
    assert!(named("content-length") <= 1, "{answer:?}");
    assert!(
        named("content-length") == 0 || named("transfer-encoding") == 0,
        "{answer:?}"
    );
    let bodiless = head_request || matches!(answer.status, 204 | 304);
    if answer.complete && !bodiless && named("transfer-encoding") == 0 {
        if let Some((_, v)) = answer.headers.iter().find(|(k, _)| k == "content-length") {
            let n: usize = std::str::from_utf8(v).unwrap().parse().unwrap();
            assert_eq!(answer.body.len(), n, "{answer:?}");
        }
    }
    if bodiless {
        assert!(answer.body.is_empty());
    }
});
