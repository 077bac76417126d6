//! Upstream answers framed every way HTTP/1.1 allows (RFC 9112 §6.3), as the pass-through and
//! the token call read them (`src/upstream/h1/`): chunked with extensions and trailers, read
//! to the close, interim 1xx answers, HEAD/204/304 without a body, `Content-Length` beside
//! `Transfer-Encoding`; and answers that must be refused with a 502, never a panic or a hang.
//! Each answer is written in pieces with pauses, so bodies arrive after their heads. A request
//! with a body goes through hyper's client instead: the framing cases run both ways.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// What the scripted upstream writes for one request: pieces with a pause between them, then
/// whether it closes the connection.
#[derive(Clone)]
struct Answer {
    pieces: Vec<Vec<u8>>,
    close: bool,
}

fn answer(pieces: &[&[u8]]) -> Answer {
    Answer { pieces: pieces.iter().map(|p| p.to_vec()).collect(), close: false }
}

fn closing(pieces: &[&[u8]]) -> Answer {
    Answer { close: true, ..answer(pieces) }
}

/// A raw upstream on 127.0.0.1:0 that answers the N-th request (over all connections) with the
/// N-th scripted answer (the last one repeats), and records each request head and the
/// connection it came on.
struct Scripted {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<(usize, String)>>>,
    /// Connections oauth-shim closed (the upstream read their end).
    ended: Arc<Mutex<Vec<usize>>>,
}

impl Scripted {
    async fn start(script: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
        let ended: Arc<Mutex<Vec<usize>>> = Arc::default();
        let (script, log, ends) = (Arc::new(script), Arc::clone(&seen), Arc::clone(&ended));
        tokio::spawn(async move {
            for conn in 0.. {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (script, log, ends) = (Arc::clone(&script), Arc::clone(&log), Arc::clone(&ends));
                tokio::spawn(async move {
                    if serve(stream, conn, script, log).await {
                        ends.lock().unwrap().push(conn);
                    }
                });
            }
        });
        Self { addr, seen, ended }
    }

    /// Request heads seen, with the index of the connection each came on.
    fn seen(&self) -> Vec<(usize, String)> {
        self.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.seen().iter().map(|(c, _)| c + 1).max().unwrap_or(0)
    }

    /// The connection each request came on, in order.
    fn connection_of_each(&self) -> Vec<usize> {
        self.seen().iter().map(|(c, _)| *c).collect()
    }

    /// Wait until oauth-shim has closed connection `conn` (it may close it a moment after the
    /// answer, from hyper's connection task); panics if it stays open.
    async fn closed_by_shim(&self, conn: usize) {
        let closed = poll_until(async || self.ended.lock().unwrap().contains(&conn)).await;
        assert!(closed, "connection {conn} was never closed: {:?}", self.seen());
    }
}

/// Answer the requests of one connection; true when oauth-shim closed it.
async fn serve(
    mut stream: TcpStream,
    conn: usize,
    script: Arc<Vec<Answer>>,
    seen: Arc<Mutex<Vec<(usize, String)>>>,
) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(head) = read_request_head(&mut stream, &mut buf).await else { return true };
        // A body the request announced (the token call's form).
        let len = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..len);
        let n = {
            let mut seen = seen.lock().unwrap();
            seen.push((conn, head));
            seen.len() - 1
        };
        let answer = script[n.min(script.len() - 1)].clone();
        for (i, piece) in answer.pieces.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if stream.write_all(piece).await.is_err() {
                return true;
            }
        }
        if answer.close {
            return false;
        }
    }
}

async fn shim_for(up: &Scripted, extra: &str) -> Harness {
    let toml = format!("[upstream]\napi_base = \"http://{}\"\n{extra}", up.addr);
    Harness::start(standin_config(), &toml).await
}

/// Status, selected headers and body of a pass-through GET (or HEAD).
async fn fetch(
    h: &Harness,
    method: reqwest::Method,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    fetch_with(h, method, path, None).await
}

/// A request without a body goes through `src/upstream/h1/`, one with a body through hyper's
/// client: each framing case runs with both.
const BODIES: [Option<&str>; 2] = [None, Some("x=1")];

