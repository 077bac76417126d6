//! The shared backend's flight: callers in this process coalesce on a local flight, whose
//! leader serves a stored answer, leads the upstream call under the Redis lock, or waits for
//! another replica's flight; and falls back to an in-process cache when Redis fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::portable::{Portable, PortableFailure};
use super::store::{Keys, LOCK_MARGIN, keep};
use crate::crypto::KeySet;
use crate::redis::lock::Looked;
use crate::redis::{Redis, Unavailable};
use crate::refresh::cache::RefreshCache;
use crate::refresh::entries::Key;
use crate::refresh::types::{RefreshFailure, RefreshStats, Refreshed, Served, Source};

/// What a shared flight hands to the callers coalesced on it in this process.
#[derive(Clone)]
struct Answer<V> {
    value: V,
    /// Time since the upstream answered (on whichever replica called it).
    age: Duration,
    source: Source,
}

impl<V: Clone + Send + Sync + 'static> Refreshed for Answer<V> {
    /// Never cached locally: Redis is the cache.
    fn lifetime(&self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

/// A value in the fallback cache: a type of its own, so the cache code compiled for the memory
/// backend has that backend as its only caller and is inlined there as before.
#[derive(Clone)]
struct FallbackAnswer<V>(V);

impl<V: Refreshed> Refreshed for FallbackAnswer<V> {
    fn lifetime(&self) -> Option<Duration> {
        self.0.lifetime()
    }
}

/// The shared backend. Cheap to clone.
pub struct RedisRefresh<V: Refreshed, E: RefreshFailure> {
    inner: Arc<RedisRefreshCore<V, E>>,
}

impl<V: Refreshed, E: RefreshFailure> Clone for RedisRefresh<V, E> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

struct RedisRefreshCore<V: Refreshed, E: RefreshFailure> {
    redis: Redis,
    keys: Arc<KeySet>,
    /// The hash domain of this cache's keys: two caches on one Redis never share a key.
    domain: &'static str,
    /// Coalesces this process's callers; caches nothing.
    local: RefreshCache<Answer<V>, E>,
    /// Cache and single flight while Redis is down.
    fallback: RefreshCache<FallbackAnswer<V>, E>,
    ttl: Duration,
    recheck: Duration,
    hits: AtomicU64,
    upstream: AtomicU64,
    waited: AtomicU64,
    upstream_errors: AtomicU64,
}

impl<V: Refreshed + Portable, E: PortableFailure> RedisRefresh<V, E> {
    /// `ttl` and `max_entries` as for the memory backend (the latter bounds the fallback
    /// cache). `domain` separates this cache's Redis keys from another's on the same Redis
    /// (both token routes' refreshes use `refresh`).
    pub(crate) fn new(
        redis: Redis,
        keys: Arc<KeySet>,
        domain: &'static str,
        ttl: Duration,
        max_entries: u64,
    ) -> Self {
        Self {
            inner: Arc::new(RedisRefreshCore {
                redis,
                keys,
                domain,
                local: RefreshCache::new(Duration::ZERO, 0),
                fallback: RefreshCache::new(ttl, max_entries),
                ttl,
                recheck: Duration::from_millis(200),
                hits: AtomicU64::new(0),
                upstream: AtomicU64::new(0),
                waited: AtomicU64::new(0),
                upstream_errors: AtomicU64::new(0),
            }),
        }
    }

    /// As [`RefreshCache::get_or_refresh`] for `refresh_token` within `scope` (the provider and
    /// the client id), with the cache and flight shared through Redis.
    ///
    /// `upstream_deadline` bounds the call `fetch` makes; a flight's lock outlives it by
    /// [`LOCK_MARGIN`].
    pub(crate) async fn get_or_refresh<F, Fut>(
        &self,
        scope: &[&str],
        refresh_token: &str,
        upstream_deadline: Duration,
        fetch: F,
    ) -> Result<Served<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let local = self.inner.local.key(scope, refresh_token);
        let served = self
            .inner
            .local
            .serve(local, || {
                let inner = Arc::clone(&self.inner);
                let mut parts: Vec<&[u8]> = scope.iter().map(|p| p.as_bytes()).collect();
                parts.push(refresh_token.as_bytes());
                let hash = inner.keys.hash(inner.domain, &parts);
                let fallback = inner.fallback.key(scope, refresh_token);
                let upstream = fetch();
                let lock_ttl = upstream_deadline + LOCK_MARGIN;
                Box::pin(async move { inner.flight(hash, lock_ttl, fallback, upstream).await })
            })
            .await?;
        let Served { value: answer, age, source } = served;
        let source = if source == Source::Coalesced { Source::Coalesced } else { answer.source };
        Ok(Served { value: answer.value, age: answer.age + age, source })
    }

    /// The keyed hash of a client secret a caller presented, under a key derived from the
    /// `[state]` key set: every replica computes the same one.
    pub(crate) fn proof(&self, secret: &str) -> [u8; 32] {
        self.inner.keys.hash("refresh-proof", &[secret.as_bytes()])
    }

    /// Counters as the memory backend defines them: `hits` answered from Redis (or the
    /// fallback cache), `misses` calls this replica made upstream, `coalesced` callers that
    /// joined a flight here or on another replica.
    pub(crate) fn stats(&self) -> RefreshStats {
        let i = &self.inner;
        let (local, fallback) = (i.local.stats(), i.fallback.stats());
        RefreshStats {
            hits: i.hits.load(Ordering::Relaxed) + fallback.hits,
            misses: i.upstream.load(Ordering::Relaxed) + fallback.misses,
            coalesced: local.coalesced + i.waited.load(Ordering::Relaxed) + fallback.coalesced,
            upstream_errors: i.upstream_errors.load(Ordering::Relaxed) + fallback.upstream_errors,
        }
    }

    /// Answers held in this process: those answered while Redis was down.
    pub(crate) async fn fallback_entry_count(&self) -> u64 {
        self.inner.fallback.entry_count().await
    }

    /// Keys with a flight running in this process.
    pub(crate) fn in_flight(&self) -> usize {
        self.inner.local.in_flight() + self.inner.fallback.in_flight()
    }
}

