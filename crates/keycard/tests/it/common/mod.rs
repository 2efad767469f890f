//! Helpers for the integration tests: a real `keycard` process, a real upstream, an HTTP
//! client, throw-away stores, and a TCP proxy that can cut the store off.

#![allow(dead_code)]

pub mod http;
pub mod nginx;
pub mod pki;
pub mod tcp_proxy;
pub mod tools;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

pub use keycard_store::testing::{TempStore, engines, postgres_admin_url};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keycard")
}

/// A keycard config folder and, once started, a `keycard serve` process.
pub struct Keycard {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub store_url: String,
    procs: Vec<Proc>,
    /// Environment for the instances started from now on.
    env: Vec<(String, String)>,
    /// Every secret the CLI printed or a test passed in (passwords): when the test ends,
    /// none may be in the logs of the instances it ran (their access logs are on).
    secrets: Mutex<Vec<String>>,
}

struct Proc {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Keycard {
    /// A config with `store_url` (SQLite in the folder when `None`) and `extra` TOML
    /// (routes and the like) appended.
    pub fn new(store_url: Option<&str>, extra: &str) -> Keycard {
        let dir = tempfile::tempdir().unwrap();
        let store_url = store_url.map(str::to_owned).unwrap_or_else(|| {
            format!("sqlite://{}", dir.path().join("data/keycard.db").display())
        });
        let config = dir.path().join("keycard.toml");
        // Tests that send many wrong credentials must not meet the failed-attempt throttle;
        // the throttle's own tests configure `[limits]` themselves.
        let limits = if extra.contains("[limits]") {
            ""
        } else {
            "[limits]\nfailed_auth = \"100000/min\"\n\n"
        };
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\nurl = \"{store_url}\"\n\n[secrets]\nmaster_key_file = \"data/master.key\"\n\n[audit]\nfile = \"data/audit.jsonl\"\n\n{limits}{extra}\n"
            ),
        )
        .unwrap();
        Keycard {
            dir,
            config,
            store_url,
            procs: Vec::new(),
            env: Vec::new(),
            secrets: Mutex::new(Vec::new()),
        }
    }

    /// Runs a CLI command against this config.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin());
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.env_remove("KEYCARD_MASTER_KEY");
        cmd.output().unwrap()
    }

    /// Runs a CLI command with `input` on its standard input.
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("KEYCARD_MASTER_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Remembers a secret that must never appear in the logs.
    pub fn secret(&self, s: &str) {
        if s.len() >= 8 {
            self.secrets.lock().unwrap().push(s.to_owned());
        }
    }

    /// `user add NAME --password-stdin` with `extra` flags; must succeed.
    pub fn add_user(&self, name: &str, password: &str, extra: &[&str]) {
        self.secret(password);
        let mut args = vec!["user", "add", name, "--password-stdin"];
        args.extend_from_slice(extra);
        let out = self.cli_stdin(&args, &format!("{password}\n"));
        assert!(
            out.status.success(),
            "user add {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a CLI command that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "keycard {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            for field in ["key", "secret", "client_secret"] {
                if let Some(s) = v[field].as_str() {
                    self.secret(s);
                }
            }
        }
        text
    }

    /// The headers `keycard sign` makes for `method url` (over `body`, if any) with the RFC
    /// 9421 key `hmac` (the JSON of `hmac create --json`): each call a fresh signature.
    pub fn sign(
        &self,
        hmac: &serde_json::Value,
        method: &str,
        url: &str,
        body: Option<&str>,
    ) -> Vec<(String, String)> {
        std::fs::write(self.path("hk.b64"), hmac["secret"].as_str().unwrap()).unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["sign", "--json", "--key-id"])
            .arg(hmac["key_id"].as_str().unwrap())
            .arg("--secret-file")
            .arg(self.path("hk.b64"))
            .args(["--method", method]);
        if let Some(b) = body {
            std::fs::write(self.path("body.txt"), b).unwrap();
            cmd.arg("--body-file").arg(self.path("body.txt"));
        }
        let out = cmd.arg(url).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    }

    /// `hmac create --subject SUBJECT --json`: the key id and secret.
    pub fn create_hmac(&self, subject: &str) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["hmac", "create", "--subject", subject, "--json"]))
            .unwrap()
    }

    /// `client create ID --grant client_credentials --json`; returns its client secret.
    pub fn create_worker_client(&self, id: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.cli_ok(&[
            "client",
            "create",
            id,
            "--grant",
            "client_credentials",
            "--json",
        ]))
        .unwrap();
        v["client_secret"].as_str().unwrap().to_owned()
    }

    /// `key create --json`; returns (id, key).
    pub fn create_key(&self, subject: &str, scopes: &[&str], extra: &[&str]) -> (String, String) {
        let mut args = vec!["key", "create", "--subject", subject, "--json"];
        for s in scopes {
            args.push("--scope");
            args.push(s);
        }
        args.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_str(&self.cli_ok(&args)).unwrap();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["key"].as_str().unwrap().to_owned(),
        )
    }

    /// Adds `server.trusted_proxies` to the config (before `start`).
    pub fn trust_proxies(&self, cidr: &str) {
        let cfg = std::fs::read_to_string(&self.config).unwrap();
        let cfg = cfg.replacen(
            "[server]\n",
            &format!("[server]\ntrusted_proxies = [\"{cidr}\"]\n"),
            1,
        );
        std::fs::write(&self.config, cfg).unwrap();
    }

    /// Sets an environment variable for the instances started from now on (it may
    /// override `KEYCARD_LOG`).
    pub fn env(&mut self, name: &str, value: &str) {
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// Starts one more `keycard serve` on this config; returns its address.
    pub fn start(&mut self) -> SocketAddr {
        let mut child = Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env_remove("KEYCARD_MASTER_KEY")
            .env("KEYCARD_LOG", "info,keycard::access=info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("keycard is serving") {
                    let addr = line
                        .split("listen=")
                        .nth(1)
                        .and_then(|s| s.split_whitespace().next())
                        .map(str::to_owned);
                    let _ = tx.send(addr);
                }
                log2.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(a)) => a.parse().unwrap(),
            _ => {
                let _ = child.kill();
                panic!("keycard did not start: {:?}", log.lock().unwrap());
            }
        };
        self.procs.push(Proc { child, addr, log });
        addr
    }

    /// The address of instance `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.procs[i].addr
    }

    /// `http://ADDR{path}` on instance 0.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr(0))
    }

    /// The log lines of instance `i` so far.
    pub fn log(&self, i: usize) -> Vec<String> {
        self.procs[i].log.lock().unwrap().clone()
    }

    /// Sends SIGHUP to instance `i` (keycard reloads its TLS certificates).
    pub fn hangup(&self, i: usize) {
        let _ = Command::new("kill")
            .arg("-HUP")
            .arg(self.procs[i].child.id().to_string())
            .status();
    }

    /// Stops every instance with SIGTERM (graceful: the audit queue is written) and waits.
    pub fn stop(&mut self) {
        for p in &mut self.procs {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(p.child.id().to_string())
                .status();
        }
        for p in &mut self.procs {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = p.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.assert_no_secret_in_logs();
        self.procs.clear();
    }

    /// The folder's path.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for Keycard {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        if !std::thread::panicking() {
            self.assert_no_secret_in_logs();
        }
    }
}

