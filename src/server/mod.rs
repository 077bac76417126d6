//! Listeners: the proxy port (HTTP/1.1 and HTTP/2, connection limit, header and idle timeouts,
//! graceful drain) and the admin port. The only module that touches sockets.
//!
//! Per connection, the protocol is chosen by peeking for the HTTP/2 preface (nothing is consumed,
//! so hyper's HTTP/1 read buffer stays at its initial size). hyper enforces the head-size limit
//! (431/414). A watchdog per connection enforces the time limits with no timer per request: a
//! deadline for the *first* request, the HTTP/1 header-read timeout between requests, and the
//! idle keep-alive timeout for both protocols. "Idle" means no request in flight, counted from
//! when the last response body finished.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::admin;
use crate::app::App;
use crate::body::{Body, BoxError};
use crate::config::ServerConfig;

/// A running proxy (and admin listener), as returned by [`start`].
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Begin a graceful shutdown: readiness turns false, accepting stops, in-flight requests get
    /// `server.shutdown_grace` to finish.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Wait until the drain is complete (or the grace period ran out).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Bind the configured listeners and serve until [`Running::shutdown`]. A bind failure names
/// the listener, its config key and address, and the OS error.
pub async fn start(app: App) -> io::Result<Running> {
    let rt = app.runtime();
    let proxy = bind("proxy", "server.listen", rt.config.server.listen).await?;
    let admin = if rt.config.admin.enabled {
        Some(bind("admin", "admin.listen", rt.config.admin.listen).await?)
    } else {
        None
    };
    start_on(app, proxy, admin)
}

async fn bind(which: &str, key: &str, addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        io::Error::new(e.kind(), format!("cannot bind the {which} listener ({key}) on {addr}: {e}"))
    })
}

