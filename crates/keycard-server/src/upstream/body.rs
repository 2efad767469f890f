//! The response body: a fixed answer of keycard's own, or the upstream's body streamed
//! through. An enum rather than a boxed trait object: no allocation per response.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

/// A response body (or a request body to an upstream).
#[derive(Debug)]
pub struct Body(Kind);

#[derive(Debug)]
enum Kind {
    /// keycard's own answer.
    Full(Full<Bytes>),
    /// The upstream's answer through hyper (or the client's body to the upstream),
    /// streamed.
    Upstream(Incoming),
    /// The upstream's answer read by [`crate::upstream::h1`], streamed.
    Plain(crate::upstream::h1::RecvBody),
}

/// Why a body could not be read.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body {
    /// A body from static or owned bytes.
    pub fn from_bytes(b: impl Into<Bytes>) -> Self {
        Body(Kind::Full(Full::new(b.into())))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Body(Kind::Full(Full::new(Bytes::new())))
    }

    /// A body streamed through hyper.
    pub(crate) fn streamed(b: Incoming) -> Self {
        Body(Kind::Upstream(b))
    }

    /// An upstream's answer read by [`crate::upstream::h1`].
    pub(crate) fn plain(b: crate::upstream::h1::RecvBody) -> Self {
        Body(Kind::Plain(b))
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().0 {
            Kind::Full(b) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Kind::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Kind::Plain(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(b) => b.is_end_stream(),
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::Plain(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(b) => b.size_hint(),
            Kind::Upstream(b) => b.size_hint(),
            Kind::Plain(b) => b.size_hint(),
        }
    }
}
