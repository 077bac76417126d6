//! A small HTTP/1.1 client for the common upstream exchange: a request whose body is known up
//! front (none, for most API calls, or the token call's form), on an HTTP/1 connection. The
//! request is written and the answer read in the caller's own task, so an exchange costs no
//! hop through a connection task and its channels (hyper's client dispatcher: a channel, a
//! oneshot, and a wake-up of each task in each direction). Everything else (a streamed request
//! body, HTTP/2) goes through hyper's `client::conn` as before.
//!
//! Answers are framed as RFC 9112 §6.3 says: no body for HEAD, 1xx, 204 and 304; chunked when
//! `Transfer-Encoding` ends in `chunked`; read to the end of the connection for any other
//! transfer coding or when no length is given; otherwise `Content-Length`, which must be one
//! valid number. The framing headers are checked on every answer, bodiless ones included: a
//! `Content-Length` beside `Transfer-Encoding` is removed and the connection not reused, and
//! conflicting lengths are refused. A chunked body's size lines may carry extensions (never a
//! bare CR); its trailer section (CRLF lines only) is parsed as header fields and discarded.
//! Interim 1xx answers are skipped; `101` is refused, since no upgrade is ever asked for. A
//! connection is reused only when its answer was read to the end with nothing after it, and the
//! upstream did not ask to close it (HTTP/1.0: only with `Connection: keep-alive` and no
//! `close`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version, request, response};
use http_body::{Frame, SizeHint};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::body::BoxError;

/// The connector's stream (plain TCP, or rustls over it), seen through tokio's I/O traits.
pub(super) type Io = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// At most this many headers in an answer's head (hyper's default too).
const MAX_HEADERS: usize = 100;
/// At most this many interim (1xx) answers before the final one.
const MAX_INTERIM: usize = 16;
/// A chunk-size line, extensions included, longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;
/// A body's chunk extensions together, and its trailer section, may take this many bytes (as
/// in hyper's client).
const MAX_EXTENSIONS: u64 = 16 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// Read in steps of this much.
const READ_STEP: usize = 8192;

