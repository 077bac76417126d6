//! The refresh cache the token routes call: the memory backend, or the one shared through Redis,
//! as `[state] backend` chose at start.

use super::flight::SharedRefresh;
use super::portable::{Portable, SharedFailure};
use crate::refresh::cache::RefreshCache;
use crate::refresh::types::{RefreshFailure, RefreshStats, Refreshed};

/// The refresh cache in front of the token call: in this process, or shared through Redis.
pub enum Refresher<V: Refreshed, E: RefreshFailure> {
    Memory(RefreshCache<V, E>),
    Shared(SharedRefresh<V, E>),
}

impl<V: Refreshed + Portable, E: SharedFailure> Refresher<V, E> {
    /// Counters, as the memory backend defines them (see [`SharedRefresh::stats`]).
    pub fn stats(&self) -> RefreshStats {
        match self {
            Self::Memory(cache) => cache.stats(),
            Self::Shared(shared) => shared.stats(),
        }
    }

    /// Answers held in this process (for the shared backend: those answered while Redis was
    /// down).
    pub async fn entry_count(&self) -> u64 {
        match self {
            Self::Memory(cache) => cache.entry_count().await,
            Self::Shared(shared) => shared.fallback_entry_count().await,
        }
    }

    /// Keys with a flight running in this process.
    pub fn in_flight(&self) -> usize {
        match self {
            Self::Memory(cache) => cache.in_flight(),
            Self::Shared(shared) => shared.in_flight(),
        }
    }
}
