//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay test
//! (`tests/it/fuzz_corpus.rs`), which runs every saved input through the same functions on stable.
//! Not part of the API: each takes raw bytes, checks the invariants of one parser, and panics
//! when one breaks. None may hang, and none may panic on any input for another reason.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode, header};

use crate::upstream::h1::{self, Decoder, Framing};

/// The answer-head limit the upstream targets use (the default of
/// `upstream.max_response_header_bytes`).
const MAX_HEAD: usize = 64 * 1024;

/// The upstream answer head parser: heads (interim ones skipped) and the framing decided from
/// them. The first byte chooses a HEAD request (bit 0) and a smaller head limit (the rest).
pub fn answer_head(data: &[u8]) {
    let Some((&flags, raw)) = data.split_first() else { return };
    let head_request = flags & 1 == 1;
    let max_head = 1024 + usize::from(flags >> 1) * 512;
    let mut buf = BytesMut::from(raw);
    let mut interim = 0;
    let Ok(Some((parts, framing, _reuse))) =
        h1::final_head(&mut buf, &mut Vec::new(), max_head, head_request, &mut interim)
    else {
        return;
    };
    let h = &parts.headers;
    assert!(!h.contains_key(header::TRANSFER_ENCODING), "Transfer-Encoding is consumed, never handed on");
    let lengths: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    assert!(lengths.len() <= 1, "one Content-Length at most: {lengths:?}");
    if let (Framing::Length(n), Some(v)) = (framing, lengths.first()) {
        assert_eq!(
            v.to_str().ok().and_then(|v| v.parse().ok()),
            Some(n),
            "the length handed on frames the body"
        );
    }
    if matches!(framing, Framing::Chunked | Framing::Close) {
        assert!(lengths.is_empty(), "no Content-Length beside a body framed otherwise: {lengths:?}");
    }
    assert!(!parts.status.is_informational(), "interim answers are skipped");
}

/// The chunked body decoder. The first byte sets how the rest arrives (in pieces of 1 to 255
/// bytes, or 0: all at once); the decoded bytes and the verdict must not depend on it.
pub fn chunked_body(data: &[u8]) {
    let Some((&step, raw)) = data.split_first() else { return };
    let whole = decode_in_pieces(raw, raw.len().max(1));
    let pieces = decode_in_pieces(raw, usize::from(step).max(1));
    assert_eq!(whole.is_ok(), pieces.is_ok(), "the verdict depends on how the bytes arrive");
    if let (Ok(a), Ok(b)) = (&whole, &pieces) {
        assert_eq!(a, b, "the body depends on how the bytes arrive");
        assert!(a.len() <= raw.len());
    }
}

fn decode_in_pieces(raw: &[u8], step: usize) -> Result<Vec<u8>, String> {
    let mut decoder = Decoder::new(Framing::Chunked);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut input = raw.chunks(step);
    loop {
        while let Some(data) = decoder.decode(&mut buf).map_err(|e| e.to_string())? {
            assert!(!data.is_empty(), "no empty data frames");
            out.extend_from_slice(&data);
        }
        if decoder.is_done() {
            return Ok(out);
        }
        match input.next() {
            Some(piece) => buf.extend_from_slice(piece),
            None => {
                decoder.end_of_stream().map_err(|e| e.to_string())?;
                return Ok(out);
            }
        }
    }
}

/// Legacy parameter collection: query, body (form or JSON, by the first byte's choice of
/// `Content-Type`) and a caller's Basic header, separated by `\n` in the input.
pub fn legacy_params(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else { return };
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let auth = parts.next();
    let content_type = match kind % 5 {
        0 => None,
        1 => Some("application/x-www-form-urlencoded"),
        2 => Some("application/json"),
        3 => Some("application/vnd.api+json; charset=utf-8"),
        _ => Some("text/plain"),
    };
    let query = (kind & 0x80 == 0).then_some(&*query);
    let Ok((params, _)) = crate::legacy::collect(query, content_type, body, auth) else { return };
    let secrets =
        [&params.client_secret, &params.code, &params.refresh_token, &params.username, &params.password];
    let texts = [&params.grant_type, &params.client_id, &params.redirect_uri, &params.scope];
    for value in secrets
        .iter()
        .filter_map(|s| s.as_ref())
        .map(|s| s.expose())
        .chain(texts.iter().filter_map(|t| t.as_deref()))
    {
        assert!(!value.is_empty(), "empty values count as absent");
        assert!(!value.chars().any(char::is_control), "no control character passes: {value:?}");
    }
    if let Some(q) = query
        && crate::legacy::check_form(q.as_bytes()).is_err()
    {
        panic!("a query the authorize check refuses was accepted by the token call");
    }
}

