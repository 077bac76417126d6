//! The background tasks started with the listeners: the continuity sweeper (every
//! `continuity.sweep_interval` it deletes expired token-continuity sessions from the store) and
//! the migration record's flusher (every `migration.flush_interval` it adds this process's
//! counts to the record; the last flush runs after the drain, in `listen.rs`).

use tokio::sync::watch;

use crate::app::App;

/// Spawn the sweeper; it ends when `shutdown` changes.
pub(super) fn spawn_sweeper(app: App, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            let interval = app.snapshot().config.continuity.sweep_interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            let snapshot = app.snapshot();
            if !snapshot.config.continuity_enabled() {
                continue;
            }
            // Failures were logged where they happened; the next round tries again.
            if let Ok(c) = app.state().continuity(&snapshot)
                && let Ok(n @ 1..) = c.sweep().await
            {
                tracing::info!(swept = n, "expired continuity sessions deleted");
            }
        }
    });
}

/// Spawn the migration record's flusher; it ends when `shutdown` changes.
pub(super) fn spawn_flusher(app: App, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            let interval = app.snapshot().config.migration.flush_interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            app.state().ops.migration.flush(&app.snapshot().config).await;
        }
    });
}
