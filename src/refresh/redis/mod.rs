//! The refresh flight and cache replicas share through Redis (`[state] backend = "redis"`).
//!
//! # How a call flows
//!
//! Callers in this process coalesce first, in a local [`RefreshCache`](super::RefreshCache)
//! with caching off, so one Redis exchange serves all of them. Its leader then runs the shared
//! flight ([`flight`]):
//!
//! 1. One script, one round trip: if Redis holds an answer for the key, serve it
//!    ([`Source::Cache`](super::types::Source::Cache)) while it is younger than it is kept for
//!    (an older one, written back into Redis, is deleted by the next look, as [`store`] says);
//!    else try to take the flight's [lock](crate::redis::lock) (leased longer than the upstream
//!    deadline); else note whose flight is running.
//! 2. The lock's winner calls the upstream, then in one pipelined round trip stores the sealed
//!    answer (success: for `min(ttl, lifetime)`, as the local cache would; error: a marker
//!    tagged with the flight, for the lock's lifetime), publishes it on the events channel, and
//!    releases the lock if it still holds it (the lock's release announces the answer).
//! 3. Everyone else waits for the message of their key (pub/sub, no polling loop), re-reading
//!    the key on a slow timer in case a message was missed. A success is served to them
//!    ([`Source::Coalesced`](super::types::Source::Coalesced)); an error marker of the flight
//!    they waited on gives them the same error. A leader that died leaves its lock to expire;
//!    the next re-read takes the lock and that waiter leads.
//!
//! Errors are never served as answers to callers that did not wait on that flight: a fresh
//! caller skips an error marker and starts a new flight. An evicting error (`invalid_grant`)
//! overwrites a cached success, so no replica serves it again.
//!
//! Keys are keyed hashes (`[state]` key set, the same on every replica) of the cache's domain,
//! the refresh's [`Scope`](super::Scope) (provider name and client id) and the refresh token; values and
//! messages are sealed with the key set, bound to their Redis key.
//!
//! # When Redis fails
//!
//! A failed or slow command makes the flight wait for Redis, at most `[state] failover_wait`
//! from the outage's start (and never past the token call's deadline), then look again: a look
//! whose answer was lost may have taken the lock, which the flight then recognises by its token.
//! When Redis is not back in time, the provider's `when_unavailable` decides: refuse
//! ([`PortableFailure::unavailable`], counted in
//! [`RedisStats::refusals`](crate::redis::RedisStats)) or run an in-process
//! [`RefreshCache`](super::RefreshCache) (cache and single flight, as with the memory backend,
//! counted in [`RedisStats::fallbacks`](crate::redis::RedisStats); concurrent refreshes of one
//! token on different replicas are then not coalesced with each other).
//!
//! A leader whose store fails keeps its answer, and stores it (publishing it to the waiters)
//! whenever Redis is back, while its lease lasts. A waiter that finds the lock free before the
//! lease of the leader it waited on has run out, and no answer stored, takes the lock but does
//! not call upstream: Redis lost the lock (a restart, a failover), not necessarily the leader.
//! It waits for the leader's answer until that lease ends, then leads.
//!
//! [`Refresher`](super::Refresher) picks the backend, [`flight`] runs the steps above, [`store`] is how a flight's
//! lock and outcome are kept in Redis, and [`portable`] is what a value must be to cross replicas.

mod flight;
mod portable;
mod store;

pub use flight::RedisRefresh;
pub use portable::{Portable, PortableFailure};
