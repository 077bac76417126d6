//! One proxy connection, from accept to close: the protocol chosen by peeking for the HTTP/2
//! preface (nothing is consumed, so hyper's HTTP/1 read buffer stays at its initial size), the
//! HTTP/1 and HTTP/2 settings, and a watchdog that enforces the time limits with no timer per
//! request: a deadline for the *first* request, the HTTP/1 header-read timeout between
//! requests, and the idle keep-alive timeout for both protocols. "Idle" means no request in
//! flight, counted from when the last response body finished. hyper enforces the head-size
//! limit (431/414).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{HttpService, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};

use super::activity::{Activity, InFlight, idle_deadline, park_deadline};
use super::future::{Respond, Tracked};
use super::park;
use crate::app::App;
use crate::config::ServerConfig;

/// The HTTP/1 and HTTP/2 connection settings, built once and shared by every connection.
pub(super) struct Protocols {
    pub(super) h1: http1::Builder,
    pub(super) h2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    pub(super) fn new(cfg: &ServerConfig) -> Self {
        let mut h1 = http1::Builder::new();
        // hyper's own header_read_timeout is off: it allocates, arms and drops a timer for every
        // request. The watchdog enforces the same limit per connection (see `Conn::run`). The
        // read buffer may not grow past max_buf_size while a head is incomplete: larger heads
        // get 431. `writev(false)`: a small answer's head and body leave in one buffer, one
        // `send` instead of a two-part `writev` (cheaper in the kernel; see BENCHMARKS.md).
        // `half_close(true)`: while a request is being answered hyper does not poll the client
        // for EOF, which made it allocate a fresh 8 KiB read buffer for every request (the old
        // one is still shared by the request being served). A client that closes its side
        // early still gets its answer; one that went away is noticed when the answer is
        // written, and the upstream call runs to its answer or `request_timeout` meanwhile.
        h1.timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(cfg.max_header_bytes)
            .writev(false)
            .half_close(true)
            .keep_alive(true);
        // SETTINGS_MAX_CONCURRENT_STREAMS from the config (Envoy's edge guidance: 100). hyper's
        // defaults stay for the rest: at most 20 streams reset by the client before they were
        // answered (rapid reset, CVE-2023-44487), 1024 reset locally for protocol errors; and h2
        // writes each SETTINGS acknowledgement before it reads another frame, so a SETTINGS
        // flood from a peer that does not read is held back by its own socket.
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(cfg.http2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX));
        Self { h1, h2 }
    }
}

/// The HTTP/2 prior-knowledge connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a new connection opens with the HTTP/2 preface, decided by peeking at its first
/// bytes without consuming them. (hyper-util's `auto` builder reads them instead and replays
/// them through a wrapper; hyper's HTTP/1 reader then grows its 8 KiB read buffer to 16 KiB on
/// the very first request, which every idle keep-alive connection keeps.) `None` when the
/// peer closes or sends nothing within `patience`.
async fn sniff_h2(stream: &TcpStream, patience: Duration) -> Option<bool> {
    let sniff = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n] != H2_PREFACE[..n] {
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            // Part of the preface so far: peeking again at once would spin on the same bytes.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(patience, sniff).await.ok().flatten()
}

/// One accepted connection and what it needs.
pub(super) struct Conn {
    pub(super) app: App,
    pub(super) protocols: Arc<Protocols>,
    pub(super) first_request_timeout: Duration,
    pub(super) idle_timeout: Duration,
    /// An HTTP/1.1 connection idle this long is parked (see `park.rs`).
    pub(super) park_after: Duration,
    pub(super) drain: watch::Receiver<bool>,
    /// Released when the connection ends, admitting the next one.
    pub(super) _permit: Option<OwnedSemaphorePermit>,
    /// Keeps the open-connections gauge up while the connection lives.
    pub(super) _open: crate::ops::metrics::GaugeGuard,
}

