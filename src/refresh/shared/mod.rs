//! The refresh flight and cache shared by replicas through Redis (`[state] backend = "redis"`).
//!
//! # How a call flows
//!
//! Callers in this process coalesce first, in a local [`RefreshCache`] with caching off, so one
//! Redis exchange serves all of them. Its leader then runs [`Inner::flight`]:
//!
//! 1. One script, one round trip: if Redis holds an answer for the key, serve it
//!    ([`Source::Cache`]); else try to take the flight's lock (`SET NX PX`, lifetime longer than
//!    the upstream deadline); else note whose flight is running.
//! 2. The lock's winner calls the upstream, then in one pipelined round trip stores the sealed
//!    answer (success: for `min(ttl, lifetime)`, as the local cache would; error: a marker
//!    tagged with the flight, for the lock's lifetime), publishes it on the events channel, and
//!    releases the lock if it still holds it.
//! 3. Everyone else waits for the message of their key (pub/sub, no polling loop), re-reading
//!    the key on a slow timer in case a message was missed. A success is served to them
//!    ([`Source::Coalesced`]); an error marker of the flight they waited on gives them the same
//!    error. A leader that died leaves its lock to expire; the next re-read takes the lock and
//!    that waiter leads.
//!
//! Errors are never served as answers to callers that did not wait on that flight: a fresh
//! caller skips an error marker and starts a new flight. An evicting error (`invalid_grant`)
//! overwrites a cached success, so no replica serves it again.
//!
//! Keys are keyed hashes (`[state]` key set, the same on every replica) of the cache's domain
//! (legacy and v2 refreshes have one each), the client id and the refresh token; values and messages are sealed with the key set, bound to their Redis key.
//!
//! # When Redis fails
//!
//! Any failed or slow command makes this replica fall back at once to an in-process
//! [`RefreshCache`] (cache and single flight, as with the memory backend), counted in
//! [`RedisStats::fallbacks`](crate::state::redis::RedisStats). While Redis is down, concurrent
//! refreshes of one token on different replicas are not coalesced with each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use tokio::sync::broadcast::error::RecvError;

use super::cache::RefreshCache;
use super::types::{RefreshFailure, RefreshStats, Refreshed, Served, Source};
use crate::crypto::KeySet;
use crate::oauth::Secret;
use crate::state::redis::{Redis, Unavailable};

/// A value that can be written to Redis and read back by another replica.
pub trait Portable: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Option<Self>;
}

/// A refresh error that waiters on other replicas can be given.
pub trait SharedFailure: RefreshFailure + Portable {
    /// What a waiter gets when the flight it waited on neither answered nor let go in time.
    fn timed_out() -> Self;
}

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
            Self::Shared(shared) => shared.inner.fallback.entry_count().await,
        }
    }

    /// Keys with a flight running in this process.
    pub fn in_flight(&self) -> usize {
        match self {
            Self::Memory(cache) => cache.in_flight(),
            Self::Shared(shared) => shared.inner.local.in_flight() + shared.inner.fallback.in_flight(),
        }
    }
}

/// What a shared flight hands to the callers coalesced on it in this process.
#[derive(Clone)]
pub struct Answer<V> {
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
struct Held<V>(V);

impl<V: Refreshed> Refreshed for Held<V> {
    fn lifetime(&self) -> Option<Duration> {
        self.0.lifetime()
    }
}

/// The shared backend. Cheap to clone.
pub struct SharedRefresh<V: Refreshed, E: RefreshFailure> {
    inner: Arc<Inner<V, E>>,
}

impl<V: Refreshed, E: RefreshFailure> Clone for SharedRefresh<V, E> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

struct Inner<V: Refreshed, E: RefreshFailure> {
    redis: Redis,
    keys: Arc<KeySet>,
    /// The hash domain of this cache's keys: two caches on one Redis never share a key.
    domain: &'static str,
    /// Coalesces this process's callers; caches nothing.
    local: RefreshCache<Answer<V>, E>,
    /// Cache and single flight while Redis is down.
    fallback: RefreshCache<Held<V>, E>,
    ttl: Duration,
    recheck: Duration,
    hits: AtomicU64,
    upstream: AtomicU64,
    waited: AtomicU64,
    upstream_errors: AtomicU64,
}

/// Serve a stored answer, take the lock, or report the running flight's lock token. Error
/// markers are returned only to a waiter whose flight token (`ARGV[3]`) they carry.
const GET_OR_LOCK: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  if string.sub(v, 1, 1) == 's' or (ARGV[3] ~= '' and string.sub(v, 2, 17) == ARGV[3]) then
    return {1, v}
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2, ''}
end
return {3, redis.call('GET', KEYS[2]) or ''}
";

