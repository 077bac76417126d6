//! What every request shares for the life of the process: the runtime in force (swapped on
//! reload), the refresh flights, the Redis connection, the operators' counters, and the
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
use crate::runtime::Runtime;

/// Process-lifetime state; the app holds it in an `Arc`.
pub struct Shared {
    runtime: ArcSwap<Runtime>,
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

impl Shared {
    /// The shared state for a first runtime: refresh flights as `[state]` asks, and the
    /// session store opened now when some client uses continuity, so a problem with it shows
    /// at start-up.
    pub fn new(runtime: Runtime) -> Self {
        let (refresh, redis) = refresher(&runtime.config);
        let ops = Ops::default();
        attach_lookups(&runtime, &ops);
        let shared = Self {
            runtime: ArcSwap::from_pointee(runtime),
            refresh,
            redis,
            ops,
            continuity: std::sync::OnceLock::new(),
            draining: AtomicBool::new(false),
        };
        let rt = shared.runtime();
        if rt.continuity {
            let _ = shared.continuity(&rt);
        }
        shared
    }

    /// The runtime in force now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Swap in a new runtime for new requests (in-flight ones finish on the old one); returns
    /// the old one.
    pub fn swap_runtime(&self, runtime: Runtime) -> Arc<Runtime> {
        attach_lookups(&runtime, &self.ops);
        self.runtime.swap(Arc::new(runtime))
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The continuity service for `rt`, opening its store on first use.
    pub fn continuity(&self, rt: &Runtime) -> Result<&Arc<Continuity>, ShimError> {
        let opened = self.continuity.get_or_init(|| {
            Continuity::open(&rt.config, self.redis.clone(), self.ops.metrics.clone()).map(Arc::new).map_err(|e| {
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
fn attach_lookups(runtime: &Runtime, ops: &Ops) {
    for p in &runtime.providers {
        if let Some(lookup) = &p.lookup {
            lookup.attach(|| ops.metrics.lookup_counters(&p.name));
        }
    }
}