/// Why an exchange failed. Messages are fixed text: nothing the upstream sent is echoed.
#[derive(Debug, thiserror::Error)]
#[error("upstream HTTP/1: {0}")]
pub(crate) struct Error(&'static str);

fn err(what: &'static str) -> BoxError {
    Box::new(Error(what))
}

/// One HTTP/1 connection to an upstream host, with its read buffer. Boxed once per
/// connection: the stream (with rustls' state) is large, and a connection moves from the pool
/// through the request's future into the answer's body on every exchange.
pub(super) struct Conn(Box<ConnState>);

pub(super) struct ConnState {
    io: Io,
    buf: BytesMut,
    /// Scratch space for parsing answer heads.
    spans: Spans,
    /// The pool's connector generation this connection was opened under.
    generation: u64,
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

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A request [`Conn::start`] has encoded, as [`Conn::exchange`] needs it.
pub(super) struct Pending {
    head_request: bool,
    /// A body too large to go out with the head; written after it.
    rest: Bytes,
}

impl Conn {
    pub(super) fn new(io: Io, generation: u64) -> Self {
        Self(Box::new(ConnState { io, buf: BytesMut::new(), spans: Vec::new(), generation }))
    }

    pub(super) fn generation(&self) -> u64 {
        self.0.generation
    }

    /// The stream, for hyper's connection-level client (a request with a streamed body). An
    /// idle connection has nothing buffered.
    pub(super) fn into_io(self) -> MaybeHttpsStream<TokioIo<TcpStream>> {
        self.0.io.into_inner()
    }

    /// Whether an idle connection can take a request: the upstream has not closed it or sent
    /// anything unasked. Never waits: it polls once with a no-op waker, so it costs a system call
    /// only when the reactor has seen the socket become readable.
    pub(super) fn is_usable(&mut self) -> bool {
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
    pub(super) fn start(&mut self, parts: request::Parts, host: &HeaderValue, body: &Bytes) -> Pending {
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
    pub(super) async fn exchange(
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

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
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

/// What the framing headers of an answer said, noted while its head is parsed (so framing
/// needs no hashed header lookups).
#[derive(Default)]
pub(crate) struct Seen {
    /// `Connection` named `close` / `keep-alive`.
    close: bool,
    keep_alive: bool,
    /// `Transfer-Encoding` appeared; whether its last coding is `chunked`.
    transfer_encoding: Option<bool>,
    /// The length every `Content-Length` value stated, how many values there were, and the
    /// first problem with them.
    length: Option<u64>,
    length_values: usize,
    length_error: Option<&'static str>,
}

impl Seen {
    /// Note one header; false for a hop-by-hop header this client has consumed and does not
    /// hand on: `Transfer-Encoding` (the body is decoded here), and a `Connection` that says
    /// only `close`/`keep-alive` (one naming other headers is kept, so a proxy still strips
    /// those).
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> bool {
        // A value with bytes outside visible ASCII (obs-text) says neither `keep-alive` nor
        // `chunked`, as hyper's client reads it; it may still say `close`. (A header value
        // holds no control byte but tab, so ASCII is visible ASCII.)
        let visible = || value.is_ascii();
        if *name == header::CONNECTION {
            let mut others = false;
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                let close = token.eq_ignore_ascii_case(b"close");
                let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                self.close |= close;
                self.keep_alive |= keep_alive && visible();
                others |= !close && !keep_alive && !token.is_empty();
            }
            return others;
        } else if *name == header::TRANSFER_ENCODING {
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii();
            self.transfer_encoding = Some(last.eq_ignore_ascii_case(b"chunked") && visible());
            return false;
        } else if *name == header::CONTENT_LENGTH {
            for part in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                self.length_values += 1;
                let n = (!part.is_empty() && part.iter().all(u8::is_ascii_digit))
                    .then(|| {
                        part.iter()
                            .try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
                    })
                    .flatten();
                match (n, self.length) {
                    (None, _) => self.length_error = self.length_error.or(Some("invalid Content-Length")),
                    (Some(n), Some(before)) if n != before => {
                        self.length_error = self.length_error.or(Some("conflicting Content-Length"));
                    }
                    (Some(n), _) => self.length = Some(n),
                }
            }
        }
        true
    }
}

/// The final answer's head at the front of `buf`, with its framing and whether the connection
/// may be reused after it; interim (1xx) answers are skipped (`interim` counts them across
/// calls). `None` while the head is incomplete.
pub(crate) fn final_head(
    buf: &mut BytesMut,
    spans: &mut Spans,
    max_head: usize,
    head_request: bool,
    interim: &mut usize,
) -> Result<Option<(response::Parts, Framing, bool)>, BoxError> {
    while let Some((mut head, seen)) = parse_head_with(buf, spans, max_head)? {
        if head.status.is_informational() {
            if head.status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(err("101 Switching Protocols without an upgrade request"));
            }
            *interim += 1;
            if *interim > MAX_INTERIM {
                return Err(err("too many interim answers"));
            }
            continue;
        }
        let (framing, reuse) = framing(&mut head, &seen, head_request)?;
        return Ok(Some((head, framing, reuse)));
    }
    Ok(None)
}

/// [`parse_head_with`] with a fresh list of spans.
#[cfg(test)]
fn parse_head(buf: &mut BytesMut, max_head: usize) -> Result<Option<(response::Parts, Seen)>, BoxError> {
    parse_head_with(buf, &mut Vec::new(), max_head)
}

/// Where each header's name and value lie in a head: (name start, name end, value start,
/// value end). Kept per connection, so parsing an answer allocates no list.
pub(crate) type Spans = Vec<(usize, usize, usize, usize)>;

/// Parse a complete answer head off the front of `buf`, or `None` when more is needed.
/// `spans` is scratch space (cleared first).
pub(crate) fn parse_head_with(
    buf: &mut BytesMut,
    spans: &mut Spans,
    max_head: usize,
) -> Result<Option<(response::Parts, Seen)>, BoxError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => return Err(err("answer head too large")),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(err("too many headers in the answer")),
        Err(_) => return Err(err("malformed answer head")),
    };
    if len > max_head {
        return Err(err("answer head too large"));
    }
    let status = resp.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or_else(|| err("invalid status"))?;
    let version = if resp.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    // Where each name and value lies in the head, so the values can share its bytes.
    let base = buf.as_ptr() as usize;
    spans.clear();
    spans.extend(resp.headers.iter().map(|h| {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        (name, name + h.name.len(), value, value + h.value.len())
    }));
    let head = buf.split_to(len).freeze();
    let mut map = HeaderMap::with_capacity(spans.len());
    let mut seen = Seen::default();
    for &(ns, ne, vs, ve) in spans.iter() {
        let name = HeaderName::from_bytes(&head[ns..ne]).map_err(|_| err("invalid header name"))?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(vs..ve)).map_err(|_| err("invalid header value"))?;
        if seen.note(&name, value.as_bytes()) {
            map.append(name, value);
        }
    }
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = map;
    Ok(Some((parts, seen)))
}

