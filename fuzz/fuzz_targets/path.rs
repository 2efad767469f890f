//! Request paths: a path judged routable never has a dot segment or a path parameter,
//! however it is encoded; one taken only with `allow_encoded_slash` is, once its `%2F` are
//! decoded (as an upstream may), a plain routable path.
#![no_main]

use keycard_core::route::{PathCheck, check_path, decode_slashes, path_is_routable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let check = check_path(path);
    assert_eq!(path_is_routable(path), check == PathCheck::Plain);
    if check != PathCheck::Refused {
        let lower = path.to_ascii_lowercase().replace("%2e", ".").replace("%2f", "/").replace("%5c", "/");
        assert!(!lower.split('/').any(|s| s == "." || s == ".."), "{path:?}");
        assert!(!lower.contains(';') && !lower.contains("%3b"), "{path:?}");
    }
    if check == PathCheck::Plain {
        assert!(!path.to_ascii_lowercase().contains("%2f"), "{path:?}");
    }
    if check == PathCheck::EncodedSlash {
        assert_eq!(check_path(&decode_slashes(path)), PathCheck::Plain, "{path:?}");
    }
});
