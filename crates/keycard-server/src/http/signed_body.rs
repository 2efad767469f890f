//! The one reader of request bodies a credential signs (Digest `qop=auth-int`, an RFC 9421
//! signature over `content-digest`), shared by the gateway, forward-auth and the tower
//! layer: such a body is read before the credential is checked, so its size and how many
//! are read at once are bounded in one place for every way into keycard. A read has a
//! total deadline and a minimum rate, so that a client trickling its body cannot hold a
//! permit for long; and a credential that could not verify anyway never gets one (the
//! callers judge it first, without the body).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::authn::{Authenticator, RequestFacts};
use crate::http::answer;
use crate::upstream::body::Body;

/// The largest body read to check a credential that signs it.
pub const MAX_SIGNED_BODY: usize = 8 * 1024 * 1024;
/// The longest a read may take, whatever arrives.
pub(crate) const READ_DEADLINE: Duration = Duration::from_secs(60);
/// The slowest a body may arrive, on average from the start of the read, once
/// [`GRACE`] has passed: bytes per second.
pub(crate) const MIN_RATE: u64 = 64 * 1024;
/// How long a body may take before [`MIN_RATE`] applies.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// How many such bodies may be read at once, all entry points together (bounds memory at
/// 16 × 8 MiB). Beyond it: 503.
pub const CONCURRENT_READS: usize = 16;

/// How many of the reads one client address may hold at once.
pub const READS_PER_CLIENT: u8 = 4;

/// The permits for reading signed bodies; one set per running keycard (its listener and any
/// tower layer on the same core share it).
#[derive(Debug)]
pub(crate) struct BodyReads {
    all: Semaphore,
    /// Reads held per client address (only addresses holding one are present).
    per_client: Mutex<HashMap<IpAddr, u8>>,
}

impl Default for BodyReads {
    fn default() -> Self {
        Self {
            all: Semaphore::new(CONCURRENT_READS),
            per_client: Mutex::new(HashMap::new()),
        }
    }
}

/// A permit to read one body, given back when dropped.
#[derive(Debug)]
pub(crate) struct BodyPermit<'a> {
    _all: SemaphorePermit<'a>,
    reads: &'a BodyReads,
    client: IpAddr,
}

impl BodyReads {
    /// A permit for `client` (the address keycard derived) to read one body; `None` when
    /// all are taken, or [`READS_PER_CLIENT`] by this client (answer 503).
    pub(crate) fn permit(&self, client: IpAddr) -> Option<BodyPermit<'_>> {
        let all = self.all.try_acquire().ok()?;
        let mut map = self.per_client.lock().ok()?;
        let held = map.entry(client).or_insert(0);
        if *held >= READS_PER_CLIENT {
            return None;
        }
        *held += 1;
        Some(BodyPermit {
            _all: all,
            reads: self,
            client,
        })
    }
}

/// The permit to read the body a credential signs, for every entry point (the gateway,
/// forward-auth, the tower layer): given only when the credential could verify, judged
/// without the body ([`Authenticator::may_verify`]), so only a credential's holder makes
/// keycard read a body. `Ok(None)`: the body stays unread, and a credential that needed it
/// is refused. `Err`: 503, all permits are taken. Hold the permit until the verification is
/// done: it bounds the bodies in memory, not just the reads.
pub(crate) async fn permit_to_read<'a>(
    reads: &'a BodyReads,
    authn: &Authenticator,
    unread: &RequestFacts<'_>,
) -> Result<Option<BodyPermit<'a>>, Response<Body>> {
    if !authn.may_verify(unread).await {
        return Ok(None);
    }
    reads
        .permit(unread.ip)
        .map(Some)
        .ok_or_else(crate::http::answer::unavailable)
}

impl Drop for BodyPermit<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.reads.per_client.lock()
            && let Some(n) = map.get_mut(&self.client)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.client);
            }
        }
    }
}

