//! The front door: limits and their status codes, framing attacks, timeouts, the connection
//! limit, the admin port, and graceful shutdown of the real binary on SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::passthrough::Echo;
use crate::support::*;

async fn harness(echo: &Echo, extra: &str) -> Harness {
    Harness::start(standin_config(), &format!("{}{extra}", echo.toml())).await
}

/// Read one HTTP/1.1 response (with `Content-Length`) from a kept-alive connection; `None` when
/// the server closed first. Bounded to 10 s.
async fn read_response(s: &mut TcpStream) -> Option<(u16, String, String)> {
    let read = async {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let len = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.ok()?;
        Some((raw_status(&head), head, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.ok().flatten()
}

/// True when the server closes `s` (EOF or reset) within 10 s without sending anything.
async fn closed_without_answer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

/// A kept-alive connection that proves the proxy still serves others.
async fn keep_alive_probe(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /probe HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut s).await.map(|r| r.0), Some(200));
    s
}

async fn probe_again(s: &mut TcpStream) {
    s.write_all(b"GET /probe HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(s).await.map(|r| r.0), Some(200), "the other connection is unaffected");
}

#[tokio::test]
async fn oversized_head_gets_431_and_long_uri_414() {
    let echo = Echo::start().await;
    let h = harness(&echo, "[server]\nmax_header_bytes = 16384\nmax_uri_bytes = 2048\n").await;
    let mut other = keep_alive_probe(h.proxy_addr()).await;

    let big = "a".repeat(20 * 1024);
    let raw = raw_exchange(
        h.proxy_addr(),
        format!("GET /api HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&raw), 431, "{raw}");

    let long = "p".repeat(3000);
    let raw =
        raw_exchange(h.proxy_addr(), format!("GET /api?{long} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await;
    assert_eq!(raw_status(&raw), 414, "{raw}");
    assert!(raw.contains("\"error\":\"invalid_request\""), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("connection: close"), "{raw}");
    // Within the limits, the same shapes pass.
    let ok = raw_exchange(
        h.proxy_addr(),
        format!(
            "GET /api?{} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            &long[..1500],
            &big[..8000]
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&ok), 200, "{ok}");
    assert_eq!(
        echo.seen().iter().filter(|s| s.path == "/api").count(),
        1,
        "refused ones never reach upstream"
    );
    probe_again(&mut other).await;
}

#[tokio::test]
async fn token_body_limit_gets_413_before_and_while_reading() {
    let echo = Echo::start().await;
    let h = harness(&echo, "[server]\nmax_body_bytes = 1024\n").await;
    // Declared too large: answered from the head alone, no body sent at all.
    let mut s = TcpStream::connect(h.proxy_addr()).await.unwrap();
    s.write_all(
        b"POST /oauth/access_token HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1048576\r\n\r\n",
    )
    .await
    .unwrap();
    let (status, _, body) = read_response(&mut s).await.expect("answered before the body was sent");
    assert_eq!(status, 413);
    assert!(body.contains("invalid_request"), "{body}");

    // Chunked with no declared length: cut off while reading.
    let chunk = "a".repeat(600);
    let req = format!(
        "POST /oauth/access_token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n\
         258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let raw = raw_exchange(h.proxy_addr(), req.as_bytes()).await;
    assert_eq!(raw_status(&raw), 413, "{raw}");
    assert_eq!(h.standin.token_calls(), 0);
}

/// Each framing attack on its own connection: refused (or, for CL+TE, neutralised), never
/// reaching the upstream as two requests, and another kept-alive connection unaffected.
#[tokio::test]
async fn framing_attacks_are_refused_without_affecting_others() {
    let echo = Echo::start().await;
    let h = harness(&echo, "").await;
    let mut other = keep_alive_probe(h.proxy_addr()).await;
    let refused: [(&str, u16); 8] = [
        // Differing duplicate Content-Length (hyper).
        ("Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
        // Not a plain decimal length (hyper).
        ("Content-Length: 5, 5\r\n\r\nhello", 400),
        ("Content-Length: +5\r\n\r\nhello", 400),
        // A last coding other than chunked (hyper).
        ("Transfer-Encoding: gzip\r\n\r\nhello", 400),
        ("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
        ("Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
        // Unknown coding before chunked (ours: 501), chunked twice (ours: 400).
        ("Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501),
        ("Transfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    ];
    for (rest, want) in refused {
        let req = format!(
            "POST /api/framing HTTP/1.1\r\nHost: x\r\n{rest}GET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let raw = raw_exchange(h.proxy_addr(), req.as_bytes()).await;
        assert_eq!(raw_status(&raw), want, "{rest:?}: {raw}");
        assert_eq!(raw.matches("HTTP/1.1 ").count(), 1, "{rest:?}: one answer, then close: {raw}");
        probe_again(&mut other).await;
    }
    // Transfer-Encoding on HTTP/1.0 (hyper).
    let raw = raw_exchange(
        h.proxy_addr(),
        b"POST /api/framing HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&raw.replace("HTTP/1.0", "HTTP/1.1")), 400, "{raw}");

    assert!(echo.seen().iter().all(|s| s.path == "/probe"), "nothing refused reached the upstream");

    // Content-Length with Transfer-Encoding, both orders (CL.TE / TE.CL smuggling): hyper
    // frames by chunked, drops Content-Length and closes after one answer, so the smuggled
    // request is never parsed and the upstream sees one request with no Content-Length.
    for framing in [
        "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
    ] {
        let req = format!(
            "POST /api/clte HTTP/1.1\r\nHost: x\r\n{framing}\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let raw = raw_exchange(h.proxy_addr(), req.as_bytes()).await;
        assert_eq!(raw.matches("HTTP/1.1 ").count(), 1, "one answer, then close: {raw}");
        probe_again(&mut other).await;
    }
    let seen: Vec<_> = echo.seen().into_iter().filter(|s| s.path != "/probe").collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert_eq!(s.path, "/api/clte");
        assert!(s.body.is_empty());
        assert!(!s.headers.contains_key("content-length"), "{:?}", s.headers);
    }
}

#[tokio::test]
async fn slow_clients_are_cut_off_by_the_header_timeout() {
    let echo = Echo::start().await;
    let h = harness(&echo, "[server]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"60s\"\n").await;
    // Half a head, then silence.
    let mut slow = TcpStream::connect(h.proxy_addr()).await.unwrap();
    slow.write_all(b"GET /api/slow HTTP/1.1\r\nHost: x\r\nX-Partial: ").await.unwrap();
    // Connected, nothing sent (would otherwise sit in hyper's h1/h2 sniffing forever).
    let mut silent = TcpStream::connect(h.proxy_addr()).await.unwrap();
    // Half an HTTP/2 preface.
    let mut h2_slow = TcpStream::connect(h.proxy_addr()).await.unwrap();
    h2_slow.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(closed_without_answer(&mut slow).await);
    assert!(closed_without_answer(&mut silent).await);
    assert!(closed_without_answer(&mut h2_slow).await);
    assert!(echo.seen().is_empty());
    // A prompt client is served.
    let raw =
        raw_exchange(h.proxy_addr(), b"GET /api/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(raw_status(&raw), 200);
}

#[tokio::test]
async fn a_slow_second_request_on_a_kept_alive_connection_is_cut_off() {
    let echo = Echo::start().await;
    let h = harness(&echo, "[server]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"60s\"\n").await;
    let mut s = TcpStream::connect(h.proxy_addr()).await.unwrap();
    s.write_all(b"GET /api/first HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut s).await.map(|r| r.0), Some(200));
    // The next head starts, then stalls: header_read_timeout applies, not the 60 s idle limit.
    s.write_all(b"GET /api/second HTTP/1.1\r\nHost: x\r\nX-Partial: ").await.unwrap();
    assert!(closed_without_answer(&mut s).await, "slow second head cut off");
    assert_eq!(echo.seen().len(), 1);
}

#[tokio::test]
async fn idle_keep_alive_connections_close_but_busy_ones_do_not() {
    let echo = Echo::start().await;
    let h = harness(&echo, "[server]\nheader_read_timeout = \"30s\"\nidle_timeout = \"300ms\"\n").await;
    // HTTP/1.1: served, kept alive, then closed once idle.
    let mut s = TcpStream::connect(h.proxy_addr()).await.unwrap();
    // A request slower than idle_timeout is in flight, not idle.
    s.write_all(b"GET /slow/900 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut s).await.map(|r| r.0), Some(200));
    s.write_all(b"GET /api/second HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut s).await.map(|r| r.0), Some(200), "still kept alive");
    assert!(closed_without_answer(&mut s).await, "idle h1 connection closed");

    // HTTP/2: the connection ends (GOAWAY) once idle.
    let tcp = TcpStream::connect(h.proxy_addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get(h.url("/slow/900")).body(Empty::<Bytes>::new()).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "idle h2 connection closed by the server");
}

#[tokio::test]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let echo = Echo::start().await;
    let h = harness(&echo, "[server]\nmax_connections = 1\n").await;
    let first = keep_alive_probe(h.proxy_addr()).await;
    let mut second = TcpStream::connect(h.proxy_addr()).await.unwrap();
    second.write_all(b"GET /api/second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    let early = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
    assert!(early.is_err(), "second connection is not served while the first holds the only slot");
    assert!(!echo.seen().iter().any(|s| s.path == "/api/second"));
    drop(first);
    assert_eq!(read_response(&mut second).await.map(|r| r.0), Some(200), "served once the slot frees");
}

#[tokio::test]
async fn admin_connections_over_the_limit_wait_for_a_free_slot() {
    let echo = Echo::start().await;
    let h = harness(&echo, "[admin]\nmax_connections = 1\n").await;
    let admin = h.shim.admin_addr.unwrap();
    let mut first = TcpStream::connect(admin).await.unwrap();
    first.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut first).await.map(|r| r.0), Some(200));
    let mut second = TcpStream::connect(admin).await.unwrap();
    second.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    let early = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
    assert!(early.is_err(), "second admin connection is not served while the first holds the only slot");
    // The proxy port is not affected.
    assert_eq!(
        raw_status(
            &raw_exchange(h.proxy_addr(), b"GET /api/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
        ),
        200
    );
    drop(first);
    assert_eq!(read_response(&mut second).await.map(|r| r.0), Some(200), "served once the slot frees");
}

#[tokio::test]
async fn admin_port_is_separate() {
    let echo = Echo::start().await;
    let h = harness(&echo, "").await;
    let get = |url: String| async move {
        let r = http().get(url).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    };
    assert_eq!(get(h.admin_url("/healthz")).await, (StatusCode::OK, "ok\n".into()));
    assert_eq!(get(h.admin_url("/readyz")).await, (StatusCode::OK, "ready\n".into()));
    assert_eq!(get(h.admin_url("/api/x")).await.0, StatusCode::NOT_FOUND);
    let post = http().post(h.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    // On the proxy port the same paths are API paths, passed through.
    assert_eq!(get(h.url("/healthz")).await.0, StatusCode::OK);
    assert_eq!(echo.seen().pop().unwrap().path, "/healthz");
    assert!(echo.seen().iter().all(|s| s.path != "/readyz"));
}

#[tokio::test]
async fn shutdown_grace_caps_the_drain() {
    let echo = Echo::start().await;
    let h = harness(&echo, "[server]\nshutdown_grace = \"300ms\"\n").await;
    let url = h.url("/hold");
    let pending = tokio::spawn(async move { http().get(url).send().await });
    echo.wait_for(1).await;
    let Harness { shim, app, .. } = h;
    shim.shutdown();
    assert!(tokio::time::timeout(Duration::from_secs(10), shim.wait()).await.is_ok(), "drain gave up");
    assert!(app.is_draining());
    drop(app);
    echo.release();
    let _ = pending.await;
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let echo = Echo::start().await;
    let mut shim = ShimProcess::against(&echo.base()).await;
    let admin = format!("http://{}", shim.admin);
    assert_eq!(http().get(format!("{admin}/readyz")).send().await.unwrap().status(), 200);

    let url = format!("http://{}/hold?access_token=canary-query-value", shim.proxy);
    let in_flight = tokio::spawn(async move {
        let r = http().get(url).header("authorization", "Bearer canary-bearer-value").send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    });
    echo.wait_for(1).await;
    shim.signal("TERM");

    // Draining: readiness is false, the proxy port refuses new connections.
    let mut ready = StatusCode::OK;
    poll_until(async || {
        let r = http().get(format!("{admin}/readyz")).send().await;
        ready = r.unwrap_or_else(|e| panic!("{e}: {}", shim.log())).status();
        ready != StatusCode::OK
    })
    .await;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(http().get(format!("{admin}/healthz")).send().await.unwrap().status(), 200);
    let refused = poll_until(async || TcpStream::connect(shim.proxy).await.is_err()).await;
    assert!(refused, "new connections are refused while draining");
    assert!(!in_flight.is_finished());

    // The in-flight request completes, then the process exits 0.
    echo.release();
    assert_eq!(in_flight.await.unwrap(), (StatusCode::OK, "released".to_owned()));
    let status = shim.wait().await;
    assert_eq!(status.code(), Some(0), "{}", shim.log());

    let log = shim.log();
    assert!(log.contains("\"route\":\"pass\""), "the request was logged: {log}");
    assert!(!log.contains("canary"), "no Authorization value or query string in the log: {log}");
}