/// Delete the lock only if this flight still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

type Token = [u8; 16];

/// How much longer than the upstream deadline a flight's lock lives: time for the leader's
/// store-and-publish after a call that took the whole deadline.
pub const LOCK_MARGIN: Duration = Duration::from_secs(2);

enum Looked {
    /// A stored answer (`s…`) or this waiter's error marker (`e…`).
    Found(Vec<u8>),
    /// This caller holds the lock now.
    Locked,
    /// Another flight holds the lock; its token.
    Busy(Vec<u8>),
}

/// The Redis keys of one refresh, and its lock's lifetime.
struct Keys {
    hash: [u8; 32],
    value: String,
    lock: String,
    lock_ttl: Duration,
}

impl<V: Refreshed + Portable, E: SharedFailure> SharedRefresh<V, E> {
    /// `ttl` and `max_entries` as for the memory backend (the latter bounds the fallback
    /// cache). `domain` separates this cache's Redis keys from another's on the same Redis
    /// (legacy refreshes use `refresh`, v2 refreshes `refresh-v2`).
    pub fn new(
        redis: Redis,
        keys: Arc<KeySet>,
        domain: &'static str,
        ttl: Duration,
        max_entries: u64,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
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

    /// As [`RefreshCache::get_or_refresh`], with the cache and flight shared through Redis.
    ///
    /// `upstream_deadline` bounds the call `fetch` makes; a flight's lock outlives it by
    /// [`LOCK_MARGIN`].
    pub async fn get_or_refresh<F, Fut>(
        &self,
        client_id: &str,
        refresh_token: &str,
        upstream_deadline: Duration,
        fetch: F,
    ) -> Result<Served<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let served = self
            .inner
            .local
            .get_or_refresh(client_id, refresh_token, || {
                let inner = Arc::clone(&self.inner);
                let hash = inner.keys.hash(inner.domain, &[client_id.as_bytes(), refresh_token.as_bytes()]);
                let (client_id, refresh_token) = (client_id.to_owned(), Secret::new(refresh_token));
                let upstream = fetch();
                let lock_ttl = upstream_deadline + LOCK_MARGIN;
                Box::pin(
                    async move { inner.flight(hash, lock_ttl, &client_id, &refresh_token, upstream).await },
                )
            })
            .await?;
        let Served { value: answer, age, source } = served;
        let source = if source == Source::Coalesced { Source::Coalesced } else { answer.source };
        Ok(Served { value: answer.value, age: answer.age + age, source })
    }

    /// Counters as the memory backend defines them: `hits` answered from Redis (or the
    /// fallback cache), `misses` calls this replica made upstream, `coalesced` callers that
    /// joined a flight here or on another replica.
    pub fn stats(&self) -> RefreshStats {
        let i = &self.inner;
        let (local, fallback) = (i.local.stats(), i.fallback.stats());
        RefreshStats {
            hits: i.hits.load(Ordering::Relaxed) + fallback.hits,
            misses: i.upstream.load(Ordering::Relaxed) + fallback.misses,
            coalesced: local.coalesced + i.waited.load(Ordering::Relaxed) + fallback.coalesced,
            upstream_errors: i.upstream_errors.load(Ordering::Relaxed) + fallback.upstream_errors,
        }
    }
}