/// How the body is delimited, and whether the connection may be reused after it. The framing
/// headers are checked on every answer, those without a body (HEAD, 204, 304) included: a
/// connection whose answer framed itself ambiguously is never trusted with another request.
pub(crate) fn framing(
    head: &mut response::Parts,
    seen: &Seen,
    head_request: bool,
) -> Result<(Framing, bool), BoxError> {
    let mut reuse = match head.version {
        // HTTP/1.0 closes unless asked not to; `close` wins over `keep-alive` in either version.
        Version::HTTP_10 => seen.keep_alive && !seen.close,
        _ => !seen.close,
    };
    let bodiless =
        head_request || head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED;
    if let Some(chunked) = seen.transfer_encoding {
        if head.version == Version::HTTP_10 {
            return Err(err("Transfer-Encoding in an HTTP/1.0 answer"));
        }
        if seen.length_values > 0 {
            // Both: the transfer coding wins, the length is never handed on, and a connection
            // that framed an answer both ways is not trusted with another request.
            head.headers.remove(header::CONTENT_LENGTH);
            reuse = false;
        }
        if bodiless {
            return Ok((Framing::Empty, reuse));
        }
        if !chunked {
            return Ok((Framing::Close, false));
        }
        return Ok((Framing::Chunked, reuse));
    }
    if let Some(problem) = seen.length_error {
        return Err(err(problem));
    }
    if let Some(n) = seen.length
        && seen.length_values > 1
    {
        // Repeats of one number are folded into one header.
        head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if bodiless {
        return Ok((Framing::Empty, reuse));
    }
    match seen.length {
        Some(0) => Ok((Framing::Empty, reuse)),
        Some(n) => Ok((Framing::Length(n), reuse)),
        None => Ok((Framing::Close, false)),
    }
}

/// Where a connection goes once its answer has been read to the end.
pub(super) struct Return {
    pub(super) pool: Arc<super::Inner>,
    pub(super) host: usize,
}

/// An answer's body, read from the connection as the caller polls it. The connection goes
/// back to the pool the moment the last byte has been taken.
pub struct Body {
    conn: Option<Conn>,
    decoder: Decoder,
    reuse: bool,
    back: Option<Return>,
    /// Bytes already split off the connection's buffer: the whole body of a small answer that
    /// arrived with its head.
    ready: Option<Bytes>,
}

/// Decodes a body framed as [`framing`] decided, from whatever part of it is buffered.
/// Independent of the connection, so the fuzz targets drive it from plain bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Decoder {
    state: State,
    /// Bytes of chunk extensions seen so far.
    extensions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk: this many data bytes left, then CRLF.
    ChunkData(u64),
    ChunkEnd,
    /// After the last chunk: the trailer section (parsed as header fields, then discarded) up to
    /// an empty line.
    Trailers,
    Close,
    Done,
}

impl Decoder {
    pub(crate) fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        Self { state, extensions: 0 }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The connection ended: a body read to the close is complete; any other is cut short.
    pub(crate) fn end_of_stream(&mut self) -> Result<(), BoxError> {
        match self.state {
            State::Close | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(err("connection closed in the middle of the body")),
        }
    }

    /// The next data frame from what is buffered in `buf`, or `None` when more must be read (or
    /// the body is done).
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, BoxError> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Length(n) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let (data, left) = take(buf, n);
                    self.state = if left == 0 { State::Done } else { State::Length(left) };
                    return Ok(Some(data));
                }
                State::Close => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(buf.split().freeze()));
                }
                State::ChunkSize => {
                    let Some(end) = line_end(buf, MAX_CHUNK_LINE)? else { return Ok(None) };
                    let line = &buf[..end];
                    let size = chunk_size(line)?;
                    self.extensions += line.iter().position(|&b| b == b';').map_or(0, |i| end - i) as u64;
                    if self.extensions > MAX_EXTENSIONS {
                        return Err(err("chunk extensions too large"));
                    }
                    let _ = buf.split_to(end + 2);
                    self.state = if size == 0 { State::Trailers } else { State::ChunkData(size) };
                }
                State::ChunkData(n) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let (data, left) = take(buf, n);
                    self.state = if left == 0 { State::ChunkEnd } else { State::ChunkData(left) };
                    return Ok(Some(data));
                }
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(err("malformed chunked body"));
                    }
                    let _ = buf.split_to(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some(len) = trailers_len(buf)? else { return Ok(None) };
                    let _ = buf.split_to(len);
                    self.state = State::Done;
                }
            }
        }
    }
}

