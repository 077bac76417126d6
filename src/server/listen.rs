//! The listeners: binding the proxy and admin ports, serving each through the one accept loop,
//! and the graceful drain of the proxy port on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::accept::accept_loop;
use super::conn::{Conn, Protocols};
use super::sweeper::{spawn_flusher, spawn_sweeper};
use super::tls::{Handshakes, Listener};
use crate::app::App;

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
pub(crate) async fn start(app: App) -> io::Result<Running> {
    let snapshot = app.snapshot();
    let proxy = bind("proxy", "server.listen", snapshot.config.server.listen).await?;
    let admin = if snapshot.config.admin.enabled {
        Some(bind("admin", "admin.listen", snapshot.config.admin.listen).await?)
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

/// Serve on listeners the caller bound (tests bind `127.0.0.1:0`), open the migration record,
/// and start the continuity sweeper and the record's flusher beside them.
pub fn start_on(app: App, proxy: TcpListener, admin: Option<TcpListener>) -> io::Result<Running> {
    let proxy_addr = proxy.local_addr()?;
    let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
    let (tx, rx) = watch::channel(false);
    if let Some(listener) = admin {
        tokio::spawn(serve_admin(listener, app.clone()));
    }
    app.state().open_migration_record();
    spawn_sweeper(app.clone(), rx.clone());
    spawn_flusher(app.clone(), rx.clone());
    let task = tokio::spawn(serve_proxy(proxy, app, rx));
    Ok(Running { proxy_addr, admin_addr, shutdown: tx, task })
}

/// Resolves when SIGTERM or SIGINT arrives. The handlers are installed by this call, not when
/// the future is first polled: a signal that arrives after it (while listeners are still being
/// bound, say) is not lost to the default action, which would end the process without a drain.
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    async fn next(s: Option<Signal>) {
        match s {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    let (term, int) = (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok());
    async move {
        tokio::select! {
            () = next(term) => {}
            () = next(int) => {}
        }
    }
}

/// Wait for `signal`, then shut `running` down gracefully and wait for the drain.
pub(crate) async fn run_until(running: Running, signal: impl Future<Output = ()>) {
    signal.await;
    tracing::info!("shutdown signal received");
    running.shutdown();
    running.wait().await;
}

/// Serve the proxy port until `shutdown` changes, then mark the app draining (`/readyz` turns
/// 503), stop accepting, give open connections `server.shutdown_grace` to finish, and flush the
/// migration record one last time.
async fn serve_proxy(listener: TcpListener, app: App, mut shutdown: watch::Receiver<bool>) {
    let cfg = app.snapshot().config.server.clone();
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let protocols = Arc::new(Protocols::new(&cfg));
    let tls = app.snapshot().server_tls.clone().map(|t| Arc::new(Handshakes::new(t, Listener::Proxy)));
    // Every connection task holds a receiver; the sender's `closed()` is the drain barrier.
    let (drain_tx, drain_rx) = watch::channel(false);
    let stop = async {
        let _ = shutdown.changed().await;
    };
    accept_loop(&listener, Some(permits), stop, |stream, peer, permit| {
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            app: app.clone(),
            protocols: protocols.clone(),
            first_request_timeout: cfg.header_read_timeout,
            idle_timeout: cfg.idle_timeout,
            park_after: cfg.park_after,
            drain: drain_rx.clone(),
            _permit: permit,
            _open: app.state().ops.metrics.connection_opened(),
        };
        match &tls {
            None => tokio::spawn(conn.run(stream, peer)),
            Some(handshakes) => tokio::spawn(conn.run_tls(stream, peer, handshakes.clone())),
        };
    })
    .await;
    app.set_draining();
    drop(listener);
    let _ = drain_tx.send(true);
    drop(drain_rx);
    tracing::info!(grace_s = cfg.shutdown_grace.as_secs_f64(), "draining connections");
    if tokio::time::timeout(cfg.shutdown_grace, drain_tx.closed()).await.is_err() {
        tracing::warn!("shutdown grace elapsed with connections still open");
    }
    app.state().ops.migration.flush(&app.snapshot().config).await;
}

/// Serve the admin port (HTTP/1.1, over TLS with `[admin.tls]`, `admin.max_connections` at a
/// time) until the process ends. It keeps answering while the proxy drains, so `/readyz` can
/// report the drain.
async fn serve_admin(listener: TcpListener, app: App) {
    let slots = Arc::new(Semaphore::new(app.snapshot().config.admin.max_connections));
    let tls = app.snapshot().admin_tls.clone().map(|t| Arc::new(Handshakes::new(t, Listener::Admin)));
    let Ok(bound) = listener.local_addr() else { return };
    accept_loop(&listener, Some(slots), std::future::pending(), |stream, peer, permit| {
        let app = app.clone();
        let tls = tls.clone();
        let at = crate::admin::Arrival { bound, local: stream.local_addr().unwrap_or(bound) };
        tokio::spawn(async move {
            let served = app.clone();
            let svc = service_fn(move |req| {
                let app = served.clone();
                async move { Ok::<_, Infallible>(crate::admin::handle(&app, req, at).await) }
            });
            let mut h1 = hyper::server::conn::http1::Builder::new();
            h1.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
            // Probes reconnect; an admin connection never outlives a minute.
            let limit = Duration::from_secs(60);
            match tls {
                None => {
                    let _ = tokio::time::timeout(limit, h1.serve_connection(TokioIo::new(stream), svc)).await;
                }
                Some(handshakes) => {
                    let Some(accepted) = handshakes.accept(&app, stream, peer).await else { return };
                    let _ =
                        tokio::time::timeout(limit, h1.serve_connection(TokioIo::new(accepted.stream), svc))
                            .await;
                }
            }
            drop(permit);
        });
    })
    .await;
}