/// The v2 token answer parser and the legacy answer rendered from it.
pub fn token_answer(data: &[u8]) {
    let Ok(token) = crate::oauth::V2Token::parse(data) else { return };
    let max = std::time::Duration::from_secs(crate::oauth::MAX_EXPIRES_IN);
    assert!(token.lifetime().is_none_or(|l| l <= max), "lifetime over the bound");
    let legacy =
        crate::config::LegacyConfig { keep_extra_fields: data.len().is_multiple_of(2), ..Default::default() };
    let sent = crate::oauth::Secret::new("sent-refresh-token");
    for age in [0, 1, u64::MAX] {
        let out = token.render_legacy(std::time::Duration::from_secs(age), Some(&sent), &legacy);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("the legacy answer is JSON");
        let expires = v.get("expires_in").map(|e| e.as_str().expect("expires_in is a string"));
        if let Some(e) = expires {
            let e: u64 = e.parse().expect("expires_in is a decimal");
            assert!(e <= crate::oauth::MAX_EXPIRES_IN);
        }
        assert_eq!(v["access_token"].as_str(), Some(token.access_token().expose()));
    }
}

/// What a client made of an upstream answer: the parts that matter to the proxy.
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The connection may carry another request.
    pub reuse: bool,
}

/// The h1 client's decoding against hyper's client as the upstream client takes its answers
/// (judged by the same framing rule), fed the same bytes in the same pieces: they must agree on
/// status, end-to-end headers, `Content-Length`, body bytes and reuse, or the h1 client must
/// refuse for a reason it documents as stricter than hyper. The first byte chooses a HEAD
/// request (bit 0) and the piece size (the rest; 0: all at once).
pub fn h1_vs_hyper(data: &[u8]) {
    let Some((&flags, raw)) = data.split_first() else { return };
    let head_request = flags & 1 == 1;
    let step = match usize::from(flags >> 1) {
        0 => raw.len().max(1),
        n => n,
    };
    let ours = h1_answer(raw, head_request, step);
    let theirs = hyper_answer(raw, head_request, step);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.status, b.status, "status");
            assert_eq!(a.body, b.body, "body bytes");
            assert_eq!(end_to_end(&a.headers), end_to_end(&b.headers), "headers");
            let lengths =
                |h: &HeaderMap| h.get_all(header::CONTENT_LENGTH).iter().cloned().collect::<Vec<_>>();
            assert_eq!(lengths(&a.headers), lengths(&b.headers), "Content-Length");
            assert!(!b.headers.contains_key(header::TRANSFER_ENCODING), "Transfer-Encoding handed on");
            assert!(!a.reuse || b.reuse, "oauth-shim reuses a connection hyper would not");
        }
        (Ok(a), Err(e)) => panic!("oauth-shim accepted an answer hyper refuses ({e}): {a:?}"),
        (Err(e), Ok(b)) => assert!(stricter(e), "oauth-shim refused ({e}) an answer hyper accepts: {b:?}"),
        (Err(_), Err(_)) => {}
    }
}

/// Where the h1 client refuses what hyper's accepts, on purpose
/// (docs/protocol.md#upstream-answers).
fn stricter(error: &str) -> bool {
    // hyper skips any number of interim answers.
    error.contains("too many interim answers")
        // The chunked decoder's per-line limit, its limits near hyper's (counted a little
        // differently), and trailer lines that end in a bare LF (hyper reads them as part of
        // a line; the section ends at the same place for both).
        || error.contains("chunk line too long")
        || error.contains("chunk extensions too large")
        || error.contains("trailers too large")
        || error.contains("malformed trailers")
}

/// Headers other than the framing and connection-management ones, which each client consumes in
/// its own way.
fn end_to_end(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let skip = [header::CONNECTION, header::TRANSFER_ENCODING, header::CONTENT_LENGTH];
    let mut out: Vec<(String, Vec<u8>)> = h
        .iter()
        .filter(|(n, _)| !skip.contains(n))
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    out.sort();
    out
}

/// The h1 client's reading of `raw`, arriving `step` bytes at a time, then the end of the
/// connection.
pub fn h1_answer(raw: &[u8], head_request: bool, step: usize) -> Result<Answer, String> {
    let mut input = raw.chunks(step.max(1));
    let mut buf = BytesMut::new();
    let mut spans = Vec::new();
    let mut interim = 0;
    let text = |e: crate::body::BoxError| e.to_string();
    let (parts, framing, reuse) = loop {
        if let Some(found) =
            h1::final_head(&mut buf, &mut spans, MAX_HEAD, head_request, &mut interim).map_err(text)?
        {
            break found;
        }
        match input.next() {
            Some(piece) => buf.extend_from_slice(piece),
            None => return Err("connection closed before an answer".into()),
        }
    };
    let mut decoder = Decoder::new(framing);
    let mut body = Vec::new();
    let mut closed = false;
    loop {
        while let Some(data) = decoder.decode(&mut buf).map_err(text)? {
            body.extend_from_slice(&data);
        }
        if decoder.is_done() {
            break;
        }
        match input.next() {
            Some(piece) => buf.extend_from_slice(piece),
            None => {
                decoder.end_of_stream().map_err(text)?;
                closed = true;
                break;
            }
        }
    }
    // Pooled only when nothing follows the answer (the pool's check refuses a connection with
    // unasked-for bytes on it).
    let nothing_after = buf.is_empty() && input.next().is_none();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
        reuse: reuse && !closed && nothing_after,
    })
}

