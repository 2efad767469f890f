//! CPU per audit event of the store's audit appender on SQLite: the store's share of every
//! request's cost under load (keycard writes the events it gathers every 100 ms as one batch,
//! a few thousand events at saturation).
//!
//! `cargo run --release -p keycard-store --example audit_insert -- [BATCH] [EVENTS]`
//! (defaults 4000 and 400000) inserts EVENTS API-key-success events into a fresh store in
//! batches of BATCH, timestamps increasing as in production, and prints the wall time and
//! the process's CPU time (user + system, all threads, from `/proc/self/stat`) per event.
//! The insert's figures are the store's share alone; making the batch (the server does it
//! from the events it gathers) is timed apart.

// A benchmark tool: failing loudly is the right behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Instant;

use keycard_core::{AuditEvent, Method, Outcome};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let batch = args.next().unwrap_or(4000).max(1);
    let total = args.next().unwrap_or(400_000).max(batch);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let url = format!("sqlite://{}/store.db", dir.path().display());
    let store = keycard_store::Store::open(&url)
        .await
        .expect("the store opens");
    let (route, subject, credential): (Arc<str>, Arc<str>, Arc<str>) = (
        "/api/".into(),
        "bench".into(),
        "key_3kTMd9pQ2x7LmZ0a".into(),
    );
    let events: Vec<AuditEvent> = (0..batch)
        .map(|i| AuditEvent {
            ts_ms: 1_700_000_000_000 + i as i64,
            request_id: format!("kc-5f2c9a-{i:08}"),
            route: Some(route.clone()),
            method: Some(Method::ApiKey),
            outcome: Outcome::Success,
            reason: None,
            subject: Some(subject.clone()),
            credential_id: Some(credential.clone()),
            ip: Some("127.0.0.1".into()),
            management: None,
            cert_source: None,
        })
        .collect();
    let rounds = total / batch;
    // Making the batch (the server does it as it gathers), timed apart from the store's share.
    let mut lines = keycard_store::AuditBatch::new();
    let made = Instant::now();
    for _ in 0..rounds {
        lines.clear();
        for e in &events {
            lines.push(&e.borrowed());
        }
    }
    let make_us = made.elapsed().as_secs_f64() * 1e6 / (rounds * batch) as f64;
    let mut appender = store.audit_appender();
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    for _ in 0..rounds {
        let (back, result) = appender.append(lines).await;
        result.expect("insert");
        lines = back;
    }
    let n = (rounds * batch) as f64;
    println!(
        "{} events in batches of {batch}: {:.2} µs wall, {:.2} µs CPU per event \
         (and {make_us:.3} µs per event to make the batch)",
        rounds * batch,
        wall0.elapsed().as_secs_f64() * 1e6 / n,
        (cpu_seconds() - cpu0) * 1e6 / n
    );
}

/// User + system time of this process so far (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}
