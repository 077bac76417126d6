//! The shared backend's flight: callers in this process coalesce on a local flight, whose
//! leader serves a stored answer, leads the upstream call under the Redis lock, or waits for
//! another replica's flight; and, when Redis fails for longer than `failover_wait`, refuses or
//! uses an in-process flight as the provider's `when_unavailable` says.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use tokio::time::Instant;

use super::portable::{Portable, PortableFailure};
use super::store::{Keys, LOCK_MARGIN, keep};
use crate::config::WhenUnavailable;
use crate::crypto::KeySet;
use crate::redis::lock::Looked;
use crate::redis::{Redis, Refusal, Unavailable};
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
        policy: WhenUnavailable,
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
                let outage = Outage {
                    policy,
                    no_ack: false,
                    deadline: Instant::now() + upstream_deadline,
                    until: None,
                };
                Box::pin(async move { inner.flight(hash, lock_ttl, fallback, outage, upstream).await })
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

/// What a flight does when Redis fails: wait for it at most `failover_wait` from the first
/// failure (and never past the token call's deadline), then follow `policy`.
struct Outage {
    policy: WhenUnavailable,
    /// Whether too few replicas acknowledged a lock this flight took.
    no_ack: bool,
    /// The token call's deadline, from when the flight started.
    deadline: Instant,
    /// Set at the first failure: until when this flight waits for Redis.
    until: Option<Instant>,
}

impl Outage {
    /// What a refusal is counted as: too few acknowledgements, or the outage's own reason.
    fn refusal(&self) -> Option<Refusal> {
        self.no_ack.then_some(Refusal::NoReplicaAck)
    }

    /// Wait for Redis to answer again; `false` when it did not in time.
    async fn wait(&mut self, redis: &Redis) -> bool {
        let until = *self.until.get_or_insert_with(|| redis.failover_deadline().min(self.deadline));
        Instant::now() < until && redis.wait_master(until).await
    }
}

impl<V: Refreshed + Portable, E: PortableFailure> RedisRefreshCore<V, E> {
    async fn flight<Fut>(
        self: Arc<Self>,
        hash: [u8; 32],
        lock_ttl: Duration,
        fallback: Key,
        mut outage: Outage,
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
        let keys = Keys::new(&self.redis, hash, lock_ttl, self.ttl);
        // Listening before the first look: a message published after it cannot be missed.
        let events = self.redis.events();
        let mut refused = None;
        let mut looks = 0;
        loop {
            let looked = keys.get_or_lock(&self.redis, None, refused.as_deref()).await;
            // Taken, or taken by a look whose answer was lost (nobody else holds it, and nothing
            // was sent upstream yet).
            let ours = keys.lock.ours(&looked);
            match looked {
                Err(Unavailable) if outage.wait(&self.redis).await => {}
                Err(Unavailable) => return self.unavailable(&outage, fallback, upstream).await,
                Ok(Looked::Found(stored)) => match keys.open::<V, E>(&self.keys, &stored, None) {
                    Some(Ok((value, age))) => {
                        self.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(Answer { value, age, source: Source::Cache });
                    }
                    // Unreadable (altered) or stale: the next look deletes it and takes the lock,
                    // or finds the flight that did.
                    _ => {
                        looks += 1;
                        if looks == LOOKS {
                            tracing::warn!(
                                "state: refused refresh answers keep coming back in Redis; the refresh is refused"
                            );
                            return Err(E::internal());
                        }
                        refused = Some(stored);
                    }
                },
                Ok(Looked::Busy(flight, left)) if !ours => {
                    self.waited.fetch_add(1, Ordering::Relaxed);
                    let leader_done = Instant::now() + left;
                    return self.wait(keys, (flight, leader_done), events, fallback, outage, upstream).await;
                }
                Ok(_) if self.acked(&keys, &mut outage).await => {
                    return self.lead(keys, fallback, upstream).await;
                }
                // Too few replicas have the lock: as on an outage.
                Ok(_) if outage.wait(&self.redis).await => {}
                Ok(_) => return self.unavailable(&outage, fallback, upstream).await,
            }
        }
    }

    /// Whether `replicas_ack` replicas have the lock this flight took (always, with none asked
    /// for). When not, the lock is let go, so that nobody waits on a flight that is not made.
    async fn acked(&self, keys: &Keys, outage: &mut Outage) -> bool {
        if self.redis.replicas_ack() == 0 {
            return true;
        }
        let acked = self.redis.acks(keys.lock.key()).await;
        if acked.is_ok_and(|n| self.redis.enough_acks(n)) {
            return true;
        }
        outage.no_ack = true;
        let _ = keys.lock.release(&self.redis, b"").await;
        false
    }

