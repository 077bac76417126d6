//! The traits and values a refresh caller deals with: what a refresh yields or fails with,
//! how a caller was served, and the counters.

use std::time::Duration;

/// What a successful refresh yields; the cache asks it how long it lives.
pub trait Refreshed: Clone + Send + Sync + 'static {
    /// The token's own lifetime as the upstream stated it (`expires_in`), if any.
    fn lifetime(&self) -> Option<Duration>;
}

/// What a failed refresh yields.
pub trait RefreshFailure: Clone + Send + Sync + 'static {
    /// True for errors that mean the refresh token is dead (invalid_grant): evict any cached entry.
    fn evicts(&self) -> bool;
    /// Built when the upstream task itself died (panicked / was aborted).
    fn internal() -> Self;
}

/// Where a [`Served`] value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Replayed from the cache; no upstream call was made for this request.
    Cache,
    /// This request started the upstream call.
    Upstream,
    /// This request joined an upstream call another request had already started.
    Coalesced,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::Upstream => "upstream",
            Self::Coalesced => "coalesced",
        }
    }
}

/// A successful refresh as handed to one caller.
#[derive(Debug, Clone)]
pub struct Served<V> {
    /// The upstream's answer (shared by every caller that got it).
    pub value: V,
    /// Time since the upstream answered; the caller subtracts it from `expires_in`.
    pub age: Duration,
    /// How this request was satisfied.
    pub source: Source,
}

/// Counters since the cache was created. Every call to `get_or_refresh` that gets past
/// key derivation counts exactly once in `hits`, `misses` or `coalesced`; `upstream_errors`
/// counts failed upstream calls (once per call, however many callers waited on it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshStats {
    /// Served from the cache.
    pub hits: u64,
    /// Started an upstream call.
    pub misses: u64,
    /// Joined an upstream call already in flight.
    pub coalesced: u64,
    /// Upstream calls that failed (error result, panic, or task dropped before answering).
    pub upstream_errors: u64,
}
