//! One HTTP/1 connection to an upstream host: the request written (origin form, `Host`,
//! `Content-Length`) and the answer's head read, in the caller's task.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, request, response};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::error::err;
use super::head::{Framing, Spans, final_head};
use crate::body::BoxError;

/// The connector's stream (plain TCP, or rustls over it), seen through tokio's I/O traits.
pub(crate) type Io = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// Read in steps of this much.
const READ_STEP: usize = 8192;

/// One HTTP/1 connection to an upstream host, with its read buffer. Boxed once per
/// connection: the stream (with rustls' state) is large, and a connection moves from the pool
/// through the request's future into the answer's body on every exchange.
pub(crate) struct Conn(Box<ConnState>);

pub(crate) struct ConnState {
    io: Io,
    pub(super) buf: BytesMut,
    /// Scratch space for parsing answer heads.
    spans: Spans,
}

impl std::ops::Deref for Conn {
    type Target = ConnState;
    fn deref(&self) -> &ConnState {
        &self.0
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut ConnState {
        &mut self.0
    }
}

/// A request [`Conn::start`] has encoded, as [`Conn::exchange`] needs it.
pub(crate) struct Pending {
    head_request: bool,
    /// A body too large to go out with the head; written after it.
    rest: Bytes,
}

impl Conn {
    pub(crate) fn new(io: Io) -> Self {
        Self(Box::new(ConnState { io, buf: BytesMut::new(), spans: Vec::new() }))
    }

    /// The stream, for hyper's connection-level client (a request with a streamed body). An
    /// idle connection has nothing buffered.
    pub(crate) fn into_io(self) -> MaybeHttpsStream<TokioIo<TcpStream>> {
        self.0.io.into_inner()
    }

    /// Whether an idle connection can take a request: the upstream has not closed it or sent
    /// anything unasked. Never waits: it polls once with a no-op waker, so it costs a system call
    /// only when the reactor has seen the socket become readable.
    pub(crate) fn is_usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        // Pending: nothing to read and not closed. Anything else (the end of the stream, an
        // error, bytes nobody asked for) makes the connection unusable.
        Pin::new(&mut self.io).poll_read(&mut cx, &mut probe).is_pending()
    }

    /// Encode the request (origin form, `Host` added when missing, `Content-Length` for a body)
    /// into the connection's buffer, with a small body inline. Synchronous, so the request's
    /// parts (which may share the bytes of the incoming request, hyper's read buffer) are
    /// dropped before any wait and are never part of a future's state. Returns what
    /// [`Conn::exchange`] still needs: whether the request was a HEAD, and a body too large to
    /// go out with the head.
    pub(crate) fn start(&mut self, parts: request::Parts, host: &HeaderValue, body: &Bytes) -> Pending {
        self.buf.clear();
        encode_head(&parts, host, body.len(), &mut self.buf);
        let head_request = parts.method == Method::HEAD;
        drop(parts);
        // A small body goes out with the head in one write; a large one after it.
        let rest = if body.len() <= READ_STEP {
            self.buf.extend_from_slice(body);
            Bytes::new()
        } else {
            body.clone()
        };
        Pending { head_request, rest }
    }

    /// Write what [`Conn::start`] encoded and read the answer's head.
    pub(crate) async fn exchange(
        mut self,
        pending: Pending,
        max_head: usize,
    ) -> Result<(response::Parts, Self, Framing, bool), BoxError> {
        let state = &mut *self.0;
        state.io.write_all(&state.buf).await?;
        if !pending.rest.is_empty() {
            state.io.write_all(&pending.rest).await?;
        }
        state.io.flush().await?;
        self.buf.clear();

        let mut interim = 0;
        loop {
            let state = &mut *self.0;
            let head_request = pending.head_request;
            if let Some((head, framing, reuse)) =
                final_head(&mut state.buf, &mut state.spans, max_head, head_request, &mut interim)?
            {
                return Ok((head, self, framing, reuse));
            }
            if self.read_more().await? == 0 {
                return Err(err("connection closed before an answer"));
            }
        }
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_more(cx)).await
    }

    pub(super) fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let state = &mut *self.0;
        if state.buf.capacity() - state.buf.len() < READ_STEP / 4 {
            state.buf.reserve(READ_STEP);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut state.io), cx, &mut state.buf)
    }
}

fn encode_head(parts: &request::Parts, host: &HeaderValue, body_len: usize, out: &mut BytesMut) {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let h = &parts.headers;
    let mut size = parts.method.as_str().len() + target.len() + 64 + host.len();
    for (name, value) in h {
        size += name.as_str().len() + value.len() + 4;
    }
    out.reserve(size);
    out.put_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    if !h.contains_key(header::HOST) {
        put_header(out, "host", host.as_bytes());
    }
    let mut has_length = false;
    for (name, value) in h {
        has_length |= *name == header::CONTENT_LENGTH;
        put_header(out, name.as_str(), value.as_bytes());
    }
    if !has_length && (body_len > 0 || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)) {
        out.put_slice(b"content-length: ");
        out.put_slice(itoa::Buffer::new().format(body_len).as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

fn put_header(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_are_encoded_in_origin_form() {
        let req = http::Request::post("http://up.example:8080/oauth/v2/token?x=1")
            .header("authorization", "Basic abc")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let mut out = BytesMut::new();
        encode_head(&parts, &HeaderValue::from_static("up.example:8080"), 12, &mut out);
        assert_eq!(
            &out[..],
            b"POST /oauth/v2/token?x=1 HTTP/1.1\r\nhost: up.example:8080\r\nauthorization: Basic abc\r\ncontent-length: 12\r\n\r\n"
        );
        let (parts, ()) =
            http::Request::get("http://up/a").header("host", "other").body(()).unwrap().into_parts();
        let mut out = BytesMut::new();
        encode_head(&parts, &HeaderValue::from_static("up"), 0, &mut out);
        assert_eq!(&out[..], b"GET /a HTTP/1.1\r\nhost: other\r\n\r\n");
    }
}