impl Conn {
    /// Serve the connection to its end. An async block, not an `async fn`: an async fn's state
    /// keeps its arguments twice (rust-lang/rust#62958), and this state is what every parked
    /// connection costs.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn run(mut self, stream: TcpStream, peer: SocketAddr) -> impl Future<Output = ()> + Send {
        async move {
            let activity = Arc::new(Activity::new());
            let app = self.app.clone();
            let counted = activity.clone();
            // The request's handling is boxed (once, by the app): hyper's HTTP/1 dispatcher keeps a
            // slot the size of the service's future for the connection's whole life, and unboxed
            // (~4 KiB) that costs every idle keep-alive connection its size (+35 MiB for 5,000 held
            // connections in the load bench). `Respond` is that box and the in-flight guard.
            let svc = service_fn(move |req: Request<Incoming>| {
                let guard = InFlight::start(counted.clone());
                Respond { handling: app.handle(req, peer), guard: Some(guard) }
            });
            let first = self.first_request_timeout;
            let (conn, idle): (Pin<Box<dyn Served>>, _) = match sniff_h2(&stream, first).await {
                // Nothing (or not even a preface) within the first-request deadline: close.
                None => return,
                // HTTP/1.1 between requests: the next head must be complete within
                // header_read_timeout (a slow head and an idle connection look the same from here,
                // and hyper's own header timer would close both), so the smaller limit applies.
                Some(false) => {
                    let idle = self.idle_timeout.min(first);
                    return self.serve_h1(stream, svc, &activity, idle).await;
                }
                Some(true) => (
                    Box::pin(self.protocols.h2.serve_connection(TokioIo::new(stream), svc)),
                    self.idle_timeout,
                ),
            };
            self.drive(conn, &activity, idle, false).await;
        }
    }

    /// HTTP/1.1: hyper serves the connection; whenever it has been idle for `park_after`, it is
    /// parked (see `park.rs`) until the client sends again, within the idle limit and until a
    /// drain. (An async block for the reason `run` is one.)
    #[allow(clippy::manual_async_fn)]
    fn serve_h1<'a, S>(
        &'a mut self,
        mut stream: TcpStream,
        mut svc: S,
        activity: &'a Arc<Activity>,
        idle: Duration,
    ) -> impl Future<Output = ()> + Send + 'a
    where
        S: HttpService<Incoming, ResBody = Tracked, Error = Infallible> + Unpin + Send + 'a,
        S::Future: Unpin + Send + 'static,
    {
        async move {
            let mut ahead = Bytes::new();
            loop {
                let io = park::Io::new(stream, ahead, Arc::clone(activity));
                let conn = Box::new(self.protocols.h1.serve_connection(io, svc));
                // Boxed: its state (the pinned timer and the drain future) is held only while
                // the connection is served, not while it is parked.
                let Some(parts) = Box::pin(self.drive_h1(conn, activity, idle)).await else { return };
                (stream, svc, ahead) = take_apart(parts);
                if ahead.is_empty() && !self.wait_parked(&stream, activity, idle).await {
                    return;
                }
            }
        }
    }

    /// Run an HTTP/1.1 connection until it ends (`None`) or is parked: then its parts, with
    /// hyper's buffers gone once they are dropped.
    async fn drive_h1<S>(
        &mut self,
        mut conn: Box<http1::Connection<park::Io, S>>,
        activity: &Activity,
        idle: Duration,
    ) -> Option<http1::Parts<park::Io, S>>
    where
        S: HttpService<Incoming, ResBody = Tracked, Error = Infallible> + Unpin,
        S::Future: Unpin + 'static,
    {
        let first = self.first_request_timeout;
        let park_after = self.park_after;
        let mut probe = self.drain.clone();
        let mut drain = std::pin::pin!(self.drain.wait_for(|d| *d));
        let mut timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let (mut drain_polled, mut timer_polled) = (false, false);
        let mut seen_finished = 0;
        // Set once the connection is told to stop: `Some(true)` to park, `Some(false)` to close.
        let mut stopping: Option<bool> = None;
        let parked = std::future::poll_fn(|cx| {
            loop {
                if let Poll::Ready(res) = conn.poll_without_shutdown(cx) {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "connection ended with an error");
                        return Poll::Ready(false);
                    }
                    return Poll::Ready(stopping == Some(true));
                }
                if stopping.is_some() {
                    return Poll::Pending;
                }
                if !drain_polled || probe.has_changed().unwrap_or(true) {
                    drain_polled = true;
                    probe.borrow_and_update();
                    if drain.as_mut().poll(cx).is_ready() {
                        Pin::new(&mut *conn).graceful_shutdown();
                        stopping = Some(false);
                        continue;
                    }
                }
                // The deadlines are looked at again when the timer fires, and when a response
                // finishes if the park it makes due comes before the timer (once per
                // `park_after` on a busy connection: later parks wait for the timer).
                let finished = activity.finished();
                if timer_polled && !timer.is_elapsed() {
                    let sooner = finished != seen_finished
                        && park_deadline(activity, park_after).is_some_and(|at| at < timer.deadline());
                    seen_finished = finished;
                    if !sooner {
                        return Poll::Pending;
                    }
                }
                seen_finished = finished;
                let Some(close_at) = idle_deadline(activity, first, idle) else {
                    // Nothing in flight for the idle limit: closed (see `drive`).
                    tracing::debug!("closing idle connection");
                    return Poll::Ready(false);
                };
                match park_deadline(activity, park_after) {
                    Some(at) if at <= tokio::time::Instant::now() => {
                        // hyper is between requests: closing it now answers nothing with
                        // `Connection: close`, and hands back what it read of the next one.
                        Pin::new(&mut *conn).graceful_shutdown();
                        stopping = Some(true);
                        continue;
                    }
                    Some(at) => timer.as_mut().reset(at.min(close_at)),
                    None => timer.as_mut().reset(close_at),
                }
                timer_polled = true;
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        })
        .await;
        parked.then(|| conn.into_parts())
    }

    /// Wait, holding no buffer, until a parked connection's client sends again (`true`), or
    /// until the idle limit passes or the server drains (`false`: close it).
    async fn wait_parked(&mut self, stream: &TcpStream, activity: &Activity, idle: Duration) -> bool {
        let Some(close_at) = idle_deadline(activity, self.first_request_timeout, idle) else { return false };
        let _parked = self.app.state().ops.metrics.connection_parked();
        // Polled by hand: readiness needs no future of its own (`readable()` is 152 bytes of
        // every parked connection's state).
        let mut close = std::pin::pin!(tokio::time::sleep_until(close_at));
        let mut drain = std::pin::pin!(self.drain.wait_for(|d| *d));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(ready) = stream.poll_read_ready(cx) {
                return Poll::Ready(ready.is_ok());
            }
            if drain.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            if close.as_mut().poll(cx).is_ready() {
                tracing::debug!("closing idle connection");
                return Poll::Ready(false);
            }
            Poll::Pending
        })
        .await
    }

    /// Run a connection until it ends, closing it gracefully on drain or when idle.
    ///
    /// The connection is polled on every wake-up; the drain signal and the idle timer only when
    /// they may have fired (a version check, an `is_elapsed`), not on each of the several
    /// wake-ups every request causes: once polled, both keep the task's waker registered.
    pub(super) async fn drive(
        &mut self,
        mut conn: Pin<Box<dyn Served>>,
        activity: &Activity,
        idle: Duration,
        h1: bool,
    ) {
        let first = self.first_request_timeout;
        let mut probe = self.drain.clone();
        let mut drain = std::pin::pin!(self.drain.wait_for(|d| *d));
        let mut timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        // Whether the drain future and the timer have been polled (so hold our waker).
        let (mut drain_polled, mut timer_polled) = (false, false);
        let mut closing = false;
        std::future::poll_fn(|cx| {
            loop {
                if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return Poll::Ready(());
                }
                if closing {
                    return Poll::Pending;
                }
                if !drain_polled || probe.has_changed().unwrap_or(true) {
                    drain_polled = true;
                    probe.borrow_and_update();
                    if drain.as_mut().poll(cx).is_ready() {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        continue;
                    }
                }
                if timer_polled && !timer.is_elapsed() {
                    return Poll::Pending;
                }
                match idle_deadline(activity, first, idle) {
                    Some(wake) => {
                        timer.as_mut().reset(wake);
                        timer_polled = true;
                        if timer.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        // Already due: look again.
                    }
                    None => {
                        tracing::debug!("closing idle connection");
                        // Nothing is in flight. HTTP/1.1 is simply closed: a head that is
                        // still arriving is too slow, and hyper's graceful shutdown would wait
                        // for it on a connection that has not finished a request yet. HTTP/2
                        // gets a GOAWAY.
                        if h1 {
                            return Poll::Ready(());
                        }
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        })
        .await;
    }
}

/// A parked connection's parts: its socket and service, and what hyper read and had not parsed
/// yet followed by what the `Io` had not handed on, copied out. hyper's `read_buf` is a view of
/// its whole read buffer, which it would keep alive (even when empty) for as long as the
/// connection is parked; it is dropped here.
fn take_apart<S>(parts: http1::Parts<park::Io, S>) -> (TcpStream, S, Bytes) {
    let http1::Parts { io, read_buf, service, .. } = parts;
    let (socket, read) = io.into_parts();
    let ahead = match (read_buf.is_empty(), read.is_empty()) {
        (true, _) => read,
        (false, true) => Bytes::copy_from_slice(&read_buf),
        (false, false) => [&read_buf[..], &read[..]].concat().into(),
    };
    (socket, service, ahead)
}

/// An HTTP/1 or HTTP/2 server connection, as one type.
pub(super) trait Served: Future<Output = Result<(), hyper::Error>> + Send {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<T: GracefulConnection<Error = hyper::Error> + Send> Served for T {
    fn graceful_shutdown(self: Pin<&mut Self>) {
        GracefulConnection::graceful_shutdown(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn sniff_after(writes: &[&[u8]]) -> Option<bool> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        for w in writes {
            client.write_all(w).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if writes.is_empty() {
            client.shutdown().await.unwrap();
        }
        let sniffed = sniff_h2(&server, Duration::from_secs(2)).await;
        // Peeking consumed nothing: hyper still reads the whole first request.
        let mut buf = [0u8; 64];
        let n = if writes.is_empty() { 0 } else { server.try_read(&mut buf).unwrap() };
        assert_eq!(n, writes.iter().map(|w| w.len()).sum::<usize>().min(64));
        sniffed
    }

    /// The connection task's future, which tokio allocates for the connection's whole life:
    /// what a parked connection costs beside its socket.
    #[tokio::test]
    async fn a_connection_task_is_small() {
        use crate::config::Config;
        use crate::snapshot::Snapshot;
        let mut config = Config::default();
        config.provider.api_base = Some("http://127.0.0.1:9".into());
        config.provider.token_url = Some("http://127.0.0.1:9/oauth/v2/token".into());
        config.provider.authorize_url = Some("http://127.0.0.1:9/oauth/v2/authorize".into());
        let app = App::new(Snapshot::new(config.validated().unwrap()).unwrap());
        let (_drain_tx, drain) = watch::channel(false);
        let conn = Conn {
            protocols: Arc::new(Protocols::new(&app.snapshot().config.server)),
            first_request_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            park_after: Duration::ZERO,
            drain,
            _permit: None,
            _open: app.state().ops.metrics.connection_opened(),
            app,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let size = std::mem::size_of_val(&conn.run(server, peer));
        println!("connection task {size} bytes");
        assert!(size <= 1024, "connection task is {size} bytes");
    }

    #[tokio::test]
    async fn sniffs_h2_preface_and_h1_without_consuming() {
        assert_eq!(sniff_after(&[H2_PREFACE]).await, Some(true));
        assert_eq!(sniff_after(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"]).await, Some(true));
        assert_eq!(sniff_after(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]).await, Some(false));
        assert_eq!(sniff_after(&[b"P", b"OST / HTTP/1.1\r\n"]).await, Some(false));
        assert_eq!(sniff_after(&[]).await, None);
    }
}
