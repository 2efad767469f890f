//! A constant-rate HTTP/1.1 load generator for `bench/run.sh` (wrk2 semantics): C
//! connections share a fixed request rate, and each latency is measured from the moment the
//! request *should* have been sent, so a stall shows up in the percentiles instead of hiding
//! (no coordinated omission). Loopback use only.
//!
//! `cargo run --release --example loadgen -- URL RATE CONNECTIONS SECONDS [HEADER: VALUE]`
//! prints one JSON line: {"sent","ok","errors","rate","rps","p50_ms","p90_ms","p99_ms","p999_ms","max_ms"}.
//!
//! `RATE` 0 is a closed loop (each connection sends its next request as soon as the last
//! one is answered, like wrk): `rps` is then the throughput. `digest:USER:PASSWORD` in
//! place of a header answers HTTP Digest (SHA-256, `qop=auth`) challenges: one challenge per
//! connection, then a fresh response per request with a growing nonce count, as curl and
//! browsers do.
//!
//! `hmac:KEY_ID:SECRET_B64` signs every request (RFC 9421, hmac-sha256: `@method`,
//! `@authority`, `@path`, `@query` when there is one) with a fresh `created` and `nonce`, as a
//! client of the `hmac` method must (keycard refuses a signature seen before).
//!
//! With `LOADGEN_FORM` set, each request is a `POST` of that form body
//! (`application/x-www-form-urlencoded`), for the token endpoint.
//!
//! An `https://` URL is reached over TLS (rustls), trusting the CA in `LOADGEN_CA`, with the
//! client certificate `LOADGEN_CERT` / `LOADGEN_KEY` when set (mTLS). `LOADGEN_NEW_CONN=1`
//! opens a new connection — a full TLS handshake, no session resumption — for every
//! request: `rps` is then handshakes per second.

