//! Raw HTTP/1 on both sides: exchanges written and read as bytes, a generated body, a raw
//! upstream that records request lines, and a process's memory figures.

use std::net::SocketAddr;

/// A raw HTTP/1 exchange: write `request` as is, read until the server closes (at most 10 s).
/// Returns everything read, lossily decoded. Use `Connection: close` (or a request the server
/// refuses) so the server closes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw exchange's output (0 when there is none).
pub fn raw_status(raw: &str) -> u16 {
    raw.strip_prefix("HTTP/1.1 ").and_then(|s| s.get(..3)).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A generated body of `len` bytes in 64 KiB frames, never held in memory as a whole.
pub struct Generated {
    pub remaining: u64,
    chunk: bytes::Bytes,
}

impl Generated {
    pub fn new(len: u64) -> Self {
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        Self { remaining: len, chunk: chunk.into() }
    }
}

impl http_body::Body for Generated {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }
}

/// Memory figures of a process from `/proc/<pid>/status`, in KiB: (VmRSS, VmHWM).
pub fn proc_memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Read one request head from a raw upstream connection, as text. `buf` carries bytes read past
/// the head (a body, or the next request) from one call to the next. `None` once the peer has
/// closed (or the read failed).
pub async fn read_request_head(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    Some(head)
}

/// One request from `stream`: its head (as [`read_request_head`] reads it) and its
/// `Content-Length` body; `None` once the connection ends.
pub async fn read_request(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let head = read_request_head(stream, buf).await?;
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut chunk = [0u8; 4096];
    while buf.len() < len {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some((head, buf.drain(..len).collect()))
}

/// A raw HTTP/1.1 upstream on 127.0.0.1:0: reads each request (head and `Content-Length`
/// body), records its request line with the index of the connection it came on, and answers
/// with what `answer` makes of the path.
pub struct RawUpstream {
    pub addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(usize, String)>>>,
}

impl RawUpstream {
    pub async fn start(answer: fn(&str) -> String) -> Self {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: std::sync::Arc<std::sync::Mutex<Vec<(usize, String)>>> = std::sync::Arc::default();
        let log = std::sync::Arc::clone(&seen);
        tokio::spawn(async move {
            for conn in 0.. {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let log = std::sync::Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some((head, _body)) = read_request(&mut stream, &mut buf).await {
                        let line = head.lines().next().unwrap_or_default().to_owned();
                        let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                        log.lock().unwrap().push((conn, line));
                        if stream.write_all(answer(&path).as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, seen }
    }

    pub fn seen(&self) -> Vec<(usize, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// A `200 OK` answer with `body` as JSON.
pub fn json_answer(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}
