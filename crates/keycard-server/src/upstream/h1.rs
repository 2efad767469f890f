//! HTTP/1.1 to a plain `http://` upstream, spoken by the task that serves the client.
//!
//! hyper's client runs every connection as a task of its own: a request crosses a channel
//! to it, the response head comes back through a one-shot channel, the body through a
//! third, and a connection whose body is still arriving needs a task of its own to come
//! back to the pool — four polls of two tasks for one small answer, a third of what a
//! proxied request costs. The gateway's commonest request, one without a body, is written
//! here by the request's own task, which then reads the answer from the socket; the body is
//! read as the client takes it, and the connection goes back to the pool when it is done.
//! Requests with a body, and `https://` upstreams, still go through hyper (see
//! [`crate::upstream::pool`]).
//!
//! The answer's framing follows RFC 9112 §6.3, strictly, since a proxy that reads a body
//! differently from the upstream is how responses get smuggled: several `Content-Length`s
//! that disagree, `Transfer-Encoding` on an HTTP/1.0 answer, or a malformed chunk are a
//! failed request (502 before the head, a cut body after); an answer with both
//! `Transfer-Encoding` and `Content-Length` loses the latter; a connection is reused only
//! when its answer was HTTP/1.1, did not say `close`, was framed by length or chunks, read to
//! its end, and left no byte unread. Informational (1xx) answers are skipped; trailers are
//! read and dropped.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use keycard_core::Principal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer head read (status line, headers and any 1xx answers before it).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most headers in an answer (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailers after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;
/// Room made in the read buffer before a read.
const READ_SPACE: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection ended (or was reset) before any byte of an answer: a reused
    /// connection the upstream had closed. Sending again is safe when the request was never
    /// written, or is idempotent.
    NoAnswer {
        /// Whether the whole request had been handed to the socket.
        written: bool,
        /// What the socket said.
        error: io::Error,
    },
    /// Anything else: a malformed answer, a connection cut mid-answer.
    Failed(io::Error),
}

impl From<Failure> for io::Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::NoAnswer { error, .. } | Failure::Failed(error) => error,
        }
    }
}

fn bad(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// One connection to an upstream, with its buffers (kept between requests). Held boxed, so
/// that the futures and bodies holding it stay small.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TcpStream,
    buf: BytesMut,
    out: Vec<u8>,
    spans: Vec<[usize; 4]>,
}

impl Conn {
    /// Wraps a connected socket.
    pub(crate) fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            spans: Vec::new(),
        }
    }

    /// Whether an idle connection can take a request: the upstream has neither closed it
    /// nor sent anything unasked. Costs no system call unless the socket became readable.
    pub(crate) fn is_usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.buf.reserve(1);
        matches!(self.io.try_read_buf(&mut self.buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads more of the answer into the buffer; `Ok(0)` at the end of the stream.
    ///
    /// Through tokio's `AsyncRead`, which forgets the socket's readiness after a read that
    /// did not fill the space offered (the socket was drained): the idle connection's check
    /// at the next checkout ([`Conn::is_usable`]) then costs no system call, where a plain
    /// `try_read` would leave the readiness set and pay a `recv` answering `EAGAIN`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SPACE / 4 {
            self.buf.reserve(READ_SPACE);
        }
        std::future::Future::poll(std::pin::pin!(self.io.read_buf(&mut self.buf)), cx)
    }

    /// Writes `req` (origin-form target, `Host` set, no body) with the identity headers of
    /// `identity`, and reads the answer's head. The body, if any, is read through the
    /// returned [`Framing`].
    pub(crate) async fn exchange<B>(
        &mut self,
        req: &Request<B>,
        identity: Option<&Principal>,
    ) -> Result<(Response<()>, Framing), Failure> {
        self.out.clear();
        write_head(&mut self.out, req, identity);
        let written = self.io.write_all(&self.out).await;
        if self.out.capacity() > MAX_HEAD {
            // A rare huge request: not kept with the connection.
            self.out = Vec::new();
        }
        if let Err(error) = written {
            return Err(Failure::NoAnswer {
                written: false,
                error,
            });
        }
        let mut seen = 0usize;
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf, &mut self.spans, req.method() == Method::HEAD) {
                    Ok(Some(Parsed::Informational(n))) => {
                        seen += n;
                        if seen >= MAX_HEAD {
                            return Err(Failure::Failed(bad("too many informational answers")));
                        }
                        continue;
                    }
                    Ok(Some(Parsed::Final(resp, framing))) => return Ok((resp, framing)),
                    Ok(None) => {}
                    Err(e) => return Err(Failure::Failed(e)),
                }
            }
            // Also when informational answers ended exactly at a read's end: a stream of
            // them is bounded like one head.
            if seen + self.buf.len() >= MAX_HEAD {
                return Err(Failure::Failed(bad("upstream answer head too large")));
            }
            let answered = seen > 0 || !self.buf.is_empty();
            match std::future::poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) if answered => {
                    return Err(Failure::Failed(bad("upstream closed mid-answer")));
                }
                Ok(0) => {
                    return Err(Failure::NoAnswer {
                        written: true,
                        error: io::Error::from(io::ErrorKind::UnexpectedEof),
                    });
                }
                Ok(_) => {}
                Err(error) if !answered => {
                    return Err(Failure::NoAnswer {
                        written: true,
                        error,
                    });
                }
                Err(e) => return Err(Failure::Failed(e)),
            }
        }
    }
}

