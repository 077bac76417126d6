//! Refresh-grant coalescing and replay cache: refresh grants go through here before the
//! upstream token call, so concurrent refreshes of one refresh token reach the upstream once
//! and a just-answered refresh is replayed from a short-lived cache instead of spending the
//! token again.
//!
//! # How a call flows
//!
//! [`RefreshCache::get_or_refresh`] derives a key with HMAC-SHA256 under a per-process
//! random key over the length-prefixed client id followed by the refresh token, so the raw
//! token is never stored, logged or printed, and two clients never share an entry.
//! [`RefreshCache::get_or_refresh_in`] derives the key within a [`Namespace`] (a provider's:
//! an HMAC sub-key of the cache's key and the namespace's name), so two providers never share
//! one either, and may add more length-prefixed parts before the token. Then:
//!
//! 1. a cached answer (still inside `min(ttl, lifetime)` measured from when the upstream
//!    answered) is served as [`Source::Cache`];
//! 2. otherwise, if a fetch for the key is in flight, the caller waits for its result
//!    ([`Source::Coalesced`]);
//! 3. otherwise the caller registers a new flight, calls `fetch()` and drives the returned
//!    future itself ([`Source::Upstream`]). Should that caller hang up (its future dropped)
//!    before the call ends, the rest of the call is moved into a `tokio::spawn`ed task, so a
//!    caller hanging up never cancels the upstream call the others
//!    (and the cache) are waiting on. (Driving it in the caller's task saves a task and a wake-up per refresh.)
//!
//! The flight inserts a successful answer into the cache *before* it unregisters the
//! flight, and a caller that finds no flight re-checks the cache under the same lock before
//! registering one. A caller whose first cache check raced with a finishing flight
//! therefore sees the cached answer instead of spending the refresh token a second time.
//! The task publishes the result to its waiters only after unregistering, so once any
//! caller has its answer the key is no longer in flight.
//!
//! Errors go to every waiter of that flight and are never cached; an error whose
//! [`RefreshFailure::evicts`] is true (`invalid_grant`) also evicts the key. The flight is
//! unregistered in every outcome (success, error, panic, runtime shutdown) by a drop guard.
//!
//! The handle is cheap to clone: all state lives behind one `Arc`.
//!
//! Both token routes refresh through one cache, keyed by a [`redis::Scope`] (a client of a
//! provider); an answer carries the [`Proof`] of the call that got it, and the routes decide
//! whose proof it may be served to.
//!
//! This is the memory backend. With `[state] backend = "redis"`, [`redis`] shares the cache and
//! flight between replicas through Redis, still coalescing inside the process with this cache.

mod cache;
mod flight;
mod future;
mod inner;
mod key;
mod proof;
pub mod redis;
#[cfg(test)]
mod testing;
mod types;

pub use cache::RefreshCache;
pub(crate) use key::Namespace;
pub use proof::Proof;
pub use types::{RefreshFailure, RefreshStats, Refreshed, Served, Source};
