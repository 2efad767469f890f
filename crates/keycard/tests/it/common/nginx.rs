//! A real nginx for the proxy tests: its own `-c` config, pid and temp paths in the test's
//! folder, listening on loopback only, stopped by its PID when dropped.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx; stopped on drop, even when an assertion fails.
pub struct Nginx {
    child: Child,
}

/// Whether nginx is installed; in CI it must be (`.ci/run` installs it).
pub fn available() -> bool {
    if Path::new(NGINX).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "nginx is missing in CI: .ci/run installs it"
    );
    eprintln!("note: nginx is not installed; this nginx test is skipped");
    false
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nginx {
    /// Starts nginx in `dir` with `server` (the contents of an `http { }` block's include)
    /// and waits until `port` accepts connections.
    pub fn start(dir: &Path, server: &str, port: u16) -> Nginx {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("keycard.conf"), server).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 64; }}\n\
                 http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n include {d}/keycard.conf;\n}}\n"
            ),
        )
        .unwrap();
        let child = Command::new(NGINX)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .spawn()
            .unwrap();
        let nginx = Nginx { child };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}