/// The request line and headers, as HTTP/1.1, the identity headers of `identity` last.
pub(crate) fn write_head<B>(out: &mut Vec<u8>, req: &Request<B>, identity: Option<&Principal>) {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(p) = identity {
        crate::upstream::identity::write_identity(out, p);
    }
    out.extend_from_slice(b"\r\n");
}

enum Parsed {
    /// A 1xx answer of this many bytes, consumed.
    Informational(usize),
    /// The final answer's head (consumed) and how its body is framed.
    Final(Response<()>, Framing),
}

/// Parses an answer head at the start of `buf`: `None` when more bytes are needed.
/// `spans` is scratch space kept with the connection.
fn parse_head(
    buf: &mut BytesMut,
    spans: &mut Vec<[usize; 4]>,
    head_request: bool,
) -> io::Result<Option<Parsed>> {
    // Where each header's name and value lie in `buf`, so that the values can share its
    // memory once the head is split off (as hyper does). Neither array is zeroed first:
    // that alone cost more than the parse.
    spans.clear();
    let (len, code, version) = {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(bad("malformed upstream answer head")),
        };
        let base = buf.as_ptr() as usize;
        for h in resp.headers.iter() {
            let name = (h.name.as_ptr() as usize).wrapping_sub(base);
            let value = (h.value.as_ptr() as usize).wrapping_sub(base);
            spans.push([
                name,
                name.saturating_add(h.name.len()),
                value,
                value.saturating_add(h.value.len()),
            ]);
        }
        (len, resp.code, resp.version)
    };
    let code = code.ok_or_else(|| bad("upstream answer without a status"))?;
    if (100..200).contains(&code) {
        // RFC 9110 §15.2: a client skips informational answers it did not ask for. 101
        // would switch protocols, which keycard never asks for (it drops `Upgrade`).
        if code == 101 {
            return Err(bad("upstream switched protocols unasked"));
        }
        buf.advance(len);
        return Ok(Some(Parsed::Informational(len)));
    }
    let status = StatusCode::from_u16(code).map_err(|_| bad("upstream status out of range"))?;
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut facts = Facts::default();
    for &[ns, ne, vs, ve] in spans.iter() {
        let name = head
            .get(ns..ne)
            .and_then(|n| HeaderName::from_bytes(n).ok())
            .ok_or_else(|| bad("malformed upstream header name"))?;
        if head.get(vs..ve).is_none() {
            return Err(bad("malformed upstream header value"));
        }
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| bad("malformed upstream header value"))?;
        facts.note(&name, &value);
        headers.append(name, value);
    }
    let version = if version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let framing = framing(head_request, status, version, &facts, &mut headers)?;
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    Ok(Some(Parsed::Final(resp, framing)))
}

/// How an answer's body is delimited (RFC 9112 §6.3), and whether its connection can carry
/// another request once the body is read.
#[derive(Debug)]
pub(crate) struct Framing {
    kind: Kind,
    reusable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, in this state.
    Chunked(Chunk),
    /// Until the upstream closes.
    Close,
    /// Read to its end.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk: this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines, this many bytes read so far.
    Trailers(usize),
}

/// What the framing headers said, gathered as the headers are read (cheaper than looking
/// each up afterwards).
#[derive(Debug, Default)]
struct Facts {
    /// `Transfer-Encoding` was present: whether its last coding is `chunked`.
    transfer_encoding: Option<bool>,
    /// `Content-Length` was present: its value, `None` when invalid or values disagree.
    content_length: Option<Option<u64>>,
    /// How many `Content-Length` values (lines and list members) were read.
    content_lengths: u32,
    /// `Connection` lists `close`.
    close: bool,
}

