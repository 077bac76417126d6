//! Refresh-grant coalescing and replay cache: refresh grants go through here before the
//! upstream token call, so concurrent refreshes of one refresh token reach the upstream once
//! and a just-answered refresh is replayed from a short-lived cache instead of spending the
//! token again.
//!
//! The token routes call one interface, [`Refresher::get_or_refresh`], with the refresh's
//! [`Scope`] (provider and client id) and the refresh token; `[state] backend` chose at start
//! which backend serves it: this process's [`RefreshCache`] (below), or [`redis`], shared by
//! replicas. Both key a refresh the same way, from the scope's parts and the token.
//!
//! # How a call flows (in this process)
//!
//! [`RefreshCache`] derives a key with HMAC-SHA256 under a per-process random key over the
//! length-prefixed parts of the scope followed by the refresh token, so the raw token is never
//! stored, logged or printed, and two clients (or providers) never share an entry. Then:
//!
//! 1. a cached answer (still inside `min(ttl, lifetime)` measured from when the upstream
//!    answered) is served as [`Source::Cache`];
//! 2. otherwise, if a fetch for the key is in flight, the caller waits for its result
//!    ([`Source::Coalesced`]);
//! 3. otherwise the caller registers a new flight, calls `fetch()` and drives the returned
//!    future itself ([`Source::Upstream`]), which saves a task and a wake-up per refresh.
//!    Should that caller hang up (its future dropped) before the call ends, the rest of the
//!    call is moved into a `tokio::spawn`ed task, so a caller hanging up never cancels the
//!    upstream call the others (and the cache) are waiting on.
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
//! An answer carries the [`Proof`] of the call that got it, and the routes decide whose proof
//! it may be served to.

mod cache;
mod entries;
mod flight;
mod proof;
pub mod redis;
mod refresher;
#[cfg(test)]
mod testing;
mod types;

pub use cache::RefreshCache;
pub use proof::Proof;
pub use refresher::{Refresher, Scope};
pub use types::{RefreshFailure, RefreshStats, Refreshed, Served, Source};
