//! Listeners: the proxy port (HTTP/1.1 and HTTP/2, connection limit, header timeout, graceful
//! drain) and the admin port. The only module that touches sockets.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::admin;
use crate::app::App;
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

    /// Wait until the drain is complete.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Bind the configured listeners and serve until [`Running::shutdown`].
pub async fn start(app: App) -> io::Result<Running> {
    let rt = app.runtime();
    let proxy = TcpListener::bind(rt.config.server.listen).await?;
    let admin =
        if rt.config.admin.enabled { Some(TcpListener::bind(rt.config.admin.listen).await?) } else { None };
    start_on(app, proxy, admin)
}

/// Serve on listeners the caller bound (tests bind `127.0.0.1:0`).
pub fn start_on(app: App, proxy: TcpListener, admin: Option<TcpListener>) -> io::Result<Running> {
    let proxy_addr = proxy.local_addr()?;
    let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
    let (tx, rx) = watch::channel(false);
    if let Some(listener) = admin {
        tokio::spawn(admin::serve(listener, app.clone(), rx.clone()));
    }
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
        h1.timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            .max_buf_size(cfg.max_header_bytes)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(cfg.idle_timeout))
            .keep_alive_timeout(Duration::from_secs(20));
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
    let graceful = GracefulShutdown::new();
    let protocols = Arc::new(Protocols::new(&cfg));
    let mut backoff = Duration::from_millis(5);
    loop {
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
        let app = app.clone();
        let svc = service_fn(move |req| {
            let app = app.clone();
            let fut: std::pin::Pin<Box<dyn Future<Output = _> + Send>> =
                Box::pin(async move { Ok::<_, Infallible>(app.handle(req, peer).await) });
            fut
        });
        let protocols = protocols.clone();
        let patience = cfg.header_read_timeout;
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let served = match sniff_h2(&stream, patience).await {
                None => Ok(()),
                Some(false) => watcher.watch(protocols.h1.serve_connection(TokioIo::new(stream), svc)).await,
                Some(true) => watcher.watch(protocols.h2.serve_connection(TokioIo::new(stream), svc)).await,
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    app.set_draining();
    drop(listener);
    tracing::info!(grace = ?cfg.shutdown_grace, "draining connections");
    if tokio::time::timeout(cfg.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown grace elapsed with connections still open");
    }
}

/// Run `fut` and shut `running` down gracefully when `signal` fires.
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