// A benchmark tool: failing loudly on a bad argument is the right behaviour.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: loadgen URL RATE CONNECTIONS SECONDS [HEADER: VALUE]");
        std::process::exit(2);
    }
    let url: hyper::Uri = args[1].parse().expect("URL");
    let rate: f64 = args[2].parse().expect("RATE");
    let conns: usize = args[3].parse().expect("CONNECTIONS");
    let secs: f64 = args[4].parse().expect("SECONDS");
    let digest = args
        .get(5)
        .and_then(|h| h.strip_prefix("digest:"))
        .map(|up| {
            let (u, p) = up.split_once(':').expect("digest:USER:PASSWORD");
            (u.to_owned(), p.to_owned())
        });
    let hmac = args.get(5).and_then(|h| h.strip_prefix("hmac:")).map(|ks| {
        use base64::Engine;
        let (k, s) = ks.split_once(':').expect("hmac:KEY_ID:SECRET_B64");
        let secret = base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("SECRET_B64");
        (k.to_owned(), secret)
    });
    let header = args
        .get(5)
        .filter(|_| digest.is_none() && hmac.is_none())
        .map(|h| {
            let (k, v) = h.split_once(':').expect("HEADER: VALUE");
            (k.trim().to_owned(), v.trim().to_owned())
        });
    let form = std::env::var("LOADGEN_FORM").ok().map(Bytes::from);
    let addr = format!("{}:{}", url.host().unwrap(), url.port_u16().unwrap_or(80));
    let tls = (url.scheme_str() == Some("https")).then(tls_connector);
    let new_conn = std::env::var("LOADGEN_NEW_CONN").is_ok_and(|v| v == "1");
    let closed_loop = rate <= 0.0;
    let interval = if closed_loop {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(conns as f64 / rate)
    };
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for i in 0..conns {
        let tls = tls.clone();
        let (url, addr, header, digest, form, hmac) = (
            url.clone(),
            addr.clone(),
            header.clone(),
            digest.clone(),
            form.clone(),
            hmac.clone(),
        );
        // Spread the connections' schedules evenly over one interval.
        let first = start + interval.mul_f64(i as f64 / conns as f64);
        tasks.push(tokio::spawn(async move {
            let mut send = connect(&addr, tls.as_ref()).await;
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut due = if closed_loop { start } else { first };
            let target = url
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_owned();
            let mut nonce = 0u64;
            let mut client = digest.map(|(u, p)| DigestClient {
                user: u,
                password: p,
                challenge: None,
                nc: 0,
                cnonce: format!("c{i}"),
            });
            while due < end {
                tokio::time::sleep_until(due.into()).await;
                if closed_loop {
                    due = Instant::now();
                }
                if new_conn && !lat.is_empty() {
                    send = connect(&addr, tls.as_ref()).await;
                }
                let mut b = Request::builder()
                    .uri(target.as_str())
                    .header("host", &addr);
                if let Some((k, v)) = &header {
                    b = b.header(k.as_str(), v.as_str());
                }
                if let Some(c) = client.as_mut().and_then(|c| c.authorization(&target)) {
                    b = b.header("authorization", c);
                }
                if let Some((key_id, secret)) = &hmac {
                    let (input, sig) = sign_request(key_id, secret, &addr, &target, i, &mut nonce);
                    b = b.header("signature-input", input).header("signature", sig);
                }
                let body = match &form {
                    Some(f) => {
                        b = b
                            .method("POST")
                            .header("content-type", "application/x-www-form-urlencoded");
                        f.clone()
                    }
                    None => Bytes::new(),
                };
                let req = b.body(Full::new(body)).unwrap();
                match send.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let fresh = match (&mut client, resp.status().as_u16()) {
                            (Some(c), 401) => c.learn(resp.headers()),
                            _ => false,
                        };
                        let _ = resp.into_body().collect().await;
                        if ok {
                            lat.push(due.elapsed());
                        } else if fresh {
                            // A challenge answered (the first, or a stale nonce): retry now.
                            continue;
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
                due += interval;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    let rps = all.len() as f64 / secs;
    println!(
        "{{\"sent\":{},\"ok\":{},\"errors\":{},\"rate\":{},\"rps\":{rps:.0},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3}}}",
        all.len() as u64 + errors,
        all.len(),
        errors,
        rate,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        all.last()
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    );
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A new HTTP/1.1 connection to `addr`, over TLS when `tls` is given.
async fn connect(addr: &str, tls: Option<&tokio_rustls::TlsConnector>) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).ok();
    match tls {
        None => {
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            send
        }
        Some(tls) => {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_owned();
            let name = rustls::pki_types::ServerName::try_from(host).expect("server name");
            let stream = tls.connect(name, stream).await.expect("TLS handshake");
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            send
        }
    }
}

/// The TLS client of `LOADGEN_CA` (and `LOADGEN_CERT`/`LOADGEN_KEY`), without session
/// resumption: every new connection is a full handshake.
fn tls_connector() -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = std::env::var("LOADGEN_CA").expect("LOADGEN_CA: the CA of the server certificate");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca).expect("LOADGEN_CA") {
        roots.add(c.expect("LOADGEN_CA")).expect("LOADGEN_CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots);
    let set = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
    let mut config = match (set("LOADGEN_CERT"), set("LOADGEN_KEY")) {
        (Some(c), Some(k)) => {
            let chain = CertificateDer::pem_file_iter(&c)
                .expect("LOADGEN_CERT")
                .collect::<Result<Vec<_>, _>>()
                .expect("LOADGEN_CERT");
            let key = PrivateKeyDer::from_pem_file(&k).expect("LOADGEN_KEY");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
        _ => builder.with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Signature-Input and Signature for a GET of `target` (RFC 9421, hmac-sha256). The
/// signature base is written out directly (it is what RFC 9421 §2.5 builds for these
/// components), so the load generator spends its two cores' share on sending, not parsing.
fn sign_request(
    key_id: &str,
    secret: &[u8],
    authority: &str,
    target: &str,
    conn: usize,
    nonce: &mut u64,
) -> (String, String) {
    use base64::Engine;
    *nonce += 1;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (components, query_line) = match query {
        Some(q) => (
            r#""@method" "@authority" "@path" "@query""#,
            format!("\"@query\": ?{q}\n"),
        ),
        None => (r#""@method" "@authority" "@path""#, String::new()),
    };
    let params = format!(
        "({components});created={created};keyid=\"{key_id}\";nonce=\"p{}c{conn}n{nonce}\"",
        std::process::id()
    );
    let base = format!(
        "\"@method\": GET\n\"@authority\": {authority}\n\"@path\": {path}\n{query_line}\"@signature-params\": {params}"
    );
    let mac = keycard_core::httpsig::sign_hmac(secret, &base);
    (
        format!("sig1={params}"),
        format!(
            "sig1=:{}:",
            base64::engine::general_purpose::STANDARD.encode(mac)
        ),
    )
}

/// An HTTP Digest client (RFC 7616, SHA-256, `qop=auth`).
struct DigestClient {
    user: String,
    password: String,
    /// (realm, nonce, opaque) of the last challenge.
    challenge: Option<(String, String, String)>,
    nc: u32,
    cnonce: String,
}

impl DigestClient {
    fn param(c: &str, name: &str) -> Option<String> {
        let start = c.find(&format!("{name}=\""))? + name.len() + 2;
        let rest = &c[start..];
        Some(rest[..rest.find('"')?].to_owned())
    }

    /// Takes the first SHA-256 Digest challenge of a 401; `true` if one was found.
    fn learn(&mut self, headers: &hyper::HeaderMap) -> bool {
        let Some(c) = headers
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("Digest ") && c.contains("algorithm=SHA-256,"))
        else {
            return false;
        };
        let fresh = Self::param(c, "nonce");
        if fresh.is_none() || self.challenge.as_ref().map(|c| Some(&c.1)) == Some(fresh.as_ref()) {
            return false;
        }
        self.challenge = Some((
            Self::param(c, "realm").unwrap_or_default(),
            fresh.unwrap_or_default(),
            Self::param(c, "opaque").unwrap_or_default(),
        ));
        self.nc = 0;
        true
    }

    fn authorization(&mut self, uri: &str) -> Option<String> {
        use keycard_core::digest::HashAlg;
        let (realm, nonce, opaque) = self.challenge.as_ref()?;
        self.nc += 1;
        let h = |s: &str| HashAlg::Sha256.hex(&[s.as_bytes()]);
        let ha1 = h(&format!("{}:{realm}:{}", self.user, self.password));
        let ha2 = h(&format!("GET:{uri}"));
        let nc = format!("{:08x}", self.nc);
        let response = h(&format!("{ha1}:{nonce}:{nc}:{}:auth:{ha2}", self.cnonce));
        Some(format!(
            r#"Digest username="{}", realm="{realm}", nonce="{nonce}", uri="{uri}", algorithm=SHA-256, qop=auth, nc={nc}, cnonce="{}", response="{response}", opaque="{opaque}""#,
            self.user, self.cnonce
        ))
    }
}