impl Facts {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        if *name == header::CONTENT_LENGTH {
            // RFC 9112 §6.3 (5): every value (and list member) must be the same number.
            for member in value.as_bytes().split(|&b| b == b',') {
                self.content_lengths = self.content_lengths.saturating_add(1);
                let n = decimal(member.trim_ascii());
                self.content_length = match self.content_length {
                    None => Some(n),
                    Some(seen) if seen == n => Some(n),
                    Some(_) => Some(None),
                };
            }
        } else if *name == header::TRANSFER_ENCODING {
            let last = value.as_bytes().rsplit(|&b| b == b',').next();
            self.transfer_encoding =
                Some(last.is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked")));
        } else if *name == header::CONNECTION {
            self.close |= value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
}

fn framing(
    head_request: bool,
    status: StatusCode,
    version: Version,
    facts: &Facts,
    headers: &mut HeaderMap,
) -> io::Result<Framing> {
    let mut reusable = version == Version::HTTP_11 && !facts.close;
    // A list of equal lengths (`5, 5`, or two lines) is one length: passed on as one value
    // (RFC 9110 §8.6), so that nobody after keycard reads the list its own way.
    if facts.content_lengths > 1
        && let Some(Some(n)) = facts.content_length
    {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    // RFC 9112 §6.3 (1): no body, whatever the headers say. An upstream that announced one
    // anyway may send it: the connection is not trusted with another request.
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        let announced = facts.transfer_encoding.is_some()
            || !matches!(facts.content_length, None | Some(Some(0)));
        // An invalid length is faulty framing here too: nobody after keycard should read it.
        if facts.content_length == Some(None) {
            return Err(bad("invalid or conflicting Content-Length"));
        }
        // (3) all the same: beside `Transfer-Encoding`, no `Content-Length` is passed on.
        if facts.transfer_encoding.is_some() {
            headers.remove(header::CONTENT_LENGTH);
        }
        return Ok(Framing {
            kind: Kind::Done,
            reusable: reusable && !announced,
        });
    }
    if let Some(chunked) = facts.transfer_encoding {
        // RFC 9112 §6.1: only HTTP/1.1 may use it; a message that does anyway has faulty
        // framing.
        if version != Version::HTTP_11 {
            return Err(bad("Transfer-Encoding on an HTTP/1.0 upstream answer"));
        }
        // (3): Transfer-Encoding overrides Content-Length, which is dropped, and the
        // connection is not trusted with another request.
        if facts.content_length.is_some() {
            headers.remove(header::CONTENT_LENGTH);
            reusable = false;
        }
        return Ok(if chunked {
            Framing {
                kind: Kind::Chunked(Chunk::Size),
                reusable,
            }
        } else {
            // Not chunked last: the body runs until the connection closes.
            Framing {
                kind: Kind::Close,
                reusable: false,
            }
        });
    }
    match facts.content_length {
        Some(Some(0)) => Ok(Framing {
            kind: Kind::Done,
            reusable,
        }),
        Some(Some(n)) => Ok(Framing {
            kind: Kind::Length(n),
            reusable,
        }),
        Some(None) => Err(bad("invalid or conflicting Content-Length")),
        // (8): until the connection closes.
        None => Ok(Framing {
            kind: Kind::Close,
            reusable: false,
        }),
    }
}

/// 1 to 19 ASCII digits (no sign, no space): fits in a `u64`.
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// A chunk size: 1 to 16 hex digits.
fn hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16)?;
        Some((n << 4) | u64::from(v))
    })
}

/// What comes after a chunk size: nothing, or extensions (`;` first, after optional
/// blanks) without control characters.
fn valid_extensions(rest: &[u8]) -> bool {
    let rest = rest.trim_ascii_start();
    rest.is_empty()
        || (rest.first() == Some(&b';')
            && rest.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)))
}

/// The connections a pool keeps idle, to which a connection goes back once its answer has
/// been read.
pub(crate) trait IdleConns: Send + Sync + std::fmt::Debug {
    /// Takes back `conn`, to `scheme://authority`, which can carry another request.
    fn put(&self, scheme: &Scheme, authority: &Authority, conn: Box<Conn>);
}

/// Where a connection goes back once its answer has been read.
#[derive(Debug)]
pub(crate) struct Home {
    /// The pool it came from.
    pub(crate) idle: Arc<dyn IdleConns>,
    /// The upstream it is connected to.
    pub(crate) scheme: Scheme,
    /// The upstream it is connected to.
    pub(crate) authority: Authority,
}

impl Home {
    fn put(self, conn: Box<Conn>) {
        self.idle.put(&self.scheme, &self.authority, conn);
    }
}