    async fn lead<Fut>(&self, keys: Keys, fallback: Key, upstream: Fut) -> Result<Answer<V>, E>
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
            // The caller gets its answer now; the answer is stored (and the waiters woken) as
            // soon as Redis is back, while this flight's lease lasts, so nobody spends the
            // refresh token again after its lock lapses.
            tokio::spawn(store_later(self.redis.clone(), keys, stored, keep));
        }
        result.map(|value| Answer { value, age: Duration::ZERO, source: Source::Upstream })
    }

    /// Wait for the flight `leader` (its lock token, and when its lease ends) to answer.
    async fn wait<Fut>(
        &self,
        keys: Keys,
        leader: (Vec<u8>, Instant),
        mut events: tokio::sync::broadcast::Receiver<bytes::Bytes>,
        fallback: Key,
        mut outage: Outage,
        upstream: Fut,
    ) -> Result<Answer<V>, E>
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let (mut flight, mut leader_done) = leader;
        // The running leader answers or its lock expires within `lock_ttl`; after that a
        // re-read takes the lock. This bound only stops a wait that somehow outlives both.
        let deadline = Instant::now() + 2 * keys.lock.lease();
        // Whether this waiter holds the lock while the leader's lease still runs.
        let mut holding = false;
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
                                return self.answer_waiter(&keys, holding, outcome).await;
                            }
                            continue;
                        }
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => listening = false,
                    },
                    () = recheck => {}
                    () = tokio::time::sleep_until(deadline) => return Err(E::timed_out()),
                }
            } else if Instant::now() >= deadline {
                return Err(E::timed_out());
            }
            let looked = keys.get_or_lock(&self.redis, Some(&flight), refused.as_deref()).await;
            refused = None;
            let ours = keys.lock.ours(&looked);
            match looked {
                // Redis back within `failover_wait`: look again (the stored answer first).
                Err(Unavailable) if outage.wait(&self.redis).await => {}
                Err(Unavailable) => return self.unavailable(&outage, fallback, upstream).await,
                Ok(Looked::Found(stored)) => match keys.open(&self.keys, &stored, Some(&flight)) {
                    Some(outcome) => return self.answer_waiter(&keys, holding, outcome).await,
                    None => refused = Some(stored),
                },
                // The lock is free although the leader's lease still runs, and no answer is
                // stored: Redis lost the lock (a restart, a failover), not the leader, whose
                // answer may still come. Hold the lock until that lease ends, and keep waiting;
                // the looks then serve the answer, else this waiter leads.
                Ok(Looked::Busy(current, left)) if !ours => {
                    (flight, leader_done) = (current, Instant::now() + left);
                }
                Ok(_) if Instant::now() < leader_done => holding = true,
                Ok(_) if self.acked(&keys, &mut outage).await => {
                    tracing::info!(
                        "state: a refresh's leader did not finish in time; this replica takes over"
                    );
                    return self.lead(keys, fallback, upstream).await;
                }
                Ok(_) if outage.wait(&self.redis).await => holding = false,
                Ok(_) => return self.unavailable(&outage, fallback, upstream).await,
            }
        }
    }

    /// A waiter's answer; a lock it held for the leader is released.
    async fn answer_waiter(
        &self,
        keys: &Keys,
        holding: bool,
        outcome: Result<(V, Duration), E>,
    ) -> Result<Answer<V>, E> {
        if holding {
            let _ = keys.lock.release(&self.redis, b"").await;
        }
        outcome.map(|(value, age)| Answer { value, age, source: Source::Coalesced })
    }

    /// No Redis master answered within `failover_wait`: refuse, or run this replica's own flight.
    async fn unavailable<Fut>(&self, outage: &Outage, fallback: Key, upstream: Fut) -> Result<Answer<V>, E>
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        match outage.policy {
            WhenUnavailable::Refuse => {
                self.redis.refused(outage.refusal());
                Err(E::unavailable())
            }
            WhenUnavailable::Local => self.fall_back(fallback, upstream).await,
        }
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

/// Store a flight's outcome that Redis did not take when the flight ended: retried whenever
/// Redis is back, until the flight's lease ends (after that, another flight may hold the key).
async fn store_later(redis: Redis, keys: Keys, stored: Vec<u8>, keep: Duration) {
    let lease_end = Instant::now() + keys.lock.lease();
    while redis.wait_up(lease_end).await {
        if keys.finish(&redis, &stored, keep).await.is_ok() {
            tracing::info!("state: a refresh answer Redis missed is stored now");
            return;
        }
        if Instant::now() >= lease_end {
            break;
        }
    }
    tracing::warn!("state: a refresh answer could not be stored in Redis before its lock lapsed");
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
