//! The refresh cache the token routes call: the memory backend, or the one shared through Redis,
//! as `[state] backend` chose at start; and the scope its keys are built from.

use std::sync::OnceLock;
use std::time::Duration;

use super::flight::RedisRefresh;
use super::portable::{Portable, PortableFailure};
use crate::refresh::cache::RefreshCache;
use crate::refresh::key::Namespace;
use crate::refresh::proof::Proof;
use crate::refresh::types::{RefreshFailure, RefreshStats, Refreshed, Served};

/// Whose refresh token a refresh spends: one client of one provider. Every refresh is keyed by
/// its scope and the token, whichever token route asks and whichever backend serves it: the
/// memory backend keys the client id within the provider's namespace, the shared backend hashes
/// the provider's name, the client id and the token, each length-prefixed. So one token of one
/// client is spent once, and two providers (the default one included) never share an entry.
pub struct Scope<'a> {
    provider: &'a str,
    /// The provider's namespace in the memory backend, derived on first use.
    namespace: &'a OnceLock<Namespace>,
    client_id: &'a str,
}

impl<'a> Scope<'a> {
    pub(crate) fn new(provider: &'a str, namespace: &'a OnceLock<Namespace>, client_id: &'a str) -> Self {
        Self { provider, namespace, client_id }
    }
}

/// The refresh cache in front of the token call: in this process, or shared through Redis.
pub enum Refresher<V: Refreshed, E: RefreshFailure> {
    Memory(RefreshCache<V, E>),
    Shared(RedisRefresh<V, E>),
}

impl<V: Refreshed + Portable, E: PortableFailure> Refresher<V, E> {
    /// Serve a refresh of `refresh_token` within `scope`: a cached answer, the flight in
    /// progress, or `fetch` (see [`RefreshCache::get_or_refresh`]). `upstream_deadline` bounds
    /// the call `fetch` makes (the shared backend's lock outlives it).
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
        match self {
            Self::Memory(cache) => {
                let namespace = scope.namespace.get_or_init(|| cache.namespace(scope.provider));
                cache.get_or_refresh_in(namespace, &[scope.client_id], refresh_token, fetch).await
            }
            // Boxed, so the memory backend's future keeps its size.
            Self::Shared(shared) => {
                let scope = [scope.provider, scope.client_id];
                Box::pin(shared.get_or_refresh(&scope, refresh_token, upstream_deadline, fetch)).await
            }
        }
    }

    /// The proof of a call presenting `secret`: its keyed hash, the same on every replica that
    /// shares this cache.
    pub(crate) fn proof(&self, secret: &str) -> Proof {
        Proof::Presented(match self {
            Self::Memory(cache) => cache.proof(secret),
            Self::Shared(shared) => shared.proof(secret),
        })
    }

    /// Counters, as the memory backend defines them (see [`RedisRefresh::stats`]).
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