/// The length of a complete trailer section at the front of `buf` (RFC 9112 §7.1.2: header
/// fields, then an empty line), or `None` while it is incomplete. Every line ends in CRLF (a
/// bare CR or LF is refused), so the section ends where hyper's client ends it, at the first
/// empty line; its fields are then parsed as a head's are.
fn trailers_len(buf: &[u8]) -> Result<Option<usize>, BoxError> {
    // No trailers, the common case.
    if buf.starts_with(b"\r\n") {
        return Ok(Some(2));
    }
    let window = &buf[..buf.len().min(MAX_TRAILERS)];
    let mut end = None;
    for (i, &b) in window.iter().enumerate() {
        let bare_cr = b == b'\r' && window.get(i + 1).is_some_and(|&n| n != b'\n');
        let bare_lf = b == b'\n' && (i == 0 || window[i - 1] != b'\r');
        if bare_cr || bare_lf {
            return Err(err("malformed trailers"));
        }
        if b == b'\n' && window[..=i].ends_with(b"\r\n\r\n") {
            end = Some(i + 1);
            break;
        }
    }
    let Some(len) = end else {
        return if buf.len() >= MAX_TRAILERS { Err(err("trailers too large")) } else { Ok(None) };
    };
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(&buf[..len], &mut fields) {
        Ok(httparse::Status::Complete((parsed, _))) if parsed == len => Ok(Some(len)),
        _ => Err(err("malformed trailers")),
    }
}

impl Body {
    /// The body after a head. A small answer that is already buffered whole is split off, and
    /// the connection goes back to the pool at once.
    pub(super) fn new(mut conn: Conn, framing: Framing, reuse: bool, back: Return) -> Self {
        let mut decoder = Decoder::new(framing);
        let ready = match decoder.state {
            State::Length(n) if conn.buf.len() as u64 >= n => {
                decoder.state = State::Done;
                Some(conn.buf.split_to(n as usize).freeze())
            }
            _ => None,
        };
        let done = decoder.is_done();
        let mut body = Self { conn: Some(conn), decoder, reuse, back: Some(back), ready };
        if done {
            body.finish();
        }
        body
    }