/// How many looks a flight makes when each finds a record it refuses (the next look deletes
/// the refused one, so a second refusal means someone keeps writing them) before it gives up.
const LOOKS: usize = 3;

impl<V: Refreshed + Portable, E: PortableFailure> RedisRefreshCore<V, E> {
    async fn flight<Fut>(
        self: Arc<Self>,
        hash: [u8; 32],
        lock_ttl: Duration,
        fallback: Key,
        upstream: Fut,
    ) -> Result<Answer<V>, E>
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        // An answer this process got while Redis was down is still the answer.
        if let Some(served) = self.fallback.peek(&fallback).await {
            self.redis.fell_back();
            return Ok(Answer { value: served.value.0, age: served.age, source: Source::Cache });
        }
        if !self.redis.is_up() {
            return self.fall_back(fallback, upstream).await;
        }
        let keys = Keys::new(&self.redis, hash, lock_ttl, self.ttl);
        // Listening before the first look: a message published after it cannot be missed.
        let events = self.redis.events();
        let mut refused = None;
        for _ in 0..LOOKS {
            match keys.get_or_lock(&self.redis, None, refused.as_deref()).await {
                Err(Unavailable) => return self.fall_back(fallback, upstream).await,
                Ok(Looked::Found(stored)) => match keys.open::<V, E>(&self.keys, &stored, None) {
                    Some(Ok((value, age))) => {
                        self.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(Answer { value, age, source: Source::Cache });
                    }
                    // Unreadable (altered) or stale: the next look deletes it and takes the lock,
                    // or finds the flight that did.
                    _ => refused = Some(stored),
                },
                Ok(Looked::Acquired) => {
                    return self.lead(&keys, fallback, upstream).await;
                }
                Ok(Looked::Busy(flight)) => {
                    self.waited.fetch_add(1, Ordering::Relaxed);
                    return self.wait(keys, flight, events, fallback, upstream).await;
                }
            }
        }
        tracing::warn!("state: refused refresh answers keep coming back in Redis; the refresh is refused");
        Err(E::internal())
    }

    async fn lead<Fut>(&self, keys: &Keys, fallback: Key, upstream: Fut) -> Result<Answer<V>, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        self.upstream.fetch_add(1, Ordering::Relaxed);
        let result = upstream.await;
        let (stored, keep) = match &result {
            Ok(value) => (keys.seal_answer(&self.keys, value), keep(value, self.ttl)),
            Err(error) => {
                self.upstream_errors.fetch_add(1, Ordering::Relaxed);
                if error.evicts() {
                    self.fallback.invalidate(&fallback).await;
                }
                // Kept while this flight's waiters may still re-read it.
                (keys.seal_error(&self.keys, error), keys.lock.lease())
            }
        };
        if keys.finish(&self.redis, &stored, keep).await.is_err() {
            // The caller still gets its answer; waiters elsewhere fall back on their own.
            self.redis.fell_back();
        }
        result.map(|value| Answer { value, age: Duration::ZERO, source: Source::Upstream })
    }

    async fn wait<Fut>(
        &self,
        keys: Keys,
        mut flight: Vec<u8>,
        mut events: tokio::sync::broadcast::Receiver<bytes::Bytes>,
        fallback: Key,
        upstream: Fut,
    ) -> Result<Answer<V>, E>
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        // The running leader answers or its lock expires within `lock_ttl`; after that a
        // re-read takes the lock. This bound only stops a wait that somehow outlives both.
        let deadline = tokio::time::Instant::now() + 2 * keys.lock.lease();
        let mut listening = true;
        // A record the last look refused: looked at again at once, and deleted if still there.
        let mut refused: Option<Vec<u8>> = None;
        loop {
            if refused.is_none() {
                let recheck = tokio::time::sleep(self.recheck);
                tokio::select! {
                    msg = events.recv(), if listening => match msg {
                        Ok(msg) => {
                            if msg.len() > 32
                                && msg[..32] == keys.hash
                                && let Some(outcome) = keys.open_published(&self.keys, &msg[32..], &flight)
                            {
                                return self.answer_waiter(outcome);
                            }
                            continue;
                        }
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => listening = false,
                    },
                    () = recheck => {}
                    () = tokio::time::sleep_until(deadline) => return Err(E::timed_out()),
                }
            } else if tokio::time::Instant::now() >= deadline {
                return Err(E::timed_out());
            }
            let looked = keys.get_or_lock(&self.redis, Some(&flight), refused.as_deref()).await;
            refused = None;
            match looked {
                Err(Unavailable) => return self.fall_back(fallback, upstream).await,
                Ok(Looked::Found(stored)) => match keys.open(&self.keys, &stored, Some(&flight)) {
                    Some(outcome) => return self.answer_waiter(outcome),
                    None => refused = Some(stored),
                },
                Ok(Looked::Acquired) => {
                    tracing::info!(
                        "state: a refresh's leader did not finish in time; this replica takes over"
                    );
                    return self.lead(&keys, fallback, upstream).await;
                }
                Ok(Looked::Busy(current)) => flight = current,
            }
        }
    }

    fn answer_waiter(&self, outcome: Result<(V, Duration), E>) -> Result<Answer<V>, E> {
        outcome.map(|(value, age)| Answer { value, age, source: Source::Coalesced })
    }

    async fn fall_back<Fut>(&self, fallback: Key, upstream: Fut) -> Result<Answer<V>, E>
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        self.redis.fell_back();
        let held = async move { upstream.await.map(FallbackAnswer) };
        let served = self.fallback.serve(fallback, move || held).await?;
        Ok(Answer { value: served.value.0, age: served.age, source: served.source })
    }
}

/// Shows configuration and counters only.
impl<V: Refreshed + Portable, E: PortableFailure> std::fmt::Debug for RedisRefresh<V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRefresh")
            .field("ttl", &self.inner.ttl)
            .field("redis", &self.inner.redis)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
