//! Real clients the interop tests drive: curl and Python `requests`. In CI (`CI` set) a
//! missing one fails the test, since `.ci/run` installs them; on a laptop the test is skipped
//! with a note.

use std::process::Command;

/// Whether `curl` runs.
pub fn curl() -> bool {
    available("curl", Command::new("curl").arg("--version"))
}

/// Whether `python3` with `requests` runs.
pub fn python_requests() -> bool {
    available(
        "python3 with requests",
        Command::new("python3").args(["-c", "import requests"]),
    )
}

fn available(what: &str, cmd: &mut Command) -> bool {
    let ok = cmd.output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing in CI: .ci/run installs it"
        );
        eprintln!("note: {what} is not installed; this interop check is skipped");
    }
    ok
}

/// Whether `python3` with PyJWT and cryptography runs.
pub fn python_pyjwt() -> bool {
    available(
        "python3 with pyjwt and cryptography",
        Command::new("python3").args(["-c", "import jwt, cryptography"]),
    )
}