    /// The body is complete: pool the connection if it can take another request.
    fn finish(&mut self) {
        self.decoder.state = State::Done;
        let (Some(conn), Some(back)) = (self.conn.take(), self.back.take()) else { return };
        if self.reuse && conn.buf.is_empty() {
            back.pool.put_raw(back.host, conn);
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        if let Some(ready) = self.ready.take() {
            return Poll::Ready(Some(Ok(ready)));
        }
        loop {
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
            match self.decoder.decode(&mut conn.buf) {
                Err(e) => {
                    self.fail();
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Some(data)) => {
                    if self.decoder.is_done() {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Ok(None) if self.decoder.is_done() => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
            }
            match ready!(conn.poll_read_more(cx)) {
                Ok(0) => {
                    let ended = self.decoder.end_of_stream();
                    // Even a body read to the close leaves no connection to reuse.
                    self.fail();
                    return Poll::Ready(ended.err().map(Err));
                }
                Ok(_) => {}
                Err(e) => {
                    self.fail();
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    /// The connection cannot be reused: close it.
    fn fail(&mut self) {
        self.conn = None;
        self.back = None;
        self.decoder.state = State::Done;
    }
}

/// Up to `n` of the buffered bytes, and how many of the `n` are still to come.
fn take(buf: &mut BytesMut, n: u64) -> (Bytes, u64) {
    let taken = (buf.len() as u64).min(n);
    (buf.split_to(taken as usize).freeze(), n - taken)
}

/// The index of the CRLF ending the first line of `buf`, if it is there; an error when none
/// appears within `max` bytes or a bare LF ends the line.
fn line_end(buf: &[u8], max: usize) -> Result<Option<usize>, BoxError> {
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(0) => Err(err("malformed chunked body")),
        Some(i) if window[i - 1] == b'\r' => Ok(Some(i - 1)),
        Some(_) => Err(err("malformed chunked body")),
        None if buf.len() >= max.saturating_add(2) => Err(err("chunk line too long")),
        None => Ok(None),
    }
}

/// A chunk-size line: hex digits (a value that fits 64 bits), then optional whitespace and `;`
/// extensions, with no CR in them (a bare CR is how one parser's line ends where another's
/// does not).
fn chunk_size(line: &[u8]) -> Result<u64, BoxError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(err("invalid chunk size"));
    }
    let rest = &line[digits..];
    let rest_ok = rest.iter().position(|&b| b != b' ' && b != b'\t').is_none_or(|i| rest[i] == b';');
    if !rest_ok || rest.contains(&b'\r') {
        return Err(err("invalid chunk size"));
    }
    let mut n: u64 = 0;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
        n = n.checked_mul(16).and_then(|n| n.checked_add(d)).ok_or_else(|| err("invalid chunk size"))?;
    }
    Ok(n)
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.poll_data(cx).map(|d| d.map(|d| d.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_none() && self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.decoder.state, &self.ready) {
            (_, Some(ready)) => SizeHint::with_exact(ready.len() as u64),
            (State::Done, None) => SizeHint::with_exact(0),
            (State::Length(n), None) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"0").unwrap(), 0);
        assert_eq!(chunk_size(b"1aF").unwrap(), 0x1af);
        assert_eq!(chunk_size(b"10 ;name=value").unwrap(), 16);
        assert_eq!(chunk_size(b"ffffffffffffffff").unwrap(), u64::MAX);
        assert_eq!(chunk_size(b"00000000000000000000a").unwrap(), 10);
        for bad in [&b""[..], b"x", b"10x", b"-1", b"1 2", b"fffffffffffffffff", b"+5"] {
            assert!(chunk_size(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn lines_end_in_crlf_only() {
        assert_eq!(line_end(b"5\r\nhello", 10).unwrap(), Some(1));
        assert_eq!(line_end(b"5\r", 10).unwrap(), None);
        assert!(line_end(b"5\nhello", 10).is_err());
        assert!(line_end(b"\nhello", 10).is_err());
        assert!(line_end(b"0123456789abc", 10).is_err());
    }

    fn head(raw: &str) -> Result<(response::Parts, Framing, bool), BoxError> {
        let mut buf = BytesMut::from(raw.as_bytes());
        let (mut parts, seen) = parse_head(&mut buf, 64 * 1024)?.expect("complete head");
        let (framing, reuse) = framing(&mut parts, &seen, false)?;
        Ok((parts, framing, reuse))
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |raw: &str| head(raw).map(|(_, f, r)| (f, r)).map_err(|e| e.to_string());
        assert_eq!(f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), Ok((Framing::Length(5), true)));
        assert_eq!(f("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"), Ok((Framing::Length(5), true)));
        assert_eq!(f("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), Ok((Framing::Empty, true)));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n"),
            Ok((Framing::Length(5), false))
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), Ok((Framing::Chunked, true)));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"),
            Ok((Framing::Chunked, true))
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok((Framing::Chunked, false))
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), Ok((Framing::Close, false)));
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n"), Ok((Framing::Close, false)));
        assert_eq!(f("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"), Ok((Framing::Empty, true)));
        assert_eq!(f("HTTP/1.1 304 Not Modified\r\n\r\n"), Ok((Framing::Empty, true)));
        assert_eq!(f("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n"), Ok((Framing::Length(5), false)));
        assert_eq!(
            f("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n"),
            Ok((Framing::Length(5), true))
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(f(bad).is_err(), "{bad}");
        }
    }

    fn head_of(raw: &str, head_request: bool) -> Result<(response::Parts, Framing, bool), String> {
        let mut buf = BytesMut::from(raw.as_bytes());
        let (mut parts, seen) = parse_head(&mut buf, 64 * 1024).map_err(|e| e.to_string())?.unwrap();
        let (framing, reuse) = framing(&mut parts, &seen, head_request).map_err(|e| e.to_string())?;
        Ok((parts, framing, reuse))
    }

    #[test]
    fn bodiless_answers_get_the_framing_checks_too() {
        let conflicting = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert!(head_of(conflicting, true).is_err(), "HEAD");
        for status in ["204 No Content", "304 Not Modified"] {
            let raw = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\nContent-Length: x\r\n\r\n");
            assert!(head_of(&raw, false).is_err(), "{status}");
        }
        let (parts, framing, reuse) =
            head_of("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", true)
                .unwrap();
        assert_eq!((framing, reuse), (Framing::Empty, false));
        assert!(parts.headers.get(header::CONTENT_LENGTH).is_none());
        let (parts, framing, reuse) =
            head_of("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", true).unwrap();
        assert_eq!((framing, reuse), (Framing::Empty, true));
        assert_eq!(parts.headers.get_all(header::CONTENT_LENGTH).iter().count(), 1);
    }

    #[test]
    fn content_length_goes_whenever_transfer_encoding_is_there() {
        let (parts, framing, reuse) =
            head_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\nContent-Length: 2\r\n\r\n", false)
                .unwrap();
        assert_eq!((framing, reuse), (Framing::Close, false));
        assert!(parts.headers.get(header::CONTENT_LENGTH).is_none());
    }

    #[test]
    fn http_1_0_close_wins_over_keep_alive() {
        let (_, _, reuse) =
            head_of("HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 1\r\n\r\n", false)
                .unwrap();
        assert!(!reuse);
        let (_, _, reuse) = head_of(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!reuse);
    }

    fn decode_all(framing: Framing, raw: &[u8]) -> Result<Vec<u8>, String> {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::from(raw);
        let mut out = Vec::new();
        while let Some(data) = decoder.decode(&mut buf).map_err(|e| e.to_string())? {
            out.extend_from_slice(&data);
        }
        if !decoder.is_done() {
            decoder.end_of_stream().map_err(|e| e.to_string())?;
        }
        Ok(out)
    }

    #[test]
    fn chunk_extensions_never_hold_a_bare_cr() {
        assert_eq!(decode_all(Framing::Chunked, b"2;a=b\r\nok\r\n0\r\n\r\n").unwrap(), b"ok");
        assert!(decode_all(Framing::Chunked, b"2;a\rb\r\nok\r\n0\r\n\r\n").is_err());
        assert!(decode_all(Framing::Chunked, b"2\r;a\r\nok\r\n0\r\n\r\n").is_err());
    }

    #[test]
    fn trailers_are_parsed_as_header_fields() {
        assert_eq!(decode_all(Framing::Chunked, b"2\r\nok\r\n0\r\nX-T: a\r\nX-U: b\r\n\r\n").unwrap(), b"ok");
        for bad in [
            &b"0\r\nno colon here\r\n\r\n"[..],
            b"0\r\nX T: a\r\n\r\n",
            b"0\r\n: a\r\n\r\n",
            b"0\r\nX: a\n\r\nY: b\r\n\r\n",
            b"0\r\nX: a\rY: b\r\n\r\n",
        ] {
            assert!(decode_all(Framing::Chunked, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let big = format!("0\r\nX-T: {}\r\n\r\n", "v".repeat(MAX_TRAILERS));
        assert!(decode_all(Framing::Chunked, big.as_bytes()).is_err(), "over the trailer limit");
        assert!(decode_all(Framing::Chunked, b"0\r\nX-T: a\r\n").is_err(), "cut short");
    }

    #[test]
    fn consumed_hop_by_hop_headers_are_not_handed_on() {
        let (parts, _, reuse) =
            head("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n")
                .unwrap();
        assert!(reuse);
        assert_eq!(parts.headers.len(), 1, "{:?}", parts.headers);
        let (parts, _, reuse) =
            head("HTTP/1.1 200 OK\r\nConnection: close, X-A\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(!reuse);
        assert_eq!(parts.headers["connection"], "close, X-A", "kept: it names a header to strip");
    }

    #[test]
    fn both_lengths_drop_content_length_and_repeats_fold() {
        let (parts, _, _) =
            head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(parts.headers.get(header::CONTENT_LENGTH).is_none());
        let (parts, _, _) =
            head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(parts.headers.get_all(header::CONTENT_LENGTH).iter().count(), 1);
    }

    #[test]
    fn heads_parse_and_limits_hold() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-b: two\r\n\r\nbody"[..]);
        let (parts, _) = parse_head(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["x-a"], "1");
        assert_eq!(parts.headers["x-b"], "two");
        assert_eq!(&buf[..], b"body");
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-A: 1\r\n"[..]);
        assert!(parse_head(&mut partial, 1024).unwrap().is_none());
        assert!(parse_head(&mut partial, 16).is_err(), "over the head limit");
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let mut buf = BytesMut::from(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes());
        assert!(parse_head(&mut buf, 1 << 20).is_err(), "too many headers");
        let mut buf = BytesMut::from(&b"HTTP/1.1 2000 Huh\r\n\r\n"[..]);
        assert!(parse_head(&mut buf, 1024).is_err());
        let mut buf = BytesMut::from(&b"SSH-2.0-OpenSSH\r\n\r\n"[..]);
        assert!(parse_head(&mut buf, 1024).is_err());
    }

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
