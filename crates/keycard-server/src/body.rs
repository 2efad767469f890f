//! The response body: a fixed answer of keycard's own, or the upstream's body streamed
//! through. An enum rather than a boxed trait object: no allocation per response.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// keycard's own answer.
    Full(Full<Bytes>),
    /// The upstream's answer through hyper (or the client's body to the upstream),
    /// streamed.
    Upstream(Incoming),
    /// The upstream's answer read by [`crate::h1`], streamed.
    Plain(crate::h1::RecvBody),
}

/// Why a body could not be read.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body {
    /// A body from static or owned bytes.
    pub fn from_bytes(b: impl Into<Bytes>) -> Self {
        Body::Full(Full::new(b.into()))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Body::Full(Full::new(Bytes::new()))
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Full(b) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Body::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Plain(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_end_stream(),
            Body::Upstream(b) => b.is_end_stream(),
            Body::Plain(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => b.size_hint(),
            Body::Upstream(b) => b.size_hint(),
            Body::Plain(b) => b.size_hint(),
        }
    }
}
