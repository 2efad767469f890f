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

/// Whether Node 18 or later (built-in `fetch`) runs.
pub fn node() -> bool {
    available(
        "node 18 or later",
        Command::new("node").args(["-e", "if (typeof fetch !== 'function') process.exit(1)"]),
    )
}

/// Whether `python3` with PyJWT and cryptography runs.
pub fn python_pyjwt() -> bool {
    available(
        "python3 with pyjwt and cryptography",
        Command::new("python3").args(["-c", "import jwt, cryptography"]),
    )
}

/// Whether `python3` with Authlib, PyJWT, pyotp and requests runs.
pub fn python_authlib() -> bool {
    available(
        "python3 with authlib, pyjwt, pyotp and requests",
        Command::new("python3").args(["-c", "import authlib, jwt, pyotp, requests, cryptography"]),
    )
}

/// Whether Chromium and Playwright (`npm ci` in `browser_dir`) are installed.
pub fn chromium_playwright(browser_dir: &std::path::Path) -> bool {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    available(
        "chromium and node with playwright-core (npm ci in tests/it/browser)",
        Command::new("node").current_dir(browser_dir).args([
            "-e",
            &format!("require('fs').accessSync('{chromium}'); require.resolve('playwright-core')"),
        ]),
    )
}

/// Whether `python3` with `http-message-signatures` and `requests` runs.
pub fn python_httpsig() -> bool {
    available(
        "python3 with http-message-signatures and requests",
        Command::new("python3").args(["-c", "import http_message_signatures, requests"]),
    )
}

/// Whether `python3` with `prometheus_client` (its text-format parser) runs.
pub fn python_prometheus() -> bool {
    available(
        "python3 with prometheus_client",
        Command::new("python3").args(["-c", "import prometheus_client.parser"]),
    )
}

/// Whether `schemathesis` runs.
pub fn schemathesis() -> bool {
    available(
        "schemathesis",
        Command::new("schemathesis").arg("--version"),
    )
}

/// Whether `python3` with `grpcio`, `grpcio-tools` and `requests` runs.
pub fn python_grpc() -> bool {
    available(
        "python3 with grpcio, grpcio-tools and requests",
        Command::new("python3").args(["-c", "import grpc, grpc_tools.protoc, requests"]),
    )
}

/// Whether Caddy (`/usr/bin/caddy`, Debian's package) runs.
pub fn caddy() -> bool {
    available("caddy", Command::new("caddy").arg("version"))
}
