//! A constant-rate HTTP/1.1 load generator for `bench/run.sh` (wrk2 semantics): C
//! connections share a fixed request rate, and each latency is measured from the moment the
//! request *should* have been sent, so a stall shows up in the percentiles instead of hiding
//! (no coordinated omission). Loopback use only.
//!
//! `cargo run --release --example loadgen -- URL RATE CONNECTIONS SECONDS [HEADER: VALUE]`
//! prints one JSON line: {"sent","ok","errors","rate","p50_ms","p90_ms","p99_ms","p999_ms","max_ms"}.

// A benchmark tool: failing loudly on a bad argument is the right behaviour.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
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
    let header = args.get(5).map(|h| {
        let (k, v) = h.split_once(':').expect("HEADER: VALUE");
        (k.trim().to_owned(), v.trim().to_owned())
    });
    let addr = format!("{}:{}", url.host().unwrap(), url.port_u16().unwrap_or(80));
    let interval = Duration::from_secs_f64(conns as f64 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (url, addr, header) = (url.clone(), addr.clone(), header.clone());
        // Spread the connections' schedules evenly over one interval.
        let first = start + interval.mul_f64(i as f64 / conns as f64);
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            stream.set_nodelay(true).ok();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut due = first;
            while due < end {
                tokio::time::sleep_until(due.into()).await;
                let mut b = Request::builder()
                    .uri(url.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
                    .header("host", &addr);
                if let Some((k, v)) = &header {
                    b = b.header(k.as_str(), v.as_str());
                }
                let req = b.body(Empty::<Bytes>::new()).unwrap();
                match send.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        if ok {
                            lat.push(due.elapsed());
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
    println!(
        "{{\"sent\":{},\"ok\":{},\"errors\":{},\"rate\":{},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3}}}",
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
