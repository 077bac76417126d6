//! What a parked HTTP/1.1 keep-alive connection keeps on the heap, counted by dhat's global
//! allocator (its own test binary, so no other test's allocations are counted). Parking gives
//! back hyper's read buffer (8 KiB once a request has been read) and write buffer; what stays
//! is the connection's task and socket registration. Counted in bytes allocated and not freed,
//! so no timing is asserted: the test waits (bounded) until every connection is parked.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use oauth_shim::app::App;
use oauth_shim::config::Config;
use oauth_shim::server;
use oauth_shim::snapshot::Snapshot;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Connections held parked at once.
const HELD: usize = 200;

/// A parked connection may keep at most this many heap bytes: a quarter of hyper's 8 KiB read
/// buffer, so holding on to that buffer (or its write buffer) fails the test.
const PARKED_MAX: usize = 2048;

/// One pass-through request on a new connection, answered in full and left open.
fn one_request(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /G2W/rest/v2/held HTTP/1.1\r\nHost: x\r\nUser-Agent: heap-probe/1\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the answer was read");
        got.extend_from_slice(&chunk[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + len {
                assert!(!head.contains("connection: close"), "{head}");
                return s;
            }
        }
    }
}

/// An upstream that answers every request with a small 200 and keeps nothing of it (the v2
/// stand-in records requests, which would be counted here).
async fn upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(
                        b"{}",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Wait (bounded) until `n` connections are parked.
async fn parked(app: &App, n: i64) {
    for _ in 0..1000 {
        if app.state().ops.metrics.parked_now() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} connections parked, not {n}", app.state().ops.metrics.parked_now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_keeps_neither_of_hypers_buffers() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let up = upstream().await;
    let toml = format!(
        "[server]\npark_after = \"0s\"\n[admin]\nenabled = false\n[upstream]\n\
         token_url = \"http://{up}/oauth/v2/token\"\nauthorize_url = \"http://{up}/oauth/v2/authorize\"\n\
         api_base = \"http://{up}\"\n[migration]\ndir = \"{}\"\n[log]\nlevel = \"warn\"\n",
        std::env::temp_dir().join(format!("park-heap-{}", std::process::id())).display(),
    );
    let path = std::env::temp_dir().join(format!("park-heap-{}.toml", std::process::id()));
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path).unwrap();
    let app = App::new(Snapshot::new(config).unwrap());
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shim = server::start_on(app.clone(), proxy, None).unwrap();
    let addr = shim.proxy_addr;

    // Warm up what every request shares (the upstream pool, the metric series, the migration
    // record's entry), then count from a parked first connection.
    let first = tokio::task::spawn_blocking(move || one_request(addr)).await.unwrap();
    parked(&app, 1).await;
    let mut held = Vec::with_capacity(HELD);
    let before = dhat::HeapStats::get().curr_bytes;
    held = tokio::task::spawn_blocking(move || {
        held.extend((0..HELD).map(|_| one_request(addr)));
        held
    })
    .await
    .unwrap();
    parked(&app, 1 + HELD as i64).await;
    let after = dhat::HeapStats::get().curr_bytes;
    let per_connection = after.saturating_sub(before) / HELD;
    eprintln!("heap per parked connection: {per_connection} bytes");
    assert!(per_connection <= PARKED_MAX, "a parked connection keeps {per_connection} heap bytes");
    drop((held, first));
    let _ = std::fs::remove_file(&path);
}
