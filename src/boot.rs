//! The one start-up sequence, shared by `oauth-shim serve` and `oauth-shim dev`: a loaded config
//! -> telemetry -> the App -> reload (file watcher, SIGHUP) -> listeners (and the continuity
//! sweeper) -> serve until SIGTERM or SIGINT, then drain.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use crate::admin;
use crate::app::App;
use crate::config::ValidConfig;
use crate::ops::telemetry;
use crate::server::{self, Running};
use crate::snapshot::Snapshot;

/// A started oauth-shim: its listeners, and the shutdown signals it waits for.
pub(crate) struct Started {
    pub(crate) running: Running,
    signal: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Start serving `config`, loaded from `path` (which reload reads again).
pub(crate) async fn start(config: ValidConfig, path: PathBuf) -> Result<Started, String> {
    telemetry::init(&config.log);
    // Before any listener is bound: from then on, SIGTERM drains rather than kills.
    let signal = Box::pin(server::shutdown_signal());
    for warning in &config.warnings {
        tracing::warn!(config = %path.display(), "{warning}");
    }
    if let Some(warning) = plaintext_password_warning(&config) {
        tracing::warn!("{warning}");
    }
    let snapshot = Snapshot::new(config).map_err(|e| e.0)?;
    let app = App::new(snapshot);
    app.state().ops.reload.set_source(path);
    admin::reload::spawn_sighup(app.clone());
    admin::reload::spawn_watcher(app.clone());
    let running = server::start(app.clone()).await.map_err(|e| e.to_string())?;
    let admin = running.admin_addr.map_or_else(|| "disabled".to_owned(), |a| a.to_string());
    tracing::info!(
        proxy = %running.proxy_addr,
        admin = %admin,
        clients = app.snapshot().config.clients.len(),
        version = env!("CARGO_PKG_VERSION"),
        "oauth-shim listening"
    );
    Ok(Started { running, signal })
}

/// The warning for a proxy port reachable beyond loopback in plaintext while some client may
/// use the password grant, whose passwords then cross the network in the clear.
fn plaintext_password_warning(config: &crate::config::Config) -> Option<String> {
    let server = &config.server;
    if server.tls.is_some() || server.listen.ip().to_canonical().is_loopback() {
        return None;
    }
    let clients: Vec<&str> =
        config.clients.iter().filter(|c| c.allow_password_grant).map(|c| c.id.as_str()).collect();
    if clients.is_empty() {
        return None;
    }
    Some(format!(
        "server.listen {} is beyond loopback and serves plaintext while clients allow the password grant ({}): passwords cross the network in the clear unless TLS ends in front of oauth-shim; set [server.tls]",
        server.listen,
        clients.join(", ")
    ))
}

/// Serve until SIGTERM or SIGINT, then drain.
pub(crate) async fn run_until_signal(started: Started) {
    server::run_until(started.running, started.signal).await;
}
