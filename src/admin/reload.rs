//! Hot reload: load and validate the config file again and, if it is valid, swap it in for new
//! requests (in-flight requests finish on the old one; connections, the upstream pool and the
//! refresh cache are kept). Triggered by SIGHUP, by a change of the file's content (polled), by
//! `POST /reload` on the admin listener, and so by `oauth-shim reload`. An invalid file leaves
//! the old config serving; why is logged and shown at `GET /reload`.

use std::time::SystemTime;

use crate::app::App;
use crate::config::Config;
use crate::ops::migration::rfc3339;
use crate::ops::reload::{Attempt, ReloadStatus, fingerprint, lock};
use crate::snapshot::Snapshot;

/// Why a reload did not apply.
#[derive(Debug)]
pub enum ReloadError {
    /// The process runs on a config built in code; there is no file to read.
    NoSource,
    /// The new config is invalid; the old one keeps serving.
    Invalid(Box<ReloadStatus>),
}

/// Reload now. Blocking file I/O (a small file); safe to call from async code.
pub fn reload(app: &App, trigger: &'static str) -> Result<ReloadStatus, ReloadError> {
    let reloads = &app.state().ops.reload;
    let Some(path) = reloads.source() else { return Err(ReloadError::NoSource) };
    let _one_at_a_time = lock(&reloads.serial);
    let old = app.snapshot();
    let loaded = Config::load(path).and_then(|config| Snapshot::reloaded(config, &old));
    // What the watcher compares against next: the files of the config now in force.
    let in_force = loaded.as_ref().map_or(&old.config, |new| &new.config);
    *lock(&reloads.fingerprint) = fingerprint(path, in_force);
    let metrics = &app.state().ops.metrics;
    let mut status = lock(&reloads.status);
    let at = rfc3339(SystemTime::now());
    match loaded {
        Err(e) => {
            tracing::warn!(trigger, path = %path.display(), error = %e.0, "config reload failed; the previous config stays in force");
            status.last_attempt = Some(Attempt {
                at,
                trigger,
                ok: false,
                error: Some(e.0),
                restart_required: Vec::new(),
                mode_changes: Vec::new(),
                secret_changes: Vec::new(),
                admin_token_changed: false,
            });
            metrics.reloaded(false, status.generation);
            Err(ReloadError::Invalid(Box::new(status.clone())))
        }
        Ok(new) => {
            let restart_required = needs_restart(&old.config, &new.config);
            if !restart_required.is_empty() {
                tracing::warn!(trigger, keys = %restart_required.join(", "), "config reload: these keys changed but only take effect after a restart");
            }
            for warning in &new.config.warnings {
                tracing::warn!(trigger, "{warning}");
            }
            let mode_changes = mode_changes(&old.config, &new.config);
            for change in &mode_changes {
                tracing::info!(trigger, change = %change, "client mode changed");
            }
            let secret_changes = secret_changes(&old.config, &new.config);
            if !secret_changes.is_empty() {
                tracing::info!(trigger, clients = %secret_changes.join(", "), "client secrets changed");
            }
            let admin_token_changed = old.config.admin.token != new.config.admin.token;
            if admin_token_changed {
                tracing::info!(trigger, "admin token changed");
            }
            for (listener, o, n) in
                [("proxy", &old.server_tls, &new.server_tls), ("admin", &old.admin_tls, &new.admin_tls)]
            {
                if let (Some(o), Some(n)) = (o, n)
                    && o.leaf != n.leaf
                {
                    tracing::info!(trigger, listener, subject = %n.leaf.subject, serial = %n.leaf.serial, not_after = %crate::tls::rfc3339(n.leaf.not_after), "TLS certificate changed; new handshakes use it");
                }
            }
            let clients = new.config.clients.len();
            app.swap_snapshot(new);
            status.generation += 1;
            status.loaded_at = at.clone();
            status.last_attempt = Some(Attempt {
                at,
                trigger,
                ok: true,
                error: None,
                restart_required,
                mode_changes,
                secret_changes,
                admin_token_changed,
            });
            metrics.reloaded(true, status.generation);
            tracing::info!(trigger, generation = status.generation, clients, "config reloaded");
            Ok(status.clone())
        }
    }
}

