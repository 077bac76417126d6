//! An upstream answer's body: decoded (by length, chunked, or to the close) from the
//! connection's buffer as the caller polls it; the connection is handed back once it is read.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};

use super::conn::Conn;
use super::error::err;
use super::head::{Framing, MAX_HEADERS};
use crate::body::BoxError;

/// A chunk-size line, extensions included, longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;
/// A body's chunk extensions together, and its trailer section, may take this many bytes (as
/// in hyper's client).
const MAX_EXTENSIONS: u64 = 16 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

/// Where a connection goes once its answer has been read to the end and it can take another
/// request (the pool, for the client).
pub(crate) trait Release: Send + Unpin + 'static {
    fn release(self, conn: Conn);
}

/// An answer's body, read from the connection as the caller polls it. The connection goes
/// back to the pool the moment the last byte has been taken.
pub(crate) struct Body<R> {
    conn: Option<Conn>,
    decoder: Decoder,
    reuse: bool,
    back: Option<R>,
    /// Bytes already split off the connection's buffer: the whole body of a small answer that
    /// arrived with its head.
    ready: Option<Bytes>,
}

/// Decodes a body framed as [`super::head::framing`] decided, from whatever part of it is buffered.
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

impl<R: Release> Body<R> {
    /// The body after a head. A small answer that is already buffered whole is split off, and
    /// the connection goes back to the pool at once.
    pub(crate) fn new(mut conn: Conn, framing: Framing, reuse: bool, back: R) -> Self {
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
            back.release(conn);
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

impl<R: Release> http_body::Body for Body<R> {
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
}