/// Reads a body of at most [`MAX_SIGNED_BODY`] bytes: 413 beyond, 400 if it breaks off,
/// 408 when it is slower than [`MIN_RATE`] (after [`GRACE`]) or takes longer than
/// [`READ_DEADLINE`].
pub(crate) async fn read<B>(body: B) -> Result<Bytes, Response<Body>>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let start = Instant::now();
    let too_large = || {
        answer::json(
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"error":"payload_too_large"}"#,
        )
    };
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    loop {
        // The time by which the bytes read so far fall below the minimum rate.
        let owed = Duration::from_secs(u64::try_from(buf.len()).unwrap_or(u64::MAX) / MIN_RATE);
        let by = (start + GRACE + owed).min(start + READ_DEADLINE);
        let frame = match tokio::time::timeout_at(by, body.frame()).await {
            Err(_) => {
                return Err(answer::json(
                    StatusCode::REQUEST_TIMEOUT,
                    r#"{"error":"request_timeout"}"#,
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(answer::bad_request()),
            Ok(Some(Ok(f))) => f,
        };
        // Trailers carry nothing a signature covers.
        if let Ok(data) = frame.into_data() {
            if buf.len().saturating_add(data.remaining()) > MAX_SIGNED_BODY {
                return Err(too_large());
            }
            buf.put(data);
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    /// A body sending `chunks` of `size` bytes `every` apart.
    fn trickle(
        chunks: usize,
        size: usize,
        every: Duration,
    ) -> impl http_body::Body<Data = Bytes, Error = std::io::Error> {
        let stream = futures_util::stream::unfold(0usize, move |i| async move {
            if i == chunks {
                return None;
            }
            tokio::time::sleep(every).await;
            let frame = http_body::Frame::data(Bytes::from(vec![b'x'; size]));
            Some((Ok::<_, std::io::Error>(frame), i + 1))
        });
        StreamBody::new(stream)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_slower_than_the_minimum_rate_is_cut_off() {
        // 1 KiB a second: within the grace, then below 64 KiB/s.
        let r = read(trickle(100, 1024, Duration::from_secs(1))).await;
        assert_eq!(r.unwrap_err().status(), StatusCode::REQUEST_TIMEOUT);
        // Fast enough throughout: 128 KiB a second for 4 s.
        let r = read(trickle(4, 128 * 1024, Duration::from_secs(1))).await;
        assert_eq!(r.unwrap().len(), 512 * 1024);
        // A small body well within the grace.
        let r = read(trickle(3, 10, Duration::from_secs(1))).await;
        assert_eq!(r.unwrap().len(), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn no_read_outlasts_the_deadline() {
        // 7 MiB at once (ahead of the minimum rate past the deadline), then a byte every
        // 10 s: never below the rate, never done.
        let start = Instant::now();
        let first = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![b'x'; 7 << 20])))
        });
        let rest = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Some((Ok(http_body::Frame::data(Bytes::from_static(b"x"))), ()))
        });
        use futures_util::StreamExt;
        let r = read(StreamBody::new(first.chain(rest))).await;
        assert_eq!(r.unwrap_err().status(), StatusCode::REQUEST_TIMEOUT);
        assert!(start.elapsed() <= READ_DEADLINE + Duration::from_secs(1));
        assert!(start.elapsed() >= READ_DEADLINE - Duration::from_secs(10));
    }

    #[test]
    fn one_client_holds_a_share_of_the_reads() {
        let reads = BodyReads::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<_> = (0..READS_PER_CLIENT)
            .map(|_| reads.permit(a).unwrap())
            .collect();
        assert!(reads.permit(a).is_none());
        // Others read on, up to the total.
        let others: Vec<_> = (0..CONCURRENT_READS - usize::from(READS_PER_CLIENT))
            .map(|i| reads.permit(IpAddr::from([198, 51, 100, i as u8])).unwrap())
            .collect();
        assert!(reads.permit("203.0.113.1".parse().unwrap()).is_none());
        drop(others);
        drop(held);
        assert!(reads.per_client.lock().unwrap().is_empty());
        assert!(reads.permit(a).is_some());
    }

    #[tokio::test]
    async fn too_large_is_413() {
        let r = read(trickle(9, 1 << 20, Duration::ZERO)).await;
        assert_eq!(r.unwrap_err().status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
