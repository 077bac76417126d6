//! What every request shares for the life of the process: the config snapshot in force (swapped
//! on reload), the refresh flights, the Redis connection, the operators' counters, and the
//! continuity service.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use http::StatusCode;

use super::flights::{TokenRefresher, refresher};
use crate::continuity::Continuity;
use crate::error::{ErrorCode, ErrorSource, ShimError};
use crate::ops::Ops;
use crate::redis::Redis;
use crate::snapshot::Snapshot;

/// Process-lifetime state; the app holds it in an `Arc`.
pub struct State {
    snapshot: ArcSwap<Snapshot>,
    /// Refreshes of both token routes, keyed by provider, client id and refresh token (in
    /// process, or shared through Redis with `[state] backend = "redis"`).
    pub refresh: TokenRefresher,
    /// The Redis connection, with `[state] backend = "redis"`.
    pub redis: Option<Redis>,
    /// Metrics, migration report, reload state; survive reloads.
    pub ops: Ops,
    /// The continuity service, opened when a config first enables continuity (its store and
    /// backend are fixed from then on). An open failure is kept, logged once, and answered
    /// `temporarily_unavailable` on the continuity paths only.
    continuity: std::sync::OnceLock<Result<Arc<Continuity>, String>>,
    draining: AtomicBool,
}

impl State {
    /// The app's state for a first snapshot: refresh flights as `[state]` asks, and the
    /// session store opened now when some client uses continuity, so a problem with it shows
    /// at start-up.
    pub fn new(snapshot: Snapshot) -> Self {
        let (refresh, redis) = refresher(&snapshot.config);
        let ops = Ops::default();
        attach_lookups(&snapshot, &ops);
        let state = Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            refresh,
            redis,
            ops,
            continuity: std::sync::OnceLock::new(),
            draining: AtomicBool::new(false),
        };
        let snapshot = state.snapshot();
        if snapshot.continuity {
            let _ = state.continuity(&snapshot);
        }
        state
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Swap in a new snapshot for new requests (in-flight ones finish on the old one); returns
    /// the old one.
    pub fn swap_snapshot(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        attach_lookups(&snapshot, &self.ops);
        self.snapshot.swap(Arc::new(snapshot))
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Open the migration record's store as `[state]` and `[migration]` ask: Redis with the
    /// Redis backend, else the embedded file; a file that does not open leaves the record in
    /// memory (logged). Done once, with the listeners.
    pub fn open_migration_record(&self) {
        use crate::ops::migration::store::Store;
        let snapshot = self.snapshot();
        let config = &snapshot.config;
        let store = match &self.redis {
            Some(redis) => crate::ops::migration::shared_record(redis.clone()),
            None => match crate::ops::migration::embedded_record(&config.migration.dir) {
                Ok(store) => store,
                Err(e) => {
                    tracing::error!(error = %e, "the migration record is kept in memory only: its file did not open");
                    Store::memory()
                }
            },
        };
        self.ops.migration.attach(store, config);
    }

    /// The continuity service for `snapshot`, opening its store on first use.
    pub fn continuity(&self, snapshot: &Snapshot) -> Result<&Arc<Continuity>, ShimError> {
        let opened = self.continuity.get_or_init(|| {
            Continuity::open(&snapshot.config, self.redis.clone(), self.ops.metrics.clone()).map(Arc::new).map_err(|e| {
                tracing::error!(error = %e, "token continuity is unavailable: the session store did not open");
                e.to_string()
            })
        });
        opened.as_ref().map_err(|_| {
            ShimError::new(
                ErrorCode::TemporarilyUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorSource::Internal,
                "the session store is unavailable",
            )
        })
    }
}

/// Count each provider's legacy-fields lookups under its name.
fn attach_lookups(snapshot: &Snapshot, ops: &Ops) {
    for p in &snapshot.providers {
        if let Some(lookup) = &p.lookup {
            lookup.attach(|| ops.metrics.lookup_counters(&p.name));
        }
    }
}
