//! Config files: any text gives settings or an error, never a panic.
#![no_main]

use keycard_server::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Settings::from_toml(text, std::path::Path::new("/tmp"), "fuzz.toml");
    }
});