/// [`fetch`] with a request body, if any.
async fn fetch_with(
    h: &Harness,
    method: reqwest::Method,
    path: &str,
    body: Option<&'static str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let req = http().request(method, h.url(path));
    let req = match body {
        Some(body) => req.body(body),
        None => req,
    };
    let resp = req.send().await.unwrap_or_else(|e| panic!("{body:?}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

#[tokio::test]
async fn chunked_answers_are_decoded_and_the_connection_reused() {
    let up = Scripted::start(vec![answer(&[
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n",
        b"5;ext=1\r\nhello\r\n",
        b"6\r\n wo",
        b"rld\r\n0\r\nX-Trailer: t\r\n\r\n",
    ])])
    .await;
    let h = shim_for(&up, "").await;
    for _ in 0..3 {
        let (status, headers, body) = fetch(&h, reqwest::Method::GET, "/G2W/rest/chunked").await;
        assert_eq!((status, body.as_str()), (200, "hello world"));
        assert_eq!(headers["x-up"], "1");
        assert!(headers.get("x-trailer").is_none());
    }
    assert_eq!(up.connections(), 1, "{:?}", up.seen());
}

#[tokio::test]
async fn an_answer_without_a_length_is_read_to_the_close() {
    let up = Scripted::start(vec![closing(&[b"HTTP/1.1 200 OK\r\nX-Up: 1\r\n\r\nto the ", b"end"])]).await;
    let h = shim_for(&up, "").await;
    for _ in 0..2 {
        let (status, _, body) = fetch(&h, reqwest::Method::GET, "/G2W/rest/close").await;
        assert_eq!((status, body.as_str()), (200, "to the end"));
    }
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let up = Scripted::start(vec![answer(&[
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\n",
        b"done",
    ])])
    .await;
    let h = shim_for(&up, "").await;
    let (status, _, body) = fetch(&h, reqwest::Method::GET, "/G2W/rest/interim").await;
    assert_eq!((status, body.as_str()), (201, "done"));
}

#[tokio::test]
async fn head_204_and_304_have_no_body_and_keep_the_connection() {
    let up = Scripted::start(vec![
        answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"]),
        answer(&[b"HTTP/1.1 204 No Content\r\n\r\n"]),
        answer(&[b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"]),
        answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]),
    ])
    .await;
    let h = shim_for(&up, "").await;
    let (status, headers, body) = fetch(&h, reqwest::Method::HEAD, "/G2W/rest/head").await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(headers["content-length"], "5");
    let (status, _, body) = fetch(&h, reqwest::Method::GET, "/G2W/rest/204").await;
    assert_eq!((status, body.as_str()), (204, ""));
    let (status, _, body) = fetch(&h, reqwest::Method::GET, "/G2W/rest/304").await;
    assert_eq!((status, body.as_str()), (304, ""));
    let (status, _, body) = fetch(&h, reqwest::Method::GET, "/G2W/rest/after").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(up.connections(), 1, "{:?}", up.seen());
}

#[tokio::test]
async fn a_connection_framed_two_ways_or_with_bytes_after_the_answer_is_not_reused() {
    let up = Scripted::start(vec![
        answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"]),
        answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra"]),
        answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]),
    ])
    .await;
    let h = shim_for(&up, "").await;
    for _ in 0..3 {
        let (status, headers, body) = fetch(&h, reqwest::Method::GET, "/G2W/rest/x").await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        assert_ne!(headers.get("content-length").map(|v| v.to_str().unwrap()), Some("99"));
    }
    let conns: Vec<usize> = up.seen().iter().map(|(c, _)| *c).collect();
    assert_eq!(conns, [0, 1, 2], "each of the first two answers retired its connection");
}

#[tokio::test]
async fn bad_answer_heads_are_502_without_echo() {
    // Past the limit, and past the 8 KiB hyper's client (a request with a body) reads at least.
    let long = [b'x'; 9000];
    let cases: [&[&[u8]]; 8] = [
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"],
        &[b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"],
        &[b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"],
        &[b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
        &[b"HTTP/1.1 2000 Canary-Upstream-Text\r\n\r\n"],
        &[b"SSH-2.0-Canary-Upstream-Text\r\n\r\n"],
        // A head that does not end within the limit.
        &[b"HTTP/1.1 200 OK\r\nX-Canary: ", &long, b"\r\n\r\n"],
        // Closed half-way through the head.
        &[b"HTTP/1.1 200 OK\r\nContent"],
    ];
    for (pieces, sent) in cases.iter().flat_map(|c| BODIES.map(|b| (c, b))) {
        let up = Scripted::start(vec![closing(pieces)]).await;
        let h = shim_for(&up, "max_response_header_bytes = 1024\n").await;
        let (status, _, body) = fetch_with(&h, reqwest::Method::POST, "/G2W/rest/bad", sent).await;
        let shown = format!("{sent:?}: {}", String::from_utf8_lossy(pieces[0]));
        assert_eq!(status, 502, "{shown}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "temporarily_unavailable", "{shown}");
        assert!(!body.contains("Canary") && !body.contains("xxxx"), "{body}");
    }
}

#[tokio::test]
async fn too_many_headers_or_an_oversized_head_are_502() {
    let many: String = (0..120).map(|i| format!("x-{i}: v\r\n")).collect();
    let big = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\nContent-Length: 0\r\n\r\n", "v".repeat(2000));
    for (raw, limit) in [(format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 0\r\n\r\n"), 65536), (big, 1024)]
    {
        let up = Scripted::start(vec![answer(&[raw.as_bytes()])]).await;
        let h = shim_for(&up, &format!("max_response_header_bytes = {limit}\n")).await;
        let (status, _, _) = fetch(&h, reqwest::Method::GET, "/G2W/rest/heavy").await;
        assert_eq!(status, 502);
    }
}

/// The length of a GET's whole answer body, or the error that cut it. (An answer cut short may
/// or may not have had its head forwarded before the connection was cut; it never completes.)
async fn body_len(h: &Harness, path: &str) -> Result<usize, reqwest::Error> {
    http().get(h.url(path)).send().await?.bytes().await.map(|b| b.len())
}

#[tokio::test]
async fn a_body_cut_short_ends_the_answer_with_an_error() {
    let cases: [&[u8]; 2] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhalf",
    ];
    for raw in cases {
        let up = Scripted::start(vec![closing(&[raw])]).await;
        let h = shim_for(&up, "").await;
        let outcome = body_len(&h, "/G2W/rest/short").await;
        assert!(outcome.is_err(), "{}: {outcome:?}", String::from_utf8_lossy(raw));
    }
}

#[tokio::test]
async fn a_malformed_chunk_ends_the_answer_with_an_error() {
    for raw in [&b"zz\r\nhello\r\n0\r\n\r\n"[..], b"5\r\nhelloXX0\r\n\r\n", b"5\nhello\r\n0\r\n\r\n"] {
        let up =
            Scripted::start(vec![answer(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", raw])])
                .await;
        let h = shim_for(&up, "").await;
        let outcome = body_len(&h, "/G2W/rest/chunks").await;
        assert!(outcome.is_err(), "{}: {outcome:?}", String::from_utf8_lossy(raw));
    }
}

#[tokio::test]
async fn the_token_call_reads_a_chunked_answer_and_sends_its_form_with_a_length() {
    let token = br#"{"access_token":"at-1","token_type":"Bearer","refresh_token":"rt-2","expires_in":3600,"organizer_key":"42","account_key":"7"}"#;
    let (a, b) = token.split_at(40);
    let sizes = (format!("{:x}\r\n", a.len()), format!("\r\n{:x}\r\n", b.len()));
    let up = Scripted::start(vec![answer(&[
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        sizes.0.as_bytes(),
        a,
        sizes.1.as_bytes(),
        b,
        b"\r\n0\r\n\r\n",
    ])])
    .await;
    // No cache: each call goes to the upstream.
    let toml = format!(
        "[upstream]\ntoken_url = \"http://{}/oauth/v2/token\"\n[refresh_cache]\nttl = \"0s\"\n",
        up.addr
    );
    let h = Harness::start(standin_config(), &toml).await;
    let url =
        h.url(&format!("/oauth/access_token?grant_type=refresh_token&refresh_token=rt-1&client_id={ID}"));
    for _ in 0..2 {
        let v = get_json(&url).await;
        assert_eq!(v["access_token"], "at-1", "{v}");
        assert_eq!(v["expires_in"], "3600");
    }
    let seen = up.seen();
    let head = seen[0].1.to_ascii_lowercase();
    assert!(head.starts_with("post /oauth/v2/token http/1.1\r\n"), "{head}");
    assert!(head.contains(&format!("host: {}\r\n", up.addr)), "{head}");
    assert!(head.contains("content-type: application/x-www-form-urlencoded\r\n"), "{head}");
    assert!(head.contains("content-length: "), "{head}");
    assert_eq!(up.connections(), 1, "the token calls shared one connection");
}

#[tokio::test]
async fn a_head_answer_with_conflicting_lengths_is_502_and_its_connection_closed() {
    for body in BODIES {
        let up = Scripted::start(vec![
            answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"]),
            answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"]),
            answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]),
        ])
        .await;
        let h = shim_for(&up, "").await;
        let (status, _, _) = fetch_with(&h, reqwest::Method::HEAD, "/G2W/rest/head", body).await;
        assert_eq!(status, 502, "{body:?}");
        // Both lengths on a HEAD answer: served without Content-Length, and not trusted again.
        let (status, headers, _) = fetch_with(&h, reqwest::Method::HEAD, "/G2W/rest/head", body).await;
        assert_eq!(status, 200, "{body:?}");
        assert!(headers.get("content-length").is_none(), "{body:?}: {headers:?}");
        let (status, _, text) = fetch(&h, reqwest::Method::GET, "/G2W/rest/after").await;
        assert_eq!((status, text.as_str()), (200, "ok"), "{body:?}");
        assert_eq!(up.connection_of_each(), [0, 1, 2], "{body:?}: neither HEAD answer's connection reused");
        up.closed_by_shim(0).await;
        up.closed_by_shim(1).await;
    }
}

#[tokio::test]
async fn a_304_with_conflicting_or_invalid_framing_is_502_and_its_connection_closed() {
    for body in BODIES {
        let up = Scripted::start(vec![
            answer(&[b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"]),
            answer(&[b"HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n"]),
            answer(&[
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            ]),
            answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]),
        ])
        .await;
        let h = shim_for(&up, "").await;
        for _ in 0..2 {
            let (status, _, _) = fetch_with(&h, reqwest::Method::POST, "/G2W/rest/304", body).await;
            assert_eq!(status, 502, "{body:?}");
        }
        // Both lengths: served without Content-Length, and not trusted again.
        let (status, headers, _) = fetch_with(&h, reqwest::Method::POST, "/G2W/rest/304", body).await;
        assert_eq!(status, 304, "{body:?}");
        assert!(headers.get("content-length").is_none(), "{body:?}: {headers:?}");
        let (status, _, text) = fetch(&h, reqwest::Method::GET, "/G2W/rest/after").await;
        assert_eq!((status, text.as_str()), (200, "ok"), "{body:?}");
        assert_eq!(up.connection_of_each(), [0, 1, 2, 3], "{body:?}: no 304's connection reused");
        for conn in 0..3 {
            up.closed_by_shim(conn).await;
        }
    }
}

#[tokio::test]
async fn content_length_beside_chunked_is_dropped_and_the_connection_closed() {
    for body in BODIES {
        let up = Scripted::start(vec![
            answer(&[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
                b"5\r\nhello\r\n0\r\n\r\n",
            ]),
            answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]),
        ])
        .await;
        let h = shim_for(&up, "").await;
        let (status, headers, text) = fetch_with(&h, reqwest::Method::POST, "/G2W/rest/te", body).await;
        assert_eq!((status, text.as_str()), (200, "hello"), "{body:?}: the whole body, not 2 bytes");
        assert!(headers.get("content-length").is_none(), "{body:?}: {headers:?}");
        let (status, _, text) = fetch(&h, reqwest::Method::GET, "/G2W/rest/after").await;
        assert_eq!((status, text.as_str()), (200, "ok"), "{body:?}");
        assert_eq!(up.connection_of_each(), [0, 1], "{body:?}: framed two ways, not reused");
        up.closed_by_shim(0).await;
    }
}

#[tokio::test]
async fn content_length_never_frames_an_answer_that_has_a_transfer_encoding() {
    for body in BODIES {
        let up = Scripted::start(vec![closing(&[
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\nContent-Length: 2\r\n\r\n",
            b"hello ",
            b"world",
        ])])
        .await;
        let h = shim_for(&up, "").await;
        let (status, headers, text) = fetch_with(&h, reqwest::Method::POST, "/G2W/rest/xchunked", body).await;
        assert_eq!((status, text.as_str()), (200, "hello world"), "{body:?}: read to the close, not 2 bytes");
        assert!(headers.get("content-length").is_none(), "{body:?}: {headers:?}");
    }
}

#[tokio::test]
async fn http_1_0_keep_alive_with_close_is_not_reused() {
    let up = Scripted::start(vec![answer(&[
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nok",
    ])])
    .await;
    let h = shim_for(&up, "").await;
    for _ in 0..2 {
        let (status, _, body) = fetch(&h, reqwest::Method::GET, "/G2W/rest/10").await;
        assert_eq!((status, body.as_str()), (200, "ok"));
    }
    assert_eq!(up.connections(), 2, "{:?}", up.seen());
}

#[tokio::test]
async fn bare_cr_in_a_chunk_extension_or_a_malformed_trailer_ends_the_answer_with_an_error() {
    for raw in [&b"5;a\rb\r\nhello\r\n0\r\n\r\n"[..], b"5\r\nhello\r\n0\r\nnot a field\r\n\r\n"] {
        let up =
            Scripted::start(vec![answer(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", raw])])
                .await;
        let h = shim_for(&up, "").await;
        let outcome = body_len(&h, "/G2W/rest/chunks").await;
        assert!(outcome.is_err(), "{}: {outcome:?}", String::from_utf8_lossy(raw));
    }
}
