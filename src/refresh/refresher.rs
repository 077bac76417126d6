//! The one refresh interface the token routes call: [`Refresher::get_or_refresh`] serves a
//! refresh within its [`Scope`] from whichever backend `[state] backend` chose at start (this
//! process's [`RefreshCache`], or [`RedisRefresh`] shared by replicas); no caller learns which.

use std::sync::Arc;
use std::time::Duration;

use super::cache::RefreshCache;
use super::proof::Proof;
use super::redis::{Portable, PortableFailure, RedisRefresh};
use super::types::{RefreshFailure, RefreshStats, Refreshed, Served};
use crate::config::WhenUnavailable;
use crate::crypto::KeySet;
use crate::redis::Redis;

/// Whose refresh token a refresh spends: one client of one provider (the default provider is
/// `default`). Both backends key a refresh by the same parts, [`Scope::parts`] then the token,
/// each length-prefixed into a keyed hash (the memory backend's key is per process, the Redis
/// backend's the `[state]` key set's). So one token of one client is spent once, whichever token
/// route asks, and two providers never share an entry.
///
/// A caller's credentials are not part of the scope: a legacy and a v2 caller of one client
/// spending one token join one flight, and its answer carries the [`Proof`] of the call that got
/// it (the route decides whom it may be served to).
///
/// The scope also carries its provider's outage policy (`when_unavailable`), which the Redis
/// backend follows while no Redis master answers; it is not part of the key.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    provider: &'a str,
    client_id: &'a str,
    when_unavailable: WhenUnavailable,
}

impl<'a> Scope<'a> {
    /// A scope whose refreshes are refused while no Redis master answers.
    pub fn new(provider: &'a str, client_id: &'a str) -> Self {
        Self { provider, client_id, when_unavailable: WhenUnavailable::Refuse }
    }

    /// This scope with the outage policy `policy`.
    pub fn when_unavailable(self, policy: WhenUnavailable) -> Self {
        Self { when_unavailable: policy, ..self }
    }

    /// What a key is derived from before the refresh token: the provider's name and the
    /// client id.
    pub(crate) fn parts(&self) -> [&'a str; 2] {
        [self.provider, self.client_id]
    }
}

/// The refresh cache and flight in front of the token call. Cheap to clone.
#[derive(Clone)]
pub struct Refresher<V: Refreshed, E: RefreshFailure> {
    backend: Backend<V, E>,
}

#[derive(Clone)]
enum Backend<V: Refreshed, E: RefreshFailure> {
    Memory(RefreshCache<V, E>),
    Redis(RedisRefresh<V, E>),
}

impl<V: Refreshed + Portable, E: PortableFailure> Refresher<V, E> {
    /// In this process: a successful refresh replayed for at most `ttl` (never past the token's
    /// own lifetime), at most `max_entries` answers kept.
    pub fn in_memory(ttl: Duration, max_entries: u64) -> Self {
        Self { backend: Backend::Memory(RefreshCache::new(ttl, max_entries)) }
    }

    /// Shared by the replicas on `redis`, keyed and sealed with `keys` (`ttl` and `max_entries`
    /// as for [`Refresher::in_memory`], the latter bounding the cache used while Redis is down).
    pub(crate) fn through_redis(redis: Redis, keys: Arc<KeySet>, ttl: Duration, max_entries: u64) -> Self {
        Self { backend: Backend::Redis(RedisRefresh::new(redis, keys, "refresh", ttl, max_entries)) }
    }

    /// Serve a refresh of `refresh_token` within `scope`: a cached answer, the flight in
    /// progress, or `fetch` (see [`RefreshCache::get_or_refresh`]). `upstream_deadline` bounds
    /// the call `fetch` makes (the Redis backend's lock outlives it).
    pub(crate) async fn get_or_refresh<F, Fut>(
        &self,
        scope: &Scope<'_>,
        refresh_token: &str,
        upstream_deadline: Duration,
        fetch: F,
    ) -> Result<Served<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        match &self.backend {
            Backend::Memory(cache) => cache.serve(cache.key(&scope.parts(), refresh_token), fetch).await,
            // Boxed, so the memory backend's future keeps its size.
            Backend::Redis(redis) => {
                let (parts, policy) = (scope.parts(), scope.when_unavailable);
                Box::pin(redis.get_or_refresh(&parts, policy, refresh_token, upstream_deadline, fetch)).await
            }
        }
    }

    /// The proof of a call presenting `secret`: its keyed hash, the same on every replica that
    /// shares this cache.
    pub(crate) fn proof(&self, secret: &str) -> Proof {
        Proof::Presented(match &self.backend {
            Backend::Memory(cache) => cache.proof(secret),
            Backend::Redis(redis) => redis.proof(secret),
        })
    }

    /// Counters, as the memory backend defines them (see [`RedisRefresh::stats`]).
    pub fn stats(&self) -> RefreshStats {
        match &self.backend {
            Backend::Memory(cache) => cache.stats(),
            Backend::Redis(redis) => redis.stats(),
        }
    }

    /// Answers held in this process (for the Redis backend: those answered while Redis was
    /// down).
    pub async fn entry_count(&self) -> u64 {
        match &self.backend {
            Backend::Memory(cache) => cache.entry_count().await,
            Backend::Redis(redis) => redis.fallback_entry_count().await,
        }
    }

    /// Keys with a flight running in this process.
    pub fn in_flight(&self) -> usize {
        match &self.backend {
            Backend::Memory(cache) => cache.in_flight(),
            Backend::Redis(redis) => redis.in_flight(),
        }
    }
}