impl<V: Refreshed + Portable, E: SharedFailure> Inner<V, E> {
    async fn flight<Fut>(
        self: Arc<Self>,
        hash: [u8; 32],
        lock_ttl: Duration,
        client_id: &str,
        refresh_token: &Secret,
        upstream: Fut,
    ) -> Result<Answer<V>, E>
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        // An answer this process got while Redis was down is still the answer.
        if let Some(served) = self.fallback.peek(client_id, refresh_token.expose()).await {
            self.redis.fell_back();
            return Ok(Answer { value: served.value.0, age: served.age, source: Source::Cache });
        }
        if !self.redis.is_up() {
            return self.fall_back(client_id, refresh_token, upstream).await;
        }
        let keys = Keys {
            hash,
            value: self.redis.key("refresh", &hash),
            lock: self.redis.key("refresh-lock", &hash),
            lock_ttl,
        };
        // Listening before the first look: a message published after it cannot be missed.
        let events = self.redis.events();
        let mut token = [0u8; 16];
        rand::rng().fill_bytes(&mut token);
        match self.get_or_lock(&keys, &token, None).await {
            Err(Unavailable) => self.fall_back(client_id, refresh_token, upstream).await,
            Ok(Looked::Found(stored)) => match self.open(&keys, &stored, None) {
                Some(Ok((value, age))) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    Ok(Answer { value, age, source: Source::Cache })
                }
                // Unreadable (another key set, or altered): treat as absent and call upstream.
                _ => self.lead(&keys, &token, client_id, refresh_token, upstream).await,
            },
            Ok(Looked::Locked) => self.lead(&keys, &token, client_id, refresh_token, upstream).await,
            Ok(Looked::Busy(flight)) => {
                self.waited.fetch_add(1, Ordering::Relaxed);
                self.wait(keys, token, flight, events, client_id, refresh_token, upstream).await
            }
        }
    }

    async fn lead<Fut>(
        &self,
        keys: &Keys,
        token: &Token,
        client_id: &str,
        refresh_token: &Secret,
        upstream: Fut,
    ) -> Result<Answer<V>, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        self.upstream.fetch_add(1, Ordering::Relaxed);
        let result = upstream.await;
        let now = unix_ms();
        let (stored, keep) = match &result {
            Ok(value) => {
                let bound = value.lifetime().map_or(self.ttl, |l| l.min(self.ttl));
                let mut plain = now.to_be_bytes().to_vec();
                plain.extend_from_slice(&value.encode());
                let mut stored = vec![b's'];
                stored.extend_from_slice(&self.keys.seal(keys.value.as_bytes(), &plain));
                (stored, bound)
            }
            Err(error) => {
                self.upstream_errors.fetch_add(1, Ordering::Relaxed);
                if error.evicts() {
                    self.fallback.invalidate(client_id, refresh_token.expose()).await;
                }
                let mut stored = vec![b'e'];
                stored.extend_from_slice(token);
                stored.extend_from_slice(&self.keys.seal(keys.value.as_bytes(), &error.encode()));
                (stored, keys.lock_ttl)
            }
        };
        let mut message = keys.hash.to_vec();
        message.extend_from_slice(&stored);
        let mut pipe = redis::pipe();
        let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        if keep_ms > 0 {
            pipe.cmd("SET").arg(&keys.value).arg(&stored).arg("PX").arg(keep_ms).ignore();
        } else {
            // Not cached: the success is only published; drop any stale marker.
            pipe.cmd("DEL").arg(&keys.value).ignore();
        }
        pipe.cmd("PUBLISH").arg(self.redis.events_channel()).arg(&message).ignore();
        pipe.cmd("EVAL").arg(RELEASE).arg(1).arg(&keys.lock).arg(&token[..]).ignore();
        if self.redis.run(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await.is_err() {
            // The caller still gets its answer; waiters elsewhere fall back on their own.
            self.redis.fell_back();
        }
        result.map(|value| Answer { value, age: Duration::ZERO, source: Source::Upstream })
    }

    #[allow(clippy::too_many_arguments)]
    async fn wait<Fut>(
        &self,
        keys: Keys,
        token: Token,
        mut flight: Vec<u8>,
        mut events: tokio::sync::broadcast::Receiver<bytes::Bytes>,
        client_id: &str,
        refresh_token: &Secret,
        upstream: Fut,
    ) -> Result<Answer<V>, E>
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        // The running leader answers or its lock expires within `lock_ttl`; after that a
        // re-read takes the lock. This bound only stops a wait that somehow outlives both.
        let deadline = tokio::time::Instant::now() + 2 * keys.lock_ttl;
        let mut listening = true;
        loop {
            let recheck = tokio::time::sleep(self.recheck);
            tokio::select! {
                msg = events.recv(), if listening => match msg {
                    Ok(msg) => {
                        if msg.len() > 32
                            && msg[..32] == keys.hash
                            && let Some(outcome) = self.open(&keys, &msg[32..], Some(&flight))
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
            match self.get_or_lock(&keys, &token, Some(&flight)).await {
                Err(Unavailable) => return self.fall_back(client_id, refresh_token, upstream).await,
                Ok(Looked::Found(stored)) => match self.open(&keys, &stored, Some(&flight)) {
                    Some(outcome) => return self.answer_waiter(outcome),
                    None => return self.lead(&keys, &token, client_id, refresh_token, upstream).await,
                },
                Ok(Looked::Locked) => {
                    tracing::info!(
                        "state: a refresh's leader did not finish in time; this replica takes over"
                    );
                    return self.lead(&keys, &token, client_id, refresh_token, upstream).await;
                }
                Ok(Looked::Busy(current)) => flight = current,
            }
        }
    }

    fn answer_waiter(&self, outcome: Result<(V, Duration), E>) -> Result<Answer<V>, E> {
        outcome.map(|(value, age)| Answer { value, age, source: Source::Coalesced })
    }

    async fn get_or_lock(
        &self,
        keys: &Keys,
        token: &Token,
        waiting_on: Option<&[u8]>,
    ) -> Result<Looked, Unavailable> {
        let lock_ms = u64::try_from(keys.lock_ttl.as_millis()).unwrap_or(u64::MAX);
        let script = get_or_lock_script();
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&keys.value)
            .key(&keys.lock)
            .arg(&token[..])
            .arg(lock_ms)
            .arg(waiting_on.unwrap_or(b""));
        let (kind, bytes): (u8, Vec<u8>) =
            self.redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        Ok(match kind {
            1 => Looked::Found(bytes),
            2 => Looked::Locked,
            _ => Looked::Busy(bytes),
        })
    }

    /// Open a stored answer: `Ok` with the value and its age for a success, `Err` for an error
    /// marker of the flight `waiting_on`; `None` for anything else (another flight's marker,
    /// a value this key set cannot open).
    fn open(
        &self,
        keys: &Keys,
        stored: &[u8],
        waiting_on: Option<&[u8]>,
    ) -> Option<Result<(V, Duration), E>> {
        let aad = keys.value.as_bytes();
        match stored.split_first()? {
            (b's', sealed) => {
                let opened = self.keys.open(aad, sealed).and_then(|plain| {
                    let (at, encoded) = plain.split_first_chunk::<8>()?;
                    let age = Duration::from_millis(unix_ms().saturating_sub(u64::from_be_bytes(*at)));
                    Some((V::decode(encoded)?, age))
                });
                if opened.is_none() {
                    tracing::warn!(
                        "state: a refresh answer in Redis does not open with this [state] key set; calling upstream"
                    );
                }
                opened.map(Ok)
            }
            (b'e', rest) if rest.len() > 16 && Some(&rest[..16]) == waiting_on => {
                let plain = self.keys.open(aad, &rest[16..])?;
                Some(Err(E::decode(&plain)?))
            }
            _ => None,
        }
    }

    async fn fall_back<Fut>(
        &self,
        client_id: &str,
        refresh_token: &Secret,
        upstream: Fut,
    ) -> Result<Answer<V>, E>
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        self.redis.fell_back();
        let held = async move { upstream.await.map(Held) };
        let served = self.fallback.get_or_refresh(client_id, refresh_token.expose(), move || held).await?;
        Ok(Answer { value: served.value.0, age: served.age, source: served.source })
    }
}

fn get_or_lock_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(GET_OR_LOCK))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Shows configuration and counters only.
impl<V: Refreshed + Portable, E: SharedFailure> std::fmt::Debug for SharedRefresh<V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRefresh")
            .field("ttl", &self.inner.ttl)
            .field("redis", &self.inner.redis)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