/// Serve on listeners the caller bound (tests bind `127.0.0.1:0`).
pub fn start_on(app: App, proxy: TcpListener, admin: Option<TcpListener>) -> io::Result<Running> {
    let proxy_addr = proxy.local_addr()?;
    let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
    let (tx, rx) = watch::channel(false);
    if let Some(listener) = admin {
        tokio::spawn(admin::serve(listener, app.clone(), rx.clone()));
    }
    crate::continuity::spawn_sweeper(app.clone(), rx.clone());
    let task = tokio::spawn(serve(proxy, app, rx));
    Ok(Running { proxy_addr, admin_addr, shutdown: tx, task })
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The HTTP/1 and HTTP/2 connection settings, built once and shared by every connection.
struct Protocols {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(cfg: &ServerConfig) -> Self {
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

async fn serve(listener: TcpListener, app: App, mut shutdown: watch::Receiver<bool>) {
    let cfg = app.runtime().config.server.clone();
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let protocols = Arc::new(Protocols::new(&cfg));
    // Every connection task holds a receiver; the sender's `closed()` is the drain barrier.
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut backoff = Duration::from_millis(5);
    loop {
        // At the limit, stop accepting: further connections wait in the kernel's accept queue.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => { backoff = Duration::from_millis(5); a }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            app: app.clone(),
            protocols: protocols.clone(),
            first_request_timeout: cfg.header_read_timeout,
            idle_timeout: cfg.idle_timeout,
            drain: drain_rx.clone(),
            _permit: permit,
            _open: app.shared().ops.metrics.connection_opened(),
        };
        tokio::spawn(conn.run(stream, peer));
    }
    app.set_draining();
    drop(listener);
    let _ = drain_tx.send(true);
    drop(drain_rx);
    tracing::info!(grace_s = cfg.shutdown_grace.as_secs_f64(), "draining connections");
    if tokio::time::timeout(cfg.shutdown_grace, drain_tx.closed()).await.is_err() {
        tracing::warn!("shutdown grace elapsed with connections still open");
    }
}

/// One accepted connection and what it needs.
struct Conn {
    app: App,
    protocols: Arc<Protocols>,
    first_request_timeout: Duration,
    idle_timeout: Duration,
    drain: watch::Receiver<bool>,
    /// Released when the connection ends, admitting the next one.
    _permit: OwnedSemaphorePermit,
    /// Keeps the open-connections gauge up while the connection lives.
    _open: crate::ops::metrics::GaugeGuard,
}

impl Conn {
    async fn run(mut self, stream: TcpStream, peer: SocketAddr) {
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
        let (conn, idle, h1): (Pin<Box<dyn Served>>, _, _) = match sniff_h2(&stream, first).await {
            // Nothing (or not even a preface) within the first-request deadline: close.
            None => return,
            // HTTP/1.1 between requests: the next head must be complete within
            // header_read_timeout (a slow head and an idle connection look the same from here,
            // and hyper's own header timer would close both), so the smaller limit applies.
            Some(false) => (
                Box::pin(self.protocols.h1.serve_connection(TokioIo::new(stream), svc)),
                self.idle_timeout.min(first),
                true,
            ),
            Some(true) => (
                Box::pin(self.protocols.h2.serve_connection(TokioIo::new(stream), svc)),
                self.idle_timeout,
                false,
            ),
        };
        self.drive(conn, &activity, idle, h1).await;
    }

    /// Run a connection until it ends, closing it gracefully on drain or when idle.
    ///
    /// The connection is polled on every wake-up; the drain signal and the idle timer only when
    /// they may have fired (a version check, an `is_elapsed`), not on each of the several
    /// wake-ups every request causes: once polled, both keep the task's waker registered.
    async fn drive(&mut self, mut conn: Pin<Box<dyn Served>>, activity: &Activity, idle: Duration, h1: bool) {
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

/// An HTTP/1 or HTTP/2 server connection, as one type.
trait Served: Future<Output = Result<(), hyper::Error>> + Send {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<T: GracefulConnection<Error = hyper::Error> + Send> Served for T {
    fn graceful_shutdown(self: Pin<&mut Self>) {
        GracefulConnection::graceful_shutdown(self);
    }
}

/// A connection's request activity, as the idle watchdog reads it. Requests only touch atomics
/// (no wake-up of the watchdog per request); the watchdog sleeps until the earliest moment the
/// connection could be idle for the limit and checks again then.
struct Activity {
    /// When the connection was accepted; `last_done` counts from here.
    opened: Instant,
    /// Requests started and finished (response body done or dropped) on this connection.
    started: AtomicU64,
    finished: AtomicU64,
    /// Nanoseconds after `opened` when the last response body finished.
    last_done: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            last_done: AtomicU64::new(0),
        }
    }

    fn since_opened(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// When to check the connection for idleness next, or `None` once it has had no request in
/// flight for the limit: `first` (from accept) until the first request arrives, then `idle`
/// after each response.
fn idle_deadline(activity: &Activity, first: Duration, idle: Duration) -> Option<Instant> {
    // `finished` before `started`: both only grow and finished <= started, so a request that
    // starts in between is seen as in flight, never the other way round.
    let finished = activity.finished.load(Ordering::SeqCst);
    let started = activity.started.load(Ordering::SeqCst);
    if started > finished {
        // Busy: idle for the limit no sooner than `idle` from now.
        return Some(Instant::now() + idle);
    }
    let limit = if started == 0 { first } else { idle };
    let since = Duration::from_nanos(activity.last_done.load(Ordering::SeqCst));
    let deadline = activity.opened + since + limit;
    let now = Instant::now();
    if now >= deadline {
        return None;
    }
    // A request could start and finish right now, making `now + idle` the deadline (earlier
    // than the first-request one when `idle` is the shorter limit).
    Some(deadline.min(now + idle))
}

/// Counts one request as in flight until its response body is finished or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::SeqCst);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_done.fetch_max(a.since_opened(), Ordering::SeqCst);
        a.finished.fetch_add(1, Ordering::SeqCst);
    }
}

/// The service's future: the app's handling of one request, whose answer's body then carries
/// the in-flight guard.
struct Respond {
    handling: crate::app::Handling,
    guard: Option<InFlight>,
}

impl Future for Respond {
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let resp = std::task::ready!(self.handling.as_mut().poll(cx));
        let guard = self.guard.take();
        Poll::Ready(Ok(resp.map(|body| Tracked { body, _guard: guard })))
    }
}

/// A response body that keeps its request counted as in flight while it streams.
struct Tracked {
    body: Body,
    _guard: Option<InFlight>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Wait for `signal`, then shut `running` down gracefully and wait for the drain.
pub async fn run_until(running: Running, signal: impl Future<Output = ()>) {
    signal.await;
    tracing::info!("shutdown signal received");
    running.shutdown();
    running.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

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

    #[tokio::test]
    async fn sniffs_h2_preface_and_h1_without_consuming() {
        assert_eq!(sniff_after(&[H2_PREFACE]).await, Some(true));
        assert_eq!(sniff_after(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"]).await, Some(true));
        assert_eq!(sniff_after(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]).await, Some(false));
        assert_eq!(sniff_after(&[b"P", b"OST / HTTP/1.1\r\n"]).await, Some(false));
        assert_eq!(sniff_after(&[]).await, None);
    }
}
