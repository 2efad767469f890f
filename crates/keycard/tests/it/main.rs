//! keycard's integration tests: real `keycard` processes, a real upstream, real PostgreSQL
//! (when `KEYCARD_TEST_POSTGRES_URL` is set), real nginx and curl.

// Test code: a failed unwrap or index is a failed test, which is what we want.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

mod admin;
mod api_keys;
mod backup;
mod chromium;
mod cli;
mod clients;
mod doctor;
mod forward_auth;
mod gateway;
mod httpsig;
mod jwt;
mod limits;
mod metrics;
mod mtls;
mod oauth;
mod outage;
mod passwords;
mod proxies;
mod quickstart;
mod revocation;
mod seams;
mod sessions;
