//! Parked HTTP/1.1 connections (`[server] park_after`): an idle keep-alive connection gives
//! back hyper's buffers and waits on its bare socket; its next request, whole, split across the
//! park, or pipelined, is answered as on a connection that was never parked.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Read one response with a `Content-Length` body; its head, lowercased, and its body.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (String, String) {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            buf.drain(..end + 4 + len);
            return (head, body);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "the connection closed: {}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Wait (bounded) until `n` connections are parked.
async fn parked(h: &Harness, n: i64) {
    for _ in 0..500 {
        if h.app.state().ops.metrics.parked_now() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} connections parked, not {n}", h.app.state().ops.metrics.parked_now());
}

/// A pass-through request the stand-in answers with a 404 that names its path.
const GET: &[u8] = b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n";

/// Whether a response is the stand-in's answer to `path`, on a connection kept open.
fn answered(head: &str, body: &str, path: &str) -> bool {
    head.starts_with("http/1.1 404") && !head.contains("connection: close") && body.contains(path)
}

#[tokio::test]
async fn an_idle_connection_is_parked_and_answers_its_next_request() {
    let h = Harness::start(standin_config(), "[server]\npark_after = \"0s\"\n").await;
    let mut s = TcpStream::connect(h.proxy_addr()).await.unwrap();
    let mut buf = Vec::new();
    for round in 0..3 {
        s.write_all(GET).await.unwrap();
        let (head, body) = read_response(&mut s, &mut buf).await;
        assert!(answered(&head, &body, "/api/a"), "round {round}: {head}\n{body}");
        parked(&h, 1).await;
    }
    drop(s);
    parked(&h, 0).await;
}

#[tokio::test]
async fn a_request_split_across_the_park_is_read_whole() {
    let h = Harness::start(standin_config(), "[server]\npark_after = \"0s\"\n").await;
    let mut s = TcpStream::connect(h.proxy_addr()).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(GET).await.unwrap();
    read_response(&mut s, &mut buf).await;
    parked(&h, 1).await;
    // Half a head wakes the parked connection; hyper reads it and waits for the rest (the
    // connection is not parked again while it holds part of a request).
    let (first, rest) = GET.split_at(17);
    s.write_all(first).await.unwrap();
    parked(&h, 0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(rest).await.unwrap();
    let (head, body) = read_response(&mut s, &mut buf).await;
    assert!(answered(&head, &body, "/api/a"), "{head}\n{body}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_around_parks() {
    let h = Harness::start(standin_config(), "[server]\npark_after = \"0s\"\n").await;
    let mut s = TcpStream::connect(h.proxy_addr()).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(GET).await.unwrap();
    read_response(&mut s, &mut buf).await;
    parked(&h, 1).await;
    let two = b"GET /api/one HTTP/1.1\r\nHost: x\r\n\r\nGET /api/two HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(two).await.unwrap();
    let (a, body_a) = read_response(&mut s, &mut buf).await;
    let (b, body_b) = read_response(&mut s, &mut buf).await;
    assert!(answered(&a, &body_a, "/api/one"), "{a}\n{body_a}");
    assert!(answered(&b, &body_b, "/api/two"), "{b}\n{body_b}");
}

/// The default `park_after` parks a connection left idle.
#[tokio::test]
async fn the_default_parks_an_idle_connection() {
    let h = Harness::default().await;
    let mut s = TcpStream::connect(h.proxy_addr()).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(GET).await.unwrap();
    read_response(&mut s, &mut buf).await;
    parked(&h, 1).await;
    s.write_all(GET).await.unwrap();
    let (head, body) = read_response(&mut s, &mut buf).await;
    assert!(answered(&head, &body, "/api/a"), "{head}\n{body}");
}
