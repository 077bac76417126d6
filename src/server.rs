//! Listeners: the proxy port (HTTP/1.1 and HTTP/2, connection limit, header timeout, graceful
//! drain) and the admin port. The only module that touches sockets.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
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

fn builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_bytes)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(cfg.idle_timeout))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

async fn serve(listener: TcpListener, app: App, mut shutdown: watch::Receiver<bool>) {
    let cfg = app.runtime().config.server.clone();
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let graceful = GracefulShutdown::new();
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
        let permit = (permit, app.shared().ops.metrics.connection_opened());
        let app = app.clone();
        let svc = service_fn(move |req| {
            let app = app.clone();
            let fut: std::pin::Pin<Box<dyn Future<Output = _> + Send>> =
                Box::pin(async move { Ok::<_, Infallible>(app.handle(req, peer).await) });
            fut
        });
        let conn_builder = builder(&cfg);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let conn = conn_builder.serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn).await {
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
