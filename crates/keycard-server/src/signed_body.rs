//! The one reader of request bodies a credential signs (Digest `qop=auth-int`, an RFC 9421
//! signature over `content-digest`), shared by the gateway, forward-auth and the tower
//! layer: such a body is read before the credential is checked, so its size and how many
//! are read at once are bounded in one place for every way into keycard.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::answer;
use crate::body::Body;

/// The largest body read to check a credential that signs it.
pub const MAX_SIGNED_BODY: usize = 8 * 1024 * 1024;
/// How many such bodies may be read at once, all entry points together (bounds memory at
/// 16 × 8 MiB). Beyond it: 503.
pub const CONCURRENT_READS: usize = 16;

/// The permits for reading signed bodies; one set per running keycard (its listener and any
/// tower layer on the same core share it).
#[derive(Debug)]
pub struct BodyReads(Semaphore);

impl Default for BodyReads {
    fn default() -> Self {
        Self(Semaphore::new(CONCURRENT_READS))
    }
}

impl BodyReads {
    /// A permit to read one body; `None` when all are taken (answer 503).
    pub fn permit(&self) -> Option<SemaphorePermit<'_>> {
        self.0.try_acquire().ok()
    }
}

/// Reads a body of at most [`MAX_SIGNED_BODY`] bytes: 413 beyond, 400 if it breaks off.
pub async fn read<B>(body: B) -> Result<Bytes, Response<Body>>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_SIGNED_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(answer::json(
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"error":"payload_too_large"}"#,
        )),
        Err(_) => Err(answer::bad_request()),
    }
}