/// An in-memory connection for hyper's client: once the request has been written (a server
/// answers only then; hyper treats bytes before it as an unasked-for answer), it reads `data`
/// in `step`-sized pieces, then waits (no more data yet) until `eof` is set, then reads as
/// closed. Writes are discarded.
struct Feed(Arc<Mutex<FeedState>>);

struct FeedState {
    data: Vec<u8>,
    pos: usize,
    step: usize,
    eof: bool,
    written: bool,
}

impl hyper::rt::Read for Feed {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !s.written {
            Poll::Pending
        } else if s.pos < s.data.len() {
            let n = s.step.min(s.data.len() - s.pos).min(buf.remaining());
            let pos = s.pos;
            buf.put_slice(&s.data[pos..pos + n]);
            s.pos += n;
            Poll::Ready(Ok(()))
        } else if s.eof {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl hyper::rt::Write for Feed {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).written = true;
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Polls the connection and one other future in rounds with a no-op waker (everything is in
/// memory, so each round either moves on or waits for bytes the feed does not have). When a
/// few rounds in a row change nothing, the feed reaches its end of stream.
struct Driver {
    feed: Arc<Mutex<FeedState>>,
    still: usize,
    rounds: usize,
}

impl Driver {
    /// Run `step` (which polls the connection and its own future) until it is ready.
    fn run<T>(&mut self, mut step: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Result<T, String> {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            let before = self.feed.lock().unwrap_or_else(|p| p.into_inner()).pos;
            if let Poll::Ready(v) = step(&mut cx) {
                return Ok(v);
            }
            self.rounds += 1;
            if self.rounds > 100_000 {
                return Err("hyper made no progress".into());
            }
            let mut feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
            if feed.pos == before {
                self.still += 1;
                if self.still >= 4 {
                    if feed.eof {
                        return Err("hyper made no progress after the end of stream".into());
                    }
                    feed.eof = true;
                    self.still = 0;
                }
            } else {
                self.still = 0;
            }
        }
    }
}

/// hyper's client reading of `raw`, arriving `step` bytes at a time, then the end of the
/// connection, with its head judged as the upstream client judges it ([`h1::framing_of`]).
pub fn hyper_answer(raw: &[u8], head_request: bool, step: usize) -> Result<Answer, String> {
    use http_body::Body as _;
    let state = Arc::new(Mutex::new(FeedState {
        data: raw.to_vec(),
        pos: 0,
        step: step.max(1),
        eof: false,
        written: false,
    }));
    let mut driver = Driver { feed: Arc::clone(&state), still: 0, rounds: 0 };
    let mut builder = hyper::client::conn::http1::Builder::new();
    builder.max_buf_size(MAX_HEAD);
    let mut handshake = pin!(builder.handshake::<_, http_body_util::Empty<Bytes>>(Feed(Arc::clone(&state))));
    let (mut sender, conn) =
        driver.run(|cx| handshake.as_mut().poll(cx))?.map_err(|e| format!("hyper handshake: {e}"))?;
    let mut conn = pin!(conn);
    let mut conn_ended = false;
    let req = http::Request::builder()
        .method(if head_request { Method::HEAD } else { Method::GET })
        .uri("/")
        .header(header::HOST, "upstream")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let mut sent = pin!(sender.send_request(req));
    let mut poll_conn = |cx: &mut Context<'_>, conn_ended: &mut bool| {
        if !*conn_ended && conn.as_mut().poll(cx).is_ready() {
            *conn_ended = true;
        }
    };
    let resp = driver
        .run(|cx| {
            poll_conn(cx, &mut conn_ended);
            sent.as_mut().poll(cx)
        })?
        .map_err(|e| format!("hyper: {e}"))?;
    let (mut parts, mut body) = resp.into_parts();
    let (_, trusted) = h1::framing_of(&mut parts, head_request).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    loop {
        let frame = driver.run(|cx| {
            poll_conn(cx, &mut conn_ended);
            Pin::new(&mut body).poll_frame(cx)
        })?;
        match frame {
            None => break,
            Some(Err(e)) => return Err(format!("hyper body: {e}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
        }
    }
    // Reusable: the answer ended without the end of stream, and after a few more rounds the
    // connection is idle and wants the next request.
    let closed = state.lock().unwrap_or_else(|p| p.into_inner()).eof;
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..8 {
        poll_conn(&mut cx, &mut conn_ended);
    }
    let reuse = trusted && !closed && !conn_ended && !sender.is_closed() && sender.is_ready();
    Ok(Answer { status: parts.status, headers: parts.headers, body: bytes, reuse })
}
