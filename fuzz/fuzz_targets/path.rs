//! Request paths: a path judged routable never has a dot segment, however it is encoded.
#![no_main]

use keycard_core::route::path_is_routable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if path_is_routable(path) {
        let lower = path.to_ascii_lowercase().replace("%2e", ".").replace("%2f", "/").replace("%5c", "/");
        assert!(!lower.split('/').any(|s| s == "." || s == ".."), "{path:?}");
    }
});