/// An answer's body, read from the connection as it is polled.
#[derive(Debug)]
pub(crate) struct RecvBody {
    conn: Option<Box<Conn>>,
    kind: Kind,
    reusable: bool,
    home: Option<Home>,
}

impl RecvBody {
    /// The body framed by `framing` on `conn`; the connection goes `home` after it, when it
    /// may carry another request.
    pub(crate) fn new(conn: Box<Conn>, framing: Framing, home: Home) -> Self {
        let mut body = Self {
            conn: Some(conn),
            kind: framing.kind,
            reusable: framing.reusable,
            home: Some(home),
        };
        if body.kind == Kind::Done {
            body.finish();
        }
        body
    }

    /// The body is read: the connection goes home if nothing speaks against it.
    fn finish(&mut self) {
        self.kind = Kind::Done;
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take())
            && self.reusable
            && conn.buf.is_empty()
        {
            home.put(conn);
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.kind = Kind::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }

    /// The next piece of data, or the end.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.kind {
                Kind::Done => return Poll::Ready(None),
                Kind::Length(left) if !conn.buf.is_empty() => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(conn.buf.len());
                    let data = conn.buf.split_to(take).freeze();
                    let left = left - take as u64;
                    if left == 0 {
                        self.finish();
                    } else {
                        self.kind = Kind::Length(left);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Kind::Close if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Kind::Chunked(state) => match chunk_step(&mut conn.buf, state) {
                    Ok(Step::Data(data, next)) => {
                        self.kind = Kind::Chunked(next);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Step::Next(next)) => {
                        self.kind = Kind::Chunked(next);
                        continue;
                    }
                    Ok(Step::End) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Step::More) => {}
                    Err(e) => return self.fail(e),
                },
                Kind::Length(_) | Kind::Close => {}
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.kind == Kind::Close => {
                    self.kind = Kind::Done;
                    self.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return self.fail(bad("upstream closed mid-body")),
                Ok(_) => {}
                Err(e) => return self.fail(e),
            }
        }
    }
}

enum Step {
    /// Chunk data, then this state.
    Data(Bytes, Chunk),
    /// Framing consumed; go on in this state.
    Next(Chunk),
    /// The last chunk and the trailers are read.
    End,
    /// Needs more bytes.
    More,
}