impl Keycard {
    /// No secret the test created is in any instance's log (with the access log on).
    fn assert_no_secret_in_logs(&self) {
        let secrets = self.secrets.lock().unwrap();
        for p in &self.procs {
            for line in p.log.lock().unwrap().iter() {
                for s in secrets.iter() {
                    assert!(
                        !line.contains(s.as_str()),
                        "a secret the test created is in keycard's log: {line}"
                    );
                }
            }
        }
    }
}

/// A throw-away PostgreSQL store for `engine == "postgres"`, else `None` (SQLite in the
/// keycard's own folder). Fails when PostgreSQL is configured but does not answer.
pub async fn store_for(engine: &str) -> Option<TempStore> {
    match engine {
        "postgres" => Some(
            TempStore::new("postgres")
                .await
                .expect("PostgreSQL is configured but does not answer"),
        ),
        _ => None,
    }
}

/// A route block for the config.
pub fn route(prefix: &str, upstream: &str, extra: &str) -> String {
    format!("[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{extra}\n")
}

/// Polls `check` every 20 ms until it is true or `within` passes; returns how long it took.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Every file under `dir`, read as bytes.
pub fn all_bytes_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out
}

/// Whether `needle` occurs in `hay`.
/// Header pairs as the `(&str, &str)` the HTTP client takes.
pub fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