/// Keys read once at start-up: listeners and their limits, the refresh cache's size and ttl,
/// shared state (`[state]`, the Redis connection and key set), and logging.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    [
        ("server.listen", o.listen != n.listen),
        ("server.header_read_timeout", o.header_read_timeout != n.header_read_timeout),
        ("server.idle_timeout", o.idle_timeout != n.idle_timeout),
        ("server.max_connections", o.max_connections != n.max_connections),
        ("server.max_header_bytes", o.max_header_bytes != n.max_header_bytes),
        ("server.shutdown_grace", o.shutdown_grace != n.shutdown_grace),
        ("server.worker_threads", o.worker_threads != n.worker_threads),
        (
            "server.http2_max_concurrent_streams",
            o.http2_max_concurrent_streams != n.http2_max_concurrent_streams,
        ),
        ("server.tls", o.tls.is_some() != n.tls.is_some()),
        (
            "server.tls.max_handshakes",
            o.tls.as_ref().zip(n.tls.as_ref()).is_some_and(|(o, n)| o.max_handshakes != n.max_handshakes),
        ),
        ("admin.tls", old.admin.tls.is_some() != new.admin.tls.is_some()),
        (
            "admin.tls.max_handshakes",
            (old.admin.tls.as_ref().zip(new.admin.tls.as_ref()))
                .is_some_and(|(o, n)| o.max_handshakes != n.max_handshakes),
        ),
        ("admin.listen", old.admin.listen != new.admin.listen),
        ("admin.enabled", old.admin.enabled != new.admin.enabled),
        ("admin.max_connections", old.admin.max_connections != new.admin.max_connections),
        ("refresh_cache.ttl", old.refresh_cache.ttl != new.refresh_cache.ttl),
        ("refresh_cache.max_entries", old.refresh_cache.max_entries != new.refresh_cache.max_entries),
        ("state", state_changed(&old.state, &new.state)),
        ("continuity.dir", old.continuity.dir != new.continuity.dir),
        ("log.level", old.log.level != new.log.level),
        ("log.format", old.log.format != new.log.format),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

fn state_changed(o: &crate::config::StateConfig, n: &crate::config::StateConfig) -> bool {
    let secret = |s: &Option<crate::oauth::Secret>| s.as_ref().map(|s| s.expose().to_owned());
    (o.backend, &o.url, &o.key_prefix, o.connect_timeout, o.command_timeout, &o.ca_file)
        != (n.backend, &n.url, &n.key_prefix, n.connect_timeout, n.command_timeout, &n.ca_file)
        || secret(&o.password) != secret(&n.password)
        || secret(&o.encryption_keys) != secret(&n.encryption_keys)
}

/// Clients added, removed or with another mode, as `id: …` (`provider/id: …` for clients of a
/// provider other than the default).
fn mode_changes(old: &Config, new: &Config) -> Vec<String> {
    let name = |c: &crate::config::ClientConfig| match &c.provider {
        Some(p) if p != crate::config::DEFAULT_PROVIDER => format!("{p}/{}", c.id),
        _ => c.id.clone(),
    };
    let mut out = Vec::new();
    for c in &new.clients {
        match old.client_in(c.provider_name(), &c.id) {
            Some(o) if o.mode != c.mode => {
                out.push(format!("{}: {} -> {}", name(c), o.mode.as_str(), c.mode.as_str()))
            }
            None => out.push(format!("{}: added ({})", name(c), c.mode.as_str())),
            _ => {}
        }
    }
    for o in &old.clients {
        if new.client_in(o.provider_name(), &o.id).is_none() {
            out.push(format!("{}: removed", name(o)));
        }
    }
    out
}

/// Ids of clients present before and after whose secret differs.
fn secret_changes(old: &Config, new: &Config) -> Vec<String> {
    new.clients
        .iter()
        .filter(|c| old.client_in(c.provider_name(), &c.id).is_some_and(|o| o.secret() != c.secret()))
        .map(|c| c.id.clone())
        .collect()
}

/// Reload on SIGHUP, for the life of the process. The handler is installed before this returns,
/// so a SIGHUP sent once the process reports it is listening never kills it.
pub(crate) fn spawn_sighup(app: App) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /reload instead");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let app = app.clone();
            let result = tokio::task::spawn_blocking(move || reload(&app, "sighup")).await;
            if let Ok(Err(ReloadError::NoSource)) = result {
                tracing::warn!("SIGHUP: no config file to reload");
            }
        }
    });
}

/// Poll the config file every `reload.watch_interval` (read from the config in force, so it can
/// itself be reloaded) and reload when its content changes. A file that cannot be read (for
/// instance mid-swap) is skipped until the next tick; a content that failed to load is not
/// retried until it changes again.
pub fn spawn_watcher(app: App) {
    tokio::spawn(async move {
        loop {
            let cfg = app.snapshot().config.reload.clone();
            tokio::time::sleep(cfg.watch_interval).await;
            if !cfg.watch {
                continue;
            }
            let reloads = &app.state().ops.reload;
            let Some(path) = reloads.source() else { return };
            let path = path.to_path_buf();
            let snapshot = app.snapshot();
            let now = match tokio::task::spawn_blocking(move || fingerprint(&path, &snapshot.config)).await {
                Ok(Some(fp)) => fp,
                _ => continue,
            };
            if *lock(&reloads.fingerprint) == Some(now) {
                continue;
            }
            let app2 = app.clone();
            let _ = tokio::task::spawn_blocking(move || reload(&app2, "file")).await;
        }
    });
}
