//! The state one refresh cache holds: its settings, the answer cache and the in-flight map,
//! shared by the cache lookup and the flights.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError, atomic::AtomicU64},
    time::{Duration, Instant},
};

use hmac::Hmac;
use moka::{Expiry, future::Cache};
use sha2::Sha256;
use tokio::sync::watch;

use super::key::{Key, KeyHash, key_in};
use super::types::{RefreshFailure, Refreshed};

/// A successful upstream answer and when it arrived.
pub(super) struct Stored<V> {
    pub(super) value: V,
    pub(super) answered_at: Instant,
}

/// What a flight publishes to its waiters. `None` until the upstream answers.
pub(super) type Outcome<V, E> = Option<Result<Arc<Stored<V>>, E>>;

/// One registered upstream call.
pub(super) struct Flight<V, E> {
    /// Distinguishes this registration from any later one for the same key.
    pub(super) id: u64,
    /// Where the outcome is published; made by the first caller that joins, so a refresh
    /// nobody joins (the usual case) never allocates a channel.
    pub(super) tx: Option<watch::Sender<Outcome<V, E>>>,
}

/// The state a [`super::cache::RefreshCache`] shares among its clones: the key, the cached
/// answers and the flights in progress.
pub(super) struct Inner<V: Refreshed, E: RefreshFailure> {
    /// HMAC state already keyed with the per-process secret; cloned per derivation.
    pub(super) mac: Hmac<Sha256>,
    pub(super) ttl: Duration,
    pub(super) max_entries: u64,
    pub(super) cache: Cache<Key, Arc<Stored<V>>, KeyHash>,
    pub(super) in_flight: Mutex<HashMap<Key, Flight<V, E>, KeyHash>>,
    pub(super) next_flight_id: AtomicU64,
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) coalesced: AtomicU64,
    pub(super) upstream_errors: AtomicU64,
}

/// Per-entry expiry: `min(ttl, lifetime)` counted from when the upstream answered.
pub(super) struct RefreshExpiry {
    pub(super) ttl: Duration,
}

impl RefreshExpiry {
    pub(super) fn remaining<V: Refreshed>(&self, stored: &Stored<V>, now: Instant) -> Duration {
        let bound = match stored.value.lifetime() {
            Some(lifetime) => lifetime.min(self.ttl),
            None => self.ttl,
        };
        bound.saturating_sub(now.saturating_duration_since(stored.answered_at))
    }
}

impl<V: Refreshed> Expiry<Key, Arc<Stored<V>>> for RefreshExpiry {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Arc<Stored<V>>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(self.remaining(value, created_at))
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        value: &Arc<Stored<V>>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.remaining(value, updated_at))
    }
}

impl<V: Refreshed, E: RefreshFailure> Inner<V, E> {
    pub(super) fn lock_in_flight(&self) -> MutexGuard<'_, HashMap<Key, Flight<V, E>, KeyHash>> {
        // No code panics while holding this lock, but never turn poisoning into a panic.
        self.in_flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn caching(&self) -> bool {
        !self.ttl.is_zero() && self.max_entries > 0
    }

    pub(super) fn key(&self, client_id: &str, refresh_token: &str) -> Key {
        key_in(&self.mac, &[client_id], refresh_token)
    }

    pub(super) async fn cached(&self, key: &Key) -> Option<Arc<Stored<V>>> {
        // moka's futures are large; boxed, they do not size every refresh's future (cache
        // off included) for themselves.
        if self.caching() { Box::pin(self.cache.get(key)).await } else { None }
    }
}
