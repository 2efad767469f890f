//! Forward-auth: `/_keycard/verify` answered directly, and behind a real nginx `auth_request`
//! using the configuration shipped in `examples/nginx/`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{Keycard, eventually, http::Http, upstream};

const ROUTES: &str = "[[routes]]\nprefix = \"/api/\"\n\n[[routes]]\nprefix = \"/admin/\"\nscopes = [\"admin\"]\n\n[[routes]]\nprefix = \"/public/\"\npublic = true\n";

#[tokio::test(flavor = "multi_thread")]
async fn verify_answers_with_identity_headers_or_the_refusal() {
    let mut kc = Keycard::new(None, ROUTES);
    kc.start();
    let (id, key) = kc.create_key("svc", &["read"], &[]);
    let http = Http::new();
    let verify = kc.url("/_keycard/verify");

    let r = http
        .get(
            &verify,
            &[
                ("x-forwarded-uri", "/api/orders?id=1"),
                ("x-forwarded-method", "GET"),
                ("x-api-key", &key),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-keycard-subject").as_deref(), Some("svc"));
    assert_eq!(r.header("x-keycard-method").as_deref(), Some("api_key"));
    assert_eq!(r.header("x-keycard-scopes").as_deref(), Some("read"));
    assert_eq!(
        r.header("x-keycard-credential").as_deref(),
        Some(id.as_str())
    );
    // nginx's documented header name works too.
    let r = http
        .get(
            &verify,
            &[
                ("x-original-uri", "/api/orders"),
                ("authorization", &format!("Bearer {key}")),
            ],
        )
        .await;
    assert_eq!(r.status, 200);

    let r = http
        .get(&verify, &[("x-forwarded-uri", "/api/orders")])
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(r#"Bearer realm="keycard""#)
    );
    assert_eq!(r.header("x-keycard-subject"), None);
    let r = http
        .get(
            &verify,
            &[("x-forwarded-uri", "/admin/x"), ("x-api-key", &key)],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-keycard-subject"), None);
    let r = http
        .get(
            &verify,
            &[
                ("x-forwarded-uri", "/public/x"),
                ("x-keycard-subject", "root"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-keycard-subject"), None);
    // Without the original URI there is nothing to decide on; unsafe paths are refused.
    assert_eq!(http.get(&verify, &[("x-api-key", &key)]).await.status, 400);
    assert_eq!(
        http.get(&verify, &[("x-forwarded-uri", "/public/../admin/x")])
            .await
            .status,
        400
    );
    assert_eq!(
        http.get(&verify, &[("x-forwarded-uri", "/public/%61dmin/x")])
            .await
            .status,
        400
    );
    assert_eq!(
        http.get(&verify, &[("x-forwarded-uri", "/elsewhere")])
            .await
            .status,
        404
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request_in_front_of_an_upstream() {
    let nginx = Path::new("/usr/sbin/nginx");
    if !nginx.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is missing in CI: .ci/run installs it"
        );
        eprintln!("note: nginx is not installed; the nginx auth_request test is skipped");
        return;
    }
    let app = upstream::start().await;
    let mut kc = Keycard::new(None, ROUTES);
    kc.trust_proxies("127.0.0.1/32");
    let kc_addr = kc.start();
    let (_, key) = kc.create_key("svc", &["read"], &[]);

    // The shipped example, with this test's ports.
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/nginx/keycard-forward-auth.conf"
    ))
    .unwrap();
    let port = free_port();
    let server = example
        .replace("127.0.0.1:8080", &kc_addr.to_string())
        .replace("127.0.0.1:9000", app.trim_start_matches("http://"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{port}"));
    let dir = kc.dir.path().join("nginx");
    std::fs::create_dir_all(&dir).unwrap();
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
    let _nginx = KillOnDrop(
        Command::new(nginx)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .spawn()
            .unwrap(),
    );
    let http = Http::new();
    let base = format!("http://127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(10), || {
        let (http, u) = (http.clone(), format!("{base}/public/x"));
        async move { http.try_get(&u).await.is_some_and(|r| r.status == 200) }
    })
    .await;
    assert!(
        up.is_some(),
        "nginx did not start: {}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
    let r = http
        .get(
            &format!("{base}/api/orders?id=7"),
            &[("x-api-key", &key), ("x-keycard-subject", "root")],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["path"], "/api/orders");
    assert_eq!(
        r.upstream_header("x-keycard-subject").as_deref(),
        Some("svc")
    );
    assert_eq!(
        r.upstream_header("x-keycard-method").as_deref(),
        Some("api_key")
    );
    assert_eq!(r.upstream_header("x-api-key"), None);

    let r = http.get(&format!("{base}/api/orders"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some(r#"Bearer realm="keycard""#)
    );
    let r = http
        .get(&format!("{base}/api/orders"), &[("x-api-key", "kc_wrong")])
        .await;
    assert_eq!(r.status, 401);
    let r = http
        .get(&format!("{base}/admin/x"), &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, 403);
    kc.stop();
    // The audit log saw the client through nginx.
    let audit = std::fs::read_to_string(kc.path("data/audit.jsonl")).unwrap();
    assert!(
        audit.contains(r#""route":"/api/","method":"api_key","outcome":"success""#),
        "{audit}"
    );
}

/// Stops nginx even when an assertion fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}