/// One step of the chunked decoder (RFC 9112 §7.1) over the bytes at hand.
fn chunk_step(buf: &mut BytesMut, state: Chunk) -> io::Result<Step> {
    match state {
        Chunk::Size => {
            let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                // The line may be `MAX_CHUNK_LINE` bytes and its CR: judged the same
                // whether it arrives whole or in pieces.
                return if buf.len() > MAX_CHUNK_LINE + 1 {
                    Err(bad("chunk-size line too long"))
                } else {
                    Ok(Step::More)
                };
            };
            let line = buf
                .get(..lf)
                .and_then(|l| l.strip_suffix(b"\r"))
                .ok_or_else(|| bad("chunk-size line without CRLF"))?;
            if line.len() > MAX_CHUNK_LINE {
                return Err(bad("chunk-size line too long"));
            }
            let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            let (size, rest) = line.split_at(digits);
            let size = hex(size).ok_or_else(|| bad("invalid chunk size"))?;
            if !valid_extensions(rest) {
                return Err(bad("invalid chunk extension"));
            }
            buf.advance(lf + 1);
            Ok(Step::Next(if size == 0 {
                Chunk::Trailers(0)
            } else {
                Chunk::Data(size)
            }))
        }
        Chunk::Data(_) if buf.is_empty() => Ok(Step::More),
        Chunk::Data(left) => {
            let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let data = buf.split_to(take).freeze();
            let left = left - take as u64;
            Ok(Step::Data(
                data,
                if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                },
            ))
        }
        Chunk::DataEnd => match buf.get(..2) {
            None if buf.first().is_none_or(|&b| b == b'\r') => Ok(Step::More),
            Some(b"\r\n") => {
                buf.advance(2);
                Ok(Step::Next(Chunk::Size))
            }
            _ => Err(bad("chunk data not followed by CRLF")),
        },
        Chunk::Trailers(read) => {
            let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                return if read + buf.len() > MAX_TRAILERS {
                    Err(bad("trailers too large"))
                } else {
                    Ok(Step::More)
                };
            };
            let line = buf
                .get(..lf)
                .and_then(|l| l.strip_suffix(b"\r"))
                .ok_or_else(|| bad("trailer line without CRLF"))?;
            let empty = line.is_empty();
            if !empty && !line.contains(&b':') {
                return Err(bad("malformed trailer"));
            }
            buf.advance(lf + 1);
            let read = read + lf + 1;
            if read > MAX_TRAILERS {
                return Err(bad("trailers too large"));
            }
            Ok(if empty {
                Step::End
            } else {
                Step::Next(Chunk::Trailers(read))
            })
        }
    }
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.get_mut().poll_data(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.kind == Kind::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.kind {
            Kind::Length(n) => SizeHint::with_exact(n),
            Kind::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// What [`read_answer`] made of an upstream's bytes.
#[doc(hidden)]
#[derive(Debug, PartialEq, Eq)]
pub struct ReadAnswer {
    /// The final status.
    pub status: u16,
    /// The headers passed on, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body as decoded.
    pub body: Vec<u8>,
    /// Whether the connection would take another request.
    pub reusable: bool,
    /// Whether the body was complete when the bytes ran out.
    pub complete: bool,
}

/// The answer parser and body decoder run over `bytes` arriving `step` bytes at a time, as
/// they run on a connection (for the fuzz target and tests): informational answers
/// skipped, the head's framing judged, the body read by length, chunks or to the end.
#[doc(hidden)]
pub fn read_answer(bytes: &[u8], head_request: bool, step: usize) -> io::Result<ReadAnswer> {
    let step = step.max(1);
    let mut input = bytes.chunks(step);
    let mut buf = BytesMut::new();
    let mut spans = Vec::new();
    let mut fill = |buf: &mut BytesMut| match input.next() {
        Some(c) => {
            buf.extend_from_slice(c);
            true
        }
        None => false,
    };
    let (resp, framing) = loop {
        match parse_head(&mut buf, &mut spans, head_request)? {
            Some(Parsed::Final(resp, framing)) => break (resp, framing),
            Some(Parsed::Informational(_)) => {}
            None => {
                if buf.len() >= MAX_HEAD {
                    return Err(bad("upstream answer head too large"));
                }
                if !fill(&mut buf) {
                    return Err(bad("upstream closed mid-head"));
                }
            }
        }
    };
    let mut body = Vec::new();
    let mut kind = framing.kind;
    let complete = loop {
        match kind {
            Kind::Done => break true,
            Kind::Length(left) if !buf.is_empty() => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                body.extend_from_slice(&buf.split_to(take));
                let left = left - take as u64;
                kind = if left == 0 {
                    Kind::Done
                } else {
                    Kind::Length(left)
                };
                continue;
            }
            Kind::Close => {
                body.extend_from_slice(&buf.split());
            }
            Kind::Chunked(state) => match chunk_step(&mut buf, state)? {
                Step::Data(d, next) => {
                    body.extend_from_slice(&d);
                    kind = Kind::Chunked(next);
                    continue;
                }
                Step::Next(next) => {
                    kind = Kind::Chunked(next);
                    continue;
                }
                Step::End => break true,
                Step::More => {}
            },
            Kind::Length(_) => {}
        }
        if !fill(&mut buf) {
            break kind == Kind::Close;
        }
    };
    Ok(ReadAnswer {
        status: resp.status().as_u16(),
        headers: resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body,
        reusable: framing.reusable && complete && buf.is_empty(),
        complete,
    })
}

/// Test upstreams' half: the next request head from `s` (bytes read past it stay in
/// `buf`); `None` when the connection ends first.
#[cfg(test)]
pub(crate) async fn read_request_head(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(buf.drain(..end + 4).collect());
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(chunk.get(..n)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use http::{Method, Request, Uri};
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;

    use crate::config::Upstream;
    use crate::upstream::body::Body;
    use crate::upstream::pool::UpstreamPool;

    /// What the scripted upstream does with the request it reads: writes these bytes, then
    /// keeps the connection or closes it.
    #[derive(Clone, Copy)]
    struct Answer(&'static [u8], bool);
    const KEEP: bool = false;
    const CLOSE: bool = true;
    const PAUSE: &[u8] = b"<pause>";

    /// The writes an answer's bytes are split into at each `PAUSE`.
    fn writes(bytes: &[u8]) -> Vec<&[u8]> {
        let mut parts = Vec::new();
        let mut rest = bytes;
        while let Some(at) = rest.windows(PAUSE.len()).position(|w| w == PAUSE) {
            parts.push(&rest[..at]);
            rest = &rest[at + PAUSE.len()..];
        }
        parts.push(rest);
        parts
    }

    struct Scripted {
        up: Upstream,
        connections: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<String>>>,
    }

    impl Scripted {
        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
        fn requests(&self) -> Vec<String> {
            self.requests.lock().unwrap().clone()
        }
    }

    /// An upstream answering its n-th request (on whatever connection) with `script[n]`;
    /// after the script it closes connections unanswered.
    async fn scripted(script: &[Answer]) -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Vec<Answer>> = Arc::new(script.to_vec());
        let (conns, reqs) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let (script, reqs) = (script.clone(), reqs.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some(head) = super::read_request_head(&mut s, &mut buf).await {
                        let n = {
                            let mut r = reqs.lock().unwrap();
                            r.push(String::from_utf8(head).unwrap());
                            r.len() - 1
                        };
                        let Some(&Answer(bytes, close)) = script.get(n) else {
                            return;
                        };
                        // `PAUSE` splits an answer into writes 50 ms apart.
                        for (i, part) in writes(bytes).into_iter().enumerate() {
                            if i > 0 {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            if s.write_all(part).await.is_err() {
                                return;
                            }
                        }
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        let up = crate::config::parse_upstream(&format!("http://{addr}")).unwrap();
        Scripted {
            up,
            connections,
            requests,
        }
    }

    fn request(method: Method) -> Request<Body> {
        let mut r = Request::new(Body::empty());
        *r.method_mut() = method;
        *r.uri_mut() = Uri::from_static("/x?q=1");
        r
    }

    fn pool() -> UpstreamPool {
        UpstreamPool::new(crate::upstream::client::connector().unwrap())
    }

    /// The answer's status, headers and whole body (or the body's error).
    async fn fetch(
        pool: &UpstreamPool,
        up: &Upstream,
        method: Method,
    ) -> Result<(http::StatusCode, http::HeaderMap, Result<Vec<u8>, String>), String> {
        let resp = pool
            .send(request(method), up, None)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .map_err(|e| e.to_string());
        Ok((parts.status, parts.headers, body))
    }

    async fn body_of(pool: &UpstreamPool, up: &Upstream) -> Result<Vec<u8>, String> {
        fetch(pool, up, Method::GET).await?.2
    }

    const OK: Answer = Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", KEEP);

    #[tokio::test]
    async fn the_request_is_written_as_http_1_1_with_its_headers() {
        let s = scripted(&[OK]).await;
        let pool = pool();
        let mut req = request(Method::DELETE);
        req.headers_mut()
            .insert("x-one", http::HeaderValue::from_static("1"));
        let resp = pool.send(req, &s.up, None).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        let host = s.up.host.to_str().unwrap().to_owned();
        assert_eq!(
            s.requests(),
            [format!(
                "DELETE /x?q=1 HTTP/1.1\r\nx-one: 1\r\nhost: {host}\r\n\r\n"
            )]
        );
    }

    /// An answer that has no body but announced one: the upstream may send the body
    /// anyway, and it would be read as the next answer. Its connection is dropped.
    #[tokio::test]
    async fn bodiless_answers_that_announce_a_body_end_their_connection() {
        for (method, head) in [
            (
                Method::HEAD,
                &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"[..],
            ),
            (
                Method::GET,
                b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
            ),
            (
                Method::GET,
                b"HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
            ),
        ] {
            let s = scripted(&[Answer(head, KEEP), OK]).await;
            let pool = pool();
            let (_, _, body) = fetch(&pool, &s.up, method.clone()).await.unwrap();
            assert_eq!(body.unwrap(), b"");
            assert_eq!(body_of(&pool, &s.up).await.unwrap(), b"ok");
            assert_eq!(s.connections(), 2, "{method}: the connection was reused");
        }
        // With no length announced (or 0), it is kept.
        let s = scripted(&[
            Answer(b"HTTP/1.1 204 No Content\r\n\r\n", KEEP),
            Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", KEEP),
            OK,
        ])
        .await;
        let pool = pool();
        fetch(&pool, &s.up, Method::GET).await.unwrap().2.unwrap();
        fetch(&pool, &s.up, Method::HEAD).await.unwrap().2.unwrap();
        assert_eq!(body_of(&pool, &s.up).await.unwrap(), b"ok");
        assert_eq!(s.connections(), 1);
    }

    /// The fuzz target's entry: the same answer whether it arrives whole or byte by
    /// byte; one framing passed on, even for a bodiless answer.
    #[test]
    fn answers_read_the_same_however_they_arrive() {
        let chunked = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx: y\r\n\r\n";
        let whole = super::read_answer(chunked, false, chunked.len()).unwrap();
        for step in 1..chunked.len() {
            assert_eq!(
                super::read_answer(chunked, false, step).unwrap(),
                whole,
                "{step}"
            );
        }
        assert_eq!(whole.body, b"hello");
        assert!(whole.complete && whole.reusable);
        let head = super::read_answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
            true,
            7,
        )
        .unwrap();
        assert!(head.headers.iter().all(|(k, _)| k != "content-length"));
        assert!(!head.reusable);
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\ncontent-length: x\r\n\r\n",
        ] {
            assert!(super::read_answer(bad, true, 3).is_err());
        }
    }

    #[tokio::test]
    async fn chunked_answers_are_decoded_and_their_connection_reused() {
        let s = scripted(&[
            Answer(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;name=\"v\"\r\nhello\r\n6 ; x\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
                KEEP,
            ),
            OK,
        ])
        .await;
        let pool = pool();
        assert_eq!(body_of(&pool, &s.up).await.unwrap(), b"hello world");
        assert_eq!(body_of(&pool, &s.up).await.unwrap(), b"ok");
        assert_eq!(s.connections(), 1);
    }

    #[tokio::test]
    async fn malformed_chunks_cut_the_body_and_the_connection() {
        let bad: [&'static [u8]; 7] = [
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            // 17 hex digits: more than a u64.
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n11111111111111111\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nno colon\r\n\r\n",
        ];
        for (i, answer) in bad.into_iter().enumerate() {
            let s = scripted(&[Answer(answer, KEEP), OK]).await;
            let pool = pool();
            assert!(body_of(&pool, &s.up).await.is_err(), "answer {i} was taken");
            assert_eq!(body_of(&pool, &s.up).await.unwrap(), b"ok");
            assert_eq!(s.connections(), 2, "answer {i}: its connection was reused");
        }
    }

    #[tokio::test]
    async fn content_length_beside_transfer_encoding_is_dropped_and_the_connection_too() {
        let s = scripted(&[
            Answer(
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                KEEP,
            ),
            OK,
        ])
        .await;
        let pool = pool();
        let (_, headers, body) = fetch(&pool, &s.up, Method::GET).await.unwrap();
        assert_eq!(body.unwrap(), b"ok");
        assert!(headers.get(http::header::CONTENT_LENGTH).is_none());
        assert_eq!(body_of(&pool, &s.up).await.unwrap(), b"ok");
        assert_eq!(s.connections(), 2);
    }

    #[tokio::test]
    async fn faulty_framing_is_refused_before_the_head_is_passed_on() {
        let refused: [&'static [u8]; 9] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\nok",
            b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            // Obsolete line folding, a header without a colon, a space before the colon.
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\n 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nbad header\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ncontent-length : 2\r\n\r\nok",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        ];
        for (i, answer) in refused.into_iter().enumerate() {
            let s = scripted(&[Answer(answer, KEEP)]).await;
            assert!(
                fetch(&pool(), &s.up, Method::GET).await.is_err(),
                "answer {i} was passed on"
            );
        }
        // The same value twice is one length, and passed on as one value.
        let s = scripted(&[
            Answer(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\nok",
                KEEP,
            ),
            OK,
        ])
        .await;
        let (_, head, _) = fetch(&pool(), &s.up, Method::GET).await.unwrap();
        let lengths: Vec<_> = head.get_all(http::header::CONTENT_LENGTH).iter().collect();
        assert_eq!(lengths, ["2"]);
        assert_eq!(body_of(&pool(), &s.up).await.unwrap(), b"ok");
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused() {
        let mut big = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', super::MAX_HEAD));
        big.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=super::MAX_HEADERS {
            many.extend_from_slice(format!("x-h{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"content-length: 2\r\n\r\nok");
        for answer in [big, many] {
            let s = scripted(&[Answer(answer.leak(), KEEP)]).await;
            assert!(fetch(&pool(), &s.up, Method::GET).await.is_err());
        }
    }

    #[tokio::test]
    async fn an_endless_stream_of_informational_answers_is_refused() {
        let mut answer = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(super::MAX_HEAD / 25 + 1);
        answer.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        let s = scripted(&[Answer(answer.leak(), KEEP)]).await;
        assert!(fetch(&pool(), &s.up, Method::GET).await.is_err());
        // A few are skipped (informational_answers_are_skipped): the bound refuses many,
        // also when they arrive in one read with the final answer behind them.
    }

    #[tokio::test]
    async fn bytes_after_an_answer_are_never_taken_for_the_next_answer() {
        // Unasked bytes in the same read as the answer, and arriving later on the idle
        // connection (after the socket was found drained): either way the connection is
        // dropped, at the end of the answer or at checkout.
        for smuggled in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nSMUGGL"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok<pause>HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nSMUGGL",
        ] {
            let s = scripted(&[
                Answer(smuggled, KEEP),
                Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond", KEEP),
            ])
            .await;
            let pool = pool();
            assert_eq!(body_of(&pool, &s.up).await.unwrap(), b"ok");
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(body_of(&pool, &s.up).await.unwrap(), b"second");
            assert_eq!(s.connections(), 2);
        }
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_not_an_end() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n",
        ] {
            let s = scripted(&[Answer(answer, CLOSE)]).await;
            let (status, _, body) = fetch(&pool(), &s.up, Method::GET).await.unwrap();
            assert_eq!(status, 200);
            assert!(body.is_err(), "a cut body ended cleanly");
        }
    }

    #[tokio::test]
    async fn an_answer_without_a_length_runs_to_the_close_and_is_not_reused() {
        let s = scripted(&[
            Answer(b"HTTP/1.1 200 OK\r\n\r\nuntil the close", CLOSE),
            Answer(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nraw",
                CLOSE,
            ),
            OK,
        ])
        .await;
        let pool = pool();
        assert_eq!(body_of(&pool, &s.up).await.unwrap(), b"until the close");
        assert_eq!(body_of(&pool, &s.up).await.unwrap(), b"raw");
        assert_eq!(body_of(&pool, &s.up).await.unwrap(), b"ok");
        assert_eq!(s.connections(), 3);
    }

    #[tokio::test]
    async fn informational_answers_are_skipped() {
        let s = scripted(&[Answer(
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
            KEEP,
        )])
        .await;
        let (status, headers, body) = fetch(&pool(), &s.up, Method::GET).await.unwrap();
        assert_eq!(status, 201);
        assert!(headers.get("link").is_none());
        assert_eq!(body.unwrap(), b"ok");
    }

    #[tokio::test]
    async fn head_no_content_and_not_modified_answers_have_no_body() {
        let s = scripted(&[
            Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", KEEP),
            Answer(b"HTTP/1.1 204 No Content\r\n\r\n", KEEP),
            Answer(
                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
                KEEP,
            ),
            OK,
        ])
        .await;
        let pool = pool();
        let (_, headers, body) = fetch(&pool, &s.up, Method::HEAD).await.unwrap();
        assert_eq!(body.unwrap(), b"");
        assert_eq!(headers[http::header::CONTENT_LENGTH], "10");
        for status in [204, 304] {
            let (got, _, body) = fetch(&pool, &s.up, Method::GET).await.unwrap();
            assert_eq!(got, status);
            assert_eq!(body.unwrap(), b"");
        }
        assert_eq!(body_of(&pool, &s.up).await.unwrap(), b"ok");
        // The HEAD and the 304 announced a length: their connections were not reused.
        assert_eq!(s.connections(), 3);
    }

    #[tokio::test]
    async fn answers_that_close_are_not_reused() {
        let s = scripted(&[
            Answer(
                b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive, close\r\ncontent-length: 2\r\n\r\nok",
                KEEP,
            ),
            Answer(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", KEEP),
            OK,
            OK,
        ])
        .await;
        let pool = pool();
        for _ in 0..4 {
            assert_eq!(body_of(&pool, &s.up).await.unwrap(), b"ok");
        }
        assert_eq!(s.connections(), 3);
    }

    #[tokio::test]
    async fn a_request_lost_on_a_reused_connection_is_sent_again_only_when_idempotent() {
        // The upstream reads the second request and closes without answering.
        let lost = Answer(b"", CLOSE);
        let s = scripted(&[OK, lost, OK]).await;
        let once = pool();
        assert_eq!(body_of(&once, &s.up).await.unwrap(), b"ok");
        assert!(fetch(&once, &s.up, Method::POST).await.is_err());
        assert_eq!(s.requests().len(), 2, "a POST was sent twice");

        let s = scripted(&[OK, lost, OK]).await;
        let again = pool();
        assert_eq!(body_of(&again, &s.up).await.unwrap(), b"ok");
        assert_eq!(body_of(&again, &s.up).await.unwrap(), b"ok");
        assert_eq!(s.requests().len(), 3);
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_not_used() {
        // Each answer is followed by the close: a POST (never sent twice) must find that
        // out before it is written, and go on a new connection.
        let closing = Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", CLOSE);
        let s = scripted(&[closing; 5]).await;
        let pool = pool();
        for i in 0..5 {
            let (_, _, body) = fetch(&pool, &s.up, Method::POST)
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(body.unwrap(), b"ok");
            // Time for the close to arrive.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(s.connections(), 5);
        assert_eq!(s.requests().len(), 5);
    }
}
