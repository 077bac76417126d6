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
//!    before the call ends, the rest of the call is moved into a `tokio::spawn`ed task, so
//!    a caller hanging up never cancels the upstream call the others (and the cache) are
//!    waiting on. (Driving it in the caller's task saves a task and a wake-up per refresh.)
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
//! This is the memory backend. With `[state] backend = "redis"`, [`shared`] shares the cache and
//! flight between replicas through Redis, still coalescing inside the process with this cache.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    hash::{BuildHasherDefault, Hasher},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac, digest::KeyInit};
use moka::{Expiry, future::Cache};
use rand::RngCore;
use sha2::Sha256;
use tokio::sync::watch;

pub mod shared;

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
    pub fn as_str(self) -> &'static str {
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

/// HMAC-SHA256 of the length-prefixed client id and the refresh token.
type Key = [u8; 32];

/// Hashes a [`Key`] by its first eight bytes. Keys are HMAC outputs under a per-process random
/// secret, so they are already uniform and unpredictable to callers: SipHash over all 32 bytes
/// added no protection, only work on every lookup.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(32) ^ u64::from_ne_bytes(word);
    }

    /// The length prefix of a fixed-size key carries nothing.
    fn write_usize(&mut self, _: usize) {}
}

type KeyHash = BuildHasherDefault<KeyHasher>;

/// A successful upstream answer and when it arrived.
struct Stored<V> {
    value: V,
    answered_at: Instant,
}

/// What a flight publishes to its waiters. `None` until the upstream answers.
type Outcome<V, E> = Option<Result<Arc<Stored<V>>, E>>;

/// One registered upstream call.
struct Flight<V, E> {
    /// Distinguishes this registration from any later one for the same key.
    id: u64,
    /// Where the outcome is published; made by the first caller that joins, so a refresh
    /// nobody joins (the usual case) never allocates a channel.
    tx: Option<watch::Sender<Outcome<V, E>>>,
}

/// Coalesces concurrent refreshes of one refresh token into one upstream call and replays
/// successful answers for a short time. Cloning is cheap and shares all state.
pub struct RefreshCache<V: Refreshed, E: RefreshFailure> {
    inner: Arc<Inner<V, E>>,
}

impl<V: Refreshed, E: RefreshFailure> Clone for RefreshCache<V, E> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

struct Inner<V: Refreshed, E: RefreshFailure> {
    /// HMAC state already keyed with the per-process secret; cloned per derivation.
    mac: Hmac<Sha256>,
    ttl: Duration,
    max_entries: u64,
    cache: Cache<Key, Arc<Stored<V>>, KeyHash>,
    in_flight: Mutex<HashMap<Key, Flight<V, E>, KeyHash>>,
    next_flight_id: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    upstream_errors: AtomicU64,
}

/// Per-entry expiry: `min(ttl, lifetime)` counted from when the upstream answered.
struct RefreshExpiry {
    ttl: Duration,
}

impl RefreshExpiry {
    fn remaining<V: Refreshed>(&self, stored: &Stored<V>, now: Instant) -> Duration {
        let bound = match stored.value.lifetime() {
            Some(lifetime) => lifetime.min(self.ttl),
            None => self.ttl,
        };
        bound.saturating_sub(now.saturating_duration_since(stored.answered_at))
    }
}

impl<V: Refreshed> Expiry<Key, Arc<Stored<V>>> for RefreshExpiry {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Arc<Stored<V>>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(self.remaining(value, created_at))
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        value: &Arc<Stored<V>>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.remaining(value, updated_at))
    }
}

/// What the locked step of a lookup decided.
enum Step<V: Refreshed, E: RefreshFailure> {
    /// A flight for the key is running: wait for it.
    Join(watch::Receiver<Outcome<V, E>>),
    /// An answer landed in the cache after our first check: look again.
    Recheck,
    /// Nothing in flight or cached: this caller starts the upstream call.
    Lead(FlightGuard<V, E>),
}

/// Unregisters a flight when dropped, whatever happened to the upstream call. It lives in
/// the flight's future, so it drops when the call finishes or panics, when a shutting-down
/// runtime drops the detached rest of it, or in the caller if `fetch()` itself panics.
struct FlightGuard<V: Refreshed, E: RefreshFailure> {
    inner: Arc<Inner<V, E>>,
    key: Key,
    id: u64,
    answered: bool,
    /// Already unregistered (by [`FlightGuard::unregister`]).
    done: bool,
}

impl<V: Refreshed, E: RefreshFailure> FlightGuard<V, E> {
    /// Remove the flight from the in-flight map, returning its channel if anyone joined.
    fn unregister(&mut self) -> Option<watch::Sender<Outcome<V, E>>> {
        self.done = true;
        let mut map = self.inner.lock_in_flight();
        let tx = match map.get(&self.key) {
            Some(f) if f.id == self.id => map.remove(&self.key).and_then(|f| f.tx),
            _ => None,
        };
        // Give back the memory of a past burst once it has drained.
        if map.is_empty() && map.capacity() > 1024 {
            map.shrink_to(64);
        }
        tx
    }
}

impl<V: Refreshed, E: RefreshFailure> Drop for FlightGuard<V, E> {
    fn drop(&mut self) {
        if !self.answered {
            // Panicked or dropped before the upstream answered: that call failed, and
            // every waiter gets `E::internal()` (their channel's sender drops here).
            self.inner.upstream_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("upstream refresh task died without answering");
        }
        if !self.done {
            drop(self.unregister());
        }
    }
}

impl<V: Refreshed, E: RefreshFailure> Inner<V, E> {
    fn lock_in_flight(&self) -> MutexGuard<'_, HashMap<Key, Flight<V, E>, KeyHash>> {
        // No code panics while holding this lock, but never turn poisoning into a panic.
        self.in_flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn caching(&self) -> bool {
        !self.ttl.is_zero() && self.max_entries > 0
    }

    fn key(&self, client_id: &str, refresh_token: &str) -> Key {
        key_in(&self.mac, &[client_id], refresh_token)
    }

    async fn cached(&self, key: &Key) -> Option<Arc<Stored<V>>> {
        // moka's futures are large; boxed, they do not size every refresh's future (cache
        // off included) for themselves.
        if self.caching() { Box::pin(self.cache.get(key)).await } else { None }
    }

    /// Under the in-flight lock: join a running flight, notice an answer that landed in
    /// the cache since the caller's first check, or register a new flight.
    ///
    /// A flight inserts into the cache before it unregisters (both ordered by this lock),
    /// so finding no flight here means any answer that finished earlier is visible to
    /// `contains_key`.
    ///
    /// With `may_recheck` false it never answers `Recheck`, which bounds the caller's loop
    /// should the cache keep reporting an entry that `get` does not return.
    fn join_or_lead(self: &Arc<Self>, key: &Key, may_recheck: bool) -> Step<V, E> {
        let mut map = self.lock_in_flight();
        if let Some(flight) = map.get_mut(key) {
            let rx = match &flight.tx {
                Some(tx) => tx.subscribe(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    flight.tx = Some(tx);
                    rx
                }
            };
            return Step::Join(rx);
        }
        if may_recheck && self.caching() && self.cache.contains_key(key) {
            return Step::Recheck;
        }
        let id = self.next_flight_id.fetch_add(1, Ordering::Relaxed);
        map.insert(*key, Flight { id, tx: None });
        let guard = FlightGuard { inner: Arc::clone(self), key: *key, id, answered: false, done: false };
        Step::Lead(guard)
    }

    /// The upstream call of a flight, driven by its leader (or, once the leader hung up, by
    /// a spawned task). It owns the cache insert and the flight's unregistration, so both
    /// happen even if every caller has hung up.
    async fn run_flight<Fut>(
        self: Arc<Self>,
        mut guard: FlightGuard<V, E>,
        fut: Fut,
    ) -> Result<Arc<Stored<V>>, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let result = fut.await;
        let answered_at = Instant::now();
        guard.answered = true;
        let key = guard.key;
        let outcome = match result {
            Ok(value) => {
                let stored = Arc::new(Stored { value, answered_at });
                let expiry = RefreshExpiry { ttl: self.ttl };
                if self.caching() && !expiry.remaining(&stored, Instant::now()).is_zero() {
                    // Before the guard unregisters the flight: see `join_or_lead`.
                    Box::pin(self.cache.insert(key, Arc::clone(&stored))).await;
                }
                Ok(stored)
            }
            Err(error) => {
                self.upstream_errors.fetch_add(1, Ordering::Relaxed);
                if error.evicts() {
                    tracing::debug!("refresh token rejected upstream; evicting cached answer");
                    Box::pin(self.cache.invalidate(&key)).await;
                } else {
                    tracing::debug!("upstream refresh failed; not cached");
                }
                Err(error)
            }
        };
        // Unregister before publishing, so that by the time any caller returns, the key
        // is no longer in flight and a success is already in the cache. A channel exists
        // only if someone joined; the flight is gone from the map, so nobody else can.
        if let Some(tx) = guard.unregister() {
            // `send_replace` stores the value even if every waiter has gone.
            tx.send_replace(Some(outcome.clone()));
        }
        drop(guard);
        outcome
    }
}

/// The key of `refresh_token` within `scope` under `mac`: each part length-prefixed, then the
/// token. Inlined into each caller, as the one derivation was before namespaces.
#[inline(always)]
fn key_in(mac: &Hmac<Sha256>, scope: &[&str], refresh_token: &str) -> Key {
    let mut mac = mac.clone();
    for part in scope {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    mac.update(refresh_token.as_bytes());
    mac.finalize().into_bytes().into()
}

/// A part of the cache of its own (a provider's): its keys are HMACs under a sub-key derived
/// from the cache's key and the namespace's name, so two namespaces never share an entry or a
/// flight, and a lookup costs what it costs without one. Derive it once
/// ([`RefreshCache::namespace`]) and keep it; the same name gives the same namespace.
#[derive(Clone)]
pub struct Namespace {
    mac: Hmac<Sha256>,
}

/// Never shows the sub-key.
impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Namespace")
    }
}

/// A flight's future as its leader drives it. Dropped before it finished (the leader hung
/// up), it hands the rest of the call to a spawned task instead of cancelling it.
struct Detach<T: Send + 'static> {
    fut: Option<std::pin::Pin<Box<dyn Future<Output = T> + Send>>>,
}

impl<T: Send + 'static> Future for Detach<T> {
    /// `None` when the call panicked (its flight is unregistered by then).
    type Output = Option<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        let Some(fut) = self.fut.as_mut() else { return std::task::Poll::Ready(None) };
        // A panic in the call must not take the leader's connection down with it: the flight
        // is dropped (its guard unregisters it and its waiters see `E::internal()`), and so
        // does the leader.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(out)) => {
                self.fut = None;
                std::task::Poll::Ready(Some(out))
            }
            Err(_) => {
                self.fut = None;
                std::task::Poll::Ready(None)
            }
        }
    }
}

impl<T: Send + 'static> Drop for Detach<T> {
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            drop(handle.spawn(fut));
        }
    }
}

impl<V: Refreshed, E: RefreshFailure> RefreshCache<V, E> {
    /// A cache that replays a successful refresh for at most `ttl` (and never past the
    /// token's own lifetime), holding at most `max_entries` answers. `ttl` of zero turns
    /// caching off while still coalescing concurrent identical refreshes.
    ///
    /// The HMAC key is 32 random bytes drawn here, so keys differ per process.
    pub fn new(ttl: Duration, max_entries: u64) -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        // HMAC zero-pads keys shorter than the hash's block to the block size (RFC 2104),
        // so this is exactly HMAC-SHA256 keyed with the 32 random bytes, built without a
        // fallible constructor.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&secret);
        let mac = <Hmac<Sha256> as KeyInit>::new(&block.into());

        let capacity = if ttl.is_zero() { 0 } else { max_entries };
        let cache = Cache::builder()
            .max_capacity(capacity)
            .expire_after(RefreshExpiry { ttl })
            .build_with_hasher(KeyHash::default());

        Self {
            inner: Arc::new(Inner {
                mac,
                ttl,
                max_entries,
                cache,
                in_flight: Mutex::new(HashMap::default()),
                next_flight_id: AtomicU64::new(0),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                coalesced: AtomicU64::new(0),
                upstream_errors: AtomicU64::new(0),
            }),
        }
    }

    /// Serves a refresh of `refresh_token` for `client_id`: from the cache, by joining the
    /// refresh already in flight for the same pair, or by calling `fetch` once and driving its
    /// future here, handed to a spawned task if this caller hangs up first.
    ///
    /// `fetch` is called only by the caller that starts the upstream call, so it should
    /// do its work in the returned future (which is what an `async` block does). If the
    /// task dies without answering, every waiter gets `E::internal()`.
    ///
    /// Needs a Tokio runtime to detach the upstream call of a caller that hangs up; outside
    /// one, the call is cancelled with this caller.
    pub async fn get_or_refresh<F, Fut>(
        &self,
        client_id: &str,
        refresh_token: &str,
        fetch: F,
    ) -> Result<Served<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let key = self.inner.key(client_id, refresh_token);
        self.serve(key, fetch).await
    }

    /// The namespace `name` of this cache (see [`Namespace`]).
    pub fn namespace(&self, name: &str) -> Namespace {
        let mut mac = self.inner.mac.clone();
        mac.update(b"namespace\0");
        mac.update(name.as_bytes());
        let sub: [u8; 32] = mac.finalize().into_bytes().into();
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&sub);
        Namespace { mac: <Hmac<Sha256> as KeyInit>::new(&block.into()) }
    }

    /// [`RefreshCache::get_or_refresh`] within `namespace`, the key scoped by `scope` (the
    /// client id, and for v2 callers the secret they presented): two namespaces or scopes never
    /// share an entry or a flight. Callers use one arity of `scope` per namespace.
    pub async fn get_or_refresh_in<F, Fut>(
        &self,
        namespace: &Namespace,
        scope: &[&str],
        refresh_token: &str,
        fetch: F,
    ) -> Result<Served<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        self.serve(key_in(&namespace.mac, scope, refresh_token), fetch).await
    }

    async fn serve<F, Fut>(&self, key: Key, fetch: F) -> Result<Served<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let inner = &self.inner;
        // An answer can land in the cache between our `get` and the locked step at most
        // once per flight; a few retries cover entries expiring in between as well.
        let mut rechecks_left = 3u8;
        loop {
            if let Some(stored) = inner.cached(&key).await {
                inner.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(served(&stored, Source::Cache));
            }
            match inner.join_or_lead(&key, rechecks_left > 0) {
                Step::Recheck => rechecks_left = rechecks_left.saturating_sub(1),
                Step::Join(rx) => {
                    inner.coalesced.fetch_add(1, Ordering::Relaxed);
                    return wait(rx, Source::Coalesced).await;
                }
                Step::Lead(guard) => {
                    inner.misses.fetch_add(1, Ordering::Relaxed);
                    // If `fetch` panics, `guard` unregisters the flight and the joined
                    // waiters see the sender drop.
                    let fut = fetch();
                    let flight = Detach { fut: Some(Box::pin(Arc::clone(inner).run_flight(guard, fut))) };
                    return match flight.await {
                        Some(Ok(stored)) => Ok(served(&stored, Source::Upstream)),
                        Some(Err(error)) => Err(error),
                        None => Err(E::internal()),
                    };
                }
            }
        }
    }

    /// The cached answer for the pair, if any, without counting or starting anything.
    pub async fn peek(&self, client_id: &str, refresh_token: &str) -> Option<Served<V>> {
        let stored = self.inner.cached(&self.inner.key(client_id, refresh_token)).await?;
        Some(served(&stored, Source::Cache))
    }

    /// Drop the cached answer for the pair, if any.
    pub async fn invalidate(&self, client_id: &str, refresh_token: &str) {
        if self.inner.caching() {
            Box::pin(self.inner.cache.invalidate(&self.inner.key(client_id, refresh_token))).await;
        }
    }

    /// Snapshot of the counters.
    pub fn stats(&self) -> RefreshStats {
        let inner = &self.inner;
        RefreshStats {
            hits: inner.hits.load(Ordering::Relaxed),
            misses: inner.misses.load(Ordering::Relaxed),
            coalesced: inner.coalesced.load(Ordering::Relaxed),
            upstream_errors: inner.upstream_errors.load(Ordering::Relaxed),
        }
    }

    /// Number of cached answers, after running the cache's pending maintenance. Meant for
    /// tests and diagnostics. Invalidated entries are gone from the count; an entry that
    /// expired within the last second or so may still be counted, because moka reaps
    /// per-entry expirations on a timer wheel with roughly one-second ticks (such an entry
    /// is never served).
    pub async fn entry_count(&self) -> u64 {
        self.inner.cache.run_pending_tasks().await;
        self.inner.cache.entry_count()
    }

    /// Number of keys whose upstream call is currently running.
    pub fn in_flight(&self) -> usize {
        self.inner.lock_in_flight().len()
    }
}

/// Shows configuration and counters only: never keys, tokens or the HMAC secret.
impl<V: Refreshed, E: RefreshFailure> fmt::Debug for RefreshCache<V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshCache")
            .field("ttl", &self.inner.ttl)
            .field("max_entries", &self.inner.max_entries)
            .field("entries", &self.inner.cache.entry_count())
            .field("in_flight", &self.in_flight())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn served<V: Clone>(stored: &Stored<V>, source: Source) -> Served<V> {
    Served { value: stored.value.clone(), age: stored.answered_at.elapsed(), source }
}

/// Waits for a flight's outcome. The sender only drops without publishing if the task
/// died, which every waiter reports as `E::internal()`.
async fn wait<V: Refreshed, E: RefreshFailure>(
    mut rx: watch::Receiver<Outcome<V, E>>,
    source: Source,
) -> Result<Served<V>, E> {
    let outcome = match rx.wait_for(Option::is_some).await {
        Ok(published) => published.clone(),
        Err(_) => None,
    };
    match outcome {
        Some(Ok(stored)) => Ok(served(&stored, source)),
        Some(Err(error)) => Err(error),
        None => Err(E::internal()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::{sync::Semaphore, task::JoinSet};

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Tok {
        access: String,
        lifetime: Option<Duration>,
    }

    impl Refreshed for Tok {
        fn lifetime(&self) -> Option<Duration> {
            self.lifetime
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Fail {
        InvalidGrant,
        Unavailable,
        Internal,
    }

    impl RefreshFailure for Fail {
        fn evicts(&self) -> bool {
            matches!(self, Fail::InvalidGrant)
        }
        fn internal() -> Self {
            Fail::Internal
        }
    }

    type TestCache = RefreshCache<Tok, Fail>;

    /// A fake upstream: counts calls, optionally waits for the test to open its gate,
    /// sleeps, then answers. Gated fakes keep a flight open for exactly as long as a test
    /// needs, so no assertion depends on how fast the machine is.
    #[derive(Clone)]
    struct Fake {
        calls: Arc<AtomicUsize>,
        delay: Duration,
        lifetime: Option<Duration>,
        gate: Option<Arc<Semaphore>>,
    }

    impl Fake {
        fn new(delay_ms: u64) -> Self {
            Self {
                calls: Arc::new(AtomicUsize::new(0)),
                delay: Duration::from_millis(delay_ms),
                lifetime: Some(Duration::from_secs(3600)),
                gate: None,
            }
        }

        /// Answers only after `open()`.
        fn gated() -> Self {
            Self { gate: Some(Arc::new(Semaphore::new(0))), ..Self::new(0) }
        }

        fn open(&self) {
            if let Some(gate) = &self.gate {
                gate.close();
            }
        }

        /// Sleeps then waits at the gate, if any.
        fn hold(&self) -> impl Future<Output = ()> + Send + 'static {
            let (delay, gate) = (self.delay, self.gate.clone());
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if let Some(gate) = gate {
                    // Closing the semaphore is what opens the gate.
                    let _ = gate.acquire().await;
                }
            }
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        /// Succeeds with a value unique to this upstream call.
        fn ok(&self) -> impl Future<Output = Result<Tok, Fail>> + Send + 'static {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let (hold, lifetime) = (self.hold(), self.lifetime);
            async move {
                hold.await;
                Ok(Tok { access: format!("access-{n}"), lifetime })
            }
        }

        fn fail(&self, error: Fail) -> impl Future<Output = Result<Tok, Fail>> + Send + 'static {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let hold = self.hold();
            async move {
                hold.await;
                Err(error)
            }
        }
    }

    /// Polls `cond` until it holds; gives up (failing the test) after a generous bound.
    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..5000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    fn sum(s: RefreshStats) -> u64 {
        s.hits + s.misses + s.coalesced
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_identical_refreshes_reach_upstream_once() {
        let cache = TestCache::new(Duration::from_secs(60), 1000);
        let fake = Fake::new(100);
        let mut set = JoinSet::new();
        for _ in 0..200 {
            let (cache, fake) = (cache.clone(), fake.clone());
            set.spawn(async move { cache.get_or_refresh("client", "rt-1", || fake.ok()).await });
        }
        let results: Vec<_> = set.join_all().await;

        assert_eq!(fake.calls(), 1);
        assert_eq!(results.len(), 200);
        let served: Vec<_> = results.into_iter().map(|r| r.expect("ok")).collect();
        assert!(served.iter().all(|s| s.value == served[0].value));
        assert_eq!(served[0].value.access, "access-1");
        let upstream = served.iter().filter(|s| s.source == Source::Upstream).count();
        assert_eq!(upstream, 1);

        let stats = cache.stats();
        assert_eq!(stats.misses, 1);
        assert_eq!(stats.hits + stats.coalesced, 199);
        assert_eq!(stats.upstream_errors, 0);
        assert_eq!(cache.in_flight(), 0);
        assert_eq!(cache.entry_count().await, 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn aborted_first_caller_does_not_cancel_upstream() {
        let cache = TestCache::new(Duration::from_secs(60), 1000);
        let fake = Fake::gated();

        let first = {
            let (cache, fake) = (cache.clone(), fake.clone());
            tokio::spawn(async move { cache.get_or_refresh("client", "rt", || fake.ok()).await })
        };
        eventually("first caller registered", || cache.in_flight() == 1).await;
        first.abort();
        assert!(first.await.expect_err("aborted").is_cancelled());

        let mut set = JoinSet::new();
        for _ in 0..10 {
            let (cache, fake) = (cache.clone(), fake.clone());
            set.spawn(async move { cache.get_or_refresh("client", "rt", || fake.ok()).await });
        }
        eventually("the others joined", || cache.stats().coalesced == 10).await;
        assert_eq!(cache.in_flight(), 1, "the aborted caller's flight is still running");
        fake.open();
        for result in set.join_all().await {
            assert_eq!(result.expect("ok").value.access, "access-1");
        }
        assert_eq!(fake.calls(), 1);
        assert_eq!(cache.in_flight(), 0);
        assert_eq!(cache.entry_count().await, 1);
        let again = cache.get_or_refresh("client", "rt", || fake.ok()).await;
        assert_eq!(again.expect("ok").source, Source::Cache);
        assert_eq!(fake.calls(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn upstream_finishes_and_caches_after_every_caller_left() {
        let cache = TestCache::new(Duration::from_secs(60), 1000);
        let fake = Fake::gated();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(5),
            cache.get_or_refresh("client", "rt", || fake.ok()),
        )
        .await;
        assert!(gave_up.is_err(), "the caller should have timed out");
        assert_eq!(cache.in_flight(), 1);
        fake.open();

        eventually("flight finished", || cache.in_flight() == 0).await;
        assert_eq!(cache.entry_count().await, 1);
        let served = cache.get_or_refresh("client", "rt", || fake.ok()).await.expect("ok");
        assert_eq!(served.source, Source::Cache);
        assert_eq!(served.value.access, "access-1");
        assert_eq!(fake.calls(), 1);
        assert_eq!(cache.stats().upstream_errors, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn error_reaches_every_waiter_and_is_not_cached() {
        let cache = TestCache::new(Duration::from_secs(60), 1000);
        let fake = Fake::gated();
        let mut set = JoinSet::new();
        for _ in 0..20 {
            let (cache, fake) = (cache.clone(), fake.clone());
            set.spawn(
                async move { cache.get_or_refresh("client", "rt", || fake.fail(Fail::Unavailable)).await },
            );
        }
        eventually("all callers joined", || cache.stats().coalesced == 19).await;
        fake.open();
        for result in set.join_all().await {
            assert_eq!(result.expect_err("fails"), Fail::Unavailable);
        }
        assert_eq!(fake.calls(), 1);
        let stats = cache.stats();
        assert_eq!(stats.upstream_errors, 1);
        assert_eq!(stats.misses, 1);
        assert_eq!(stats.coalesced, 19);
        assert_eq!(cache.entry_count().await, 0);
        assert_eq!(cache.in_flight(), 0);

        // Not cached: the next call goes upstream again, and can succeed.
        let fake = Fake { calls: fake.calls.clone(), ..Fake::new(0) };
        let served = cache.get_or_refresh("client", "rt", || fake.ok()).await.expect("ok");
        assert_eq!(served.source, Source::Upstream);
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn evicting_error_removes_cached_entry() {
        // A flight only runs when the key is not cached, so to exercise eviction an
        // answer is planted in the cache while the failing flight is running.
        let cache = TestCache::new(Duration::from_secs(60), 1000);
        let fake = Fake::gated();
        let key = cache.inner.key("client", "rt");
        let caller = {
            let (cache, fake) = (cache.clone(), fake.clone());
            tokio::spawn(async move {
                cache.get_or_refresh("client", "rt", || fake.fail(Fail::InvalidGrant)).await
            })
        };
        eventually("flight registered", || cache.in_flight() == 1).await;
        let planted = Arc::new(Stored {
            value: Tok { access: "stale".into(), lifetime: None },
            answered_at: Instant::now(),
        });
        cache.inner.cache.insert(key, planted).await;
        assert_eq!(cache.entry_count().await, 1);

        fake.open();
        let result = caller.await.expect("joined");
        assert_eq!(result.expect_err("fails"), Fail::InvalidGrant);
        assert_eq!(cache.entry_count().await, 0);
        assert_eq!(cache.in_flight(), 0);

        // A non-evicting error leaves a cached entry alone.
        let fake = Fake::gated();
        let caller = {
            let (cache, fake) = (cache.clone(), fake.clone());
            tokio::spawn(async move {
                cache.get_or_refresh("client", "rt", || fake.fail(Fail::Unavailable)).await
            })
        };
        eventually("flight registered", || cache.in_flight() == 1).await;
        let planted = Arc::new(Stored {
            value: Tok { access: "kept".into(), lifetime: None },
            answered_at: Instant::now(),
        });
        cache.inner.cache.insert(key, planted).await;
        fake.open();
        let result = caller.await.expect("joined");
        assert_eq!(result.expect_err("fails"), Fail::Unavailable);
        assert_eq!(cache.entry_count().await, 1);
        assert_eq!(cache.stats().upstream_errors, 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn clients_never_share_an_entry() {
        let cache = TestCache::new(Duration::from_secs(60), 1000);
        let fake = Fake::new(50);
        let (a, b) = tokio::join!(
            cache.get_or_refresh("client-a", "shared-rt", || fake.ok()),
            cache.get_or_refresh("client-b", "shared-rt", || fake.ok()),
        );
        let (a, b) = (a.expect("ok"), b.expect("ok"));
        assert_eq!(fake.calls(), 2);
        assert_ne!(a.value, b.value);
        assert_eq!(a.source, Source::Upstream);
        assert_eq!(b.source, Source::Upstream);

        let a2 = cache.get_or_refresh("client-a", "shared-rt", || fake.ok()).await.expect("ok");
        let b2 = cache.get_or_refresh("client-b", "shared-rt", || fake.ok()).await.expect("ok");
        assert_eq!((a2.source, b2.source), (Source::Cache, Source::Cache));
        assert_eq!(a2.value, a.value);
        assert_eq!(b2.value, b.value);
        assert_eq!(fake.calls(), 2);
        assert_eq!(cache.entry_count().await, 2);

        // The length prefix keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(cache.inner.key("ab", "c"), cache.inner.key("a", "bc"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn cached_age_grows_and_entry_expires_after_ttl() {
        let ttl = Duration::from_millis(500);
        let cache = TestCache::new(ttl, 1000);
        let mut fake = Fake::new(0);
        fake.lifetime = None;

        let first = cache.get_or_refresh("client", "rt", || fake.ok()).await.expect("ok");
        assert_eq!(first.source, Source::Upstream);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = cache.get_or_refresh("client", "rt", || fake.ok()).await.expect("ok");
        assert_eq!(second.source, Source::Cache);
        assert!(second.age > first.age);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let third = cache.get_or_refresh("client", "rt", || fake.ok()).await.expect("ok");
        assert_eq!(third.source, Source::Cache);
        assert!(third.age > second.age);
        assert_eq!(third.value, first.value);
        assert_eq!(fake.calls(), 1);

        // Expired entries are never served, though moka's timer wheel (about one-second
        // ticks) may still count them in `entry_count` for a moment.
        tokio::time::sleep(2 * ttl).await;
        let later = cache.get_or_refresh("client", "rt", || fake.ok()).await.expect("ok");
        assert_eq!(later.source, Source::Upstream);
        assert_ne!(later.value, first.value);
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn token_lifetime_shorter_than_ttl_bounds_the_entry() {
        let cache = TestCache::new(Duration::from_secs(3600), 1000);
        let mut fake = Fake::new(0);
        let lifetime = Duration::from_millis(150);
        fake.lifetime = Some(lifetime);

        let first = cache.get_or_refresh("client", "rt", || fake.ok()).await.expect("ok");
        assert_eq!(first.source, Source::Upstream);
        assert_eq!(cache.entry_count().await, 1);
        tokio::time::sleep(2 * lifetime).await;
        let later = cache.get_or_refresh("client", "rt", || fake.ok()).await.expect("ok");
        assert_eq!(later.source, Source::Upstream);
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn zero_lifetime_is_not_cached() {
        let cache = TestCache::new(Duration::from_secs(60), 1000);
        let mut fake = Fake::new(0);
        fake.lifetime = Some(Duration::ZERO);
        for round in 1..=3 {
            let served = cache.get_or_refresh("client", "rt", || fake.ok()).await.expect("ok");
            assert_eq!(served.source, Source::Upstream);
            assert_eq!(fake.calls(), round);
        }
        assert_eq!(cache.entry_count().await, 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn zero_ttl_disables_caching_but_still_coalesces() {
        let cache = TestCache::new(Duration::ZERO, 1000);
        let fake = Fake::new(0);
        for round in 1..=3 {
            let served = cache.get_or_refresh("client", "rt", || fake.ok()).await.expect("ok");
            assert_eq!(served.source, Source::Upstream);
            assert_eq!(fake.calls(), round);
        }
        assert_eq!(cache.entry_count().await, 0);

        let fake = Fake::gated();
        let mut set = JoinSet::new();
        for _ in 0..50 {
            let (cache, fake) = (cache.clone(), fake.clone());
            set.spawn(async move { cache.get_or_refresh("client", "rt", || fake.ok()).await });
        }
        eventually("all callers joined", || cache.stats().coalesced == 49).await;
        fake.open();
        let results = set.join_all().await;
        assert_eq!(fake.calls(), 1);
        assert!(results.iter().all(|r| r.as_ref().expect("ok").value.access == "access-1"));
        assert_eq!(cache.entry_count().await, 0);
        assert_eq!(cache.in_flight(), 0);
        assert_eq!(cache.stats().hits, 0);
        assert_eq!(sum(cache.stats()), 53);
    }

    /// The window the design must close: a caller misses the cache, then the flight
    /// inserts its answer and unregisters, then the caller looks for a flight.
    #[tokio::test(flavor = "multi_thread")]
    async fn caller_racing_a_finishing_flight_does_not_fetch_again() {
        let cache = TestCache::new(Duration::from_secs(60), 1000);
        let fake = Fake::new(10);
        let key = cache.inner.key("client", "rt");

        // The late caller's first cache check: a miss.
        assert!(cache.inner.cached(&key).await.is_none());
        // Meanwhile another caller's refresh runs to completion.
        let first = cache.get_or_refresh("client", "rt", || fake.ok()).await.expect("ok");
        assert_eq!(first.source, Source::Upstream);
        assert_eq!(cache.in_flight(), 0);
        // The late caller now takes the lock: it must not become a leader.
        assert!(matches!(cache.inner.join_or_lead(&key, true), Step::Recheck));
        assert_eq!(cache.in_flight(), 0);
        // And the full call resolves from the cache.
        let late = cache.get_or_refresh("client", "rt", || fake.ok()).await.expect("ok");
        assert_eq!(late.source, Source::Cache);
        assert_eq!(fake.calls(), 1);
    }

    /// Callers arriving continuously around the moment each flight completes: every key
    /// must still reach the upstream exactly once.
    #[tokio::test(flavor = "multi_thread")]
    async fn staggered_callers_around_completion_fetch_once() {
        let cache = TestCache::new(Duration::from_secs(60), 10_000);
        let fake = Fake::new(5);
        let mut set = JoinSet::new();
        for key in 0..20 {
            for _ in 0..100 {
                let (cache, fake) = (cache.clone(), fake.clone());
                set.spawn(
                    async move { cache.get_or_refresh("client", &format!("rt-{key}"), || fake.ok()).await },
                );
                // Spread arrivals across the flight's lifetime and past its end.
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let results = set.join_all().await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(fake.calls(), 20);
        let stats = cache.stats();
        assert_eq!(stats.misses, 20);
        assert_eq!(sum(stats), 2000);
        assert_eq!(cache.in_flight(), 0);
        assert_eq!(cache.entry_count().await, 20);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn panicking_upstream_gives_internal_error_and_unregisters() {
        let cache = TestCache::new(Duration::from_secs(60), 1000);
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Semaphore::new(0));
        let fetch = |calls: Arc<AtomicUsize>, gate: Arc<Semaphore>| {
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let _ = gate.acquire().await;
                panic!("upstream task blew up (expected in this test)");
            }
        };
        let mut set = JoinSet::new();
        for _ in 0..5 {
            let (cache, f) = (cache.clone(), fetch(calls.clone(), gate.clone()));
            set.spawn(async move { cache.get_or_refresh("client", "rt", f).await });
        }
        eventually("all callers joined", || cache.stats().coalesced == 4).await;
        gate.close();
        for result in set.join_all().await {
            assert_eq!(result.expect_err("fails"), Fail::Internal);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.in_flight(), 0);
        assert_eq!(cache.entry_count().await, 0);
        assert_eq!(cache.stats().upstream_errors, 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn million_distinct_failing_tokens_leave_nothing_behind() {
        const TOTAL: usize = 1_000_000;
        const WORKERS: usize = 8;
        let cache = TestCache::new(Duration::from_secs(60), 10_000);
        let fake = Fake::new(0);
        let mut set = JoinSet::new();
        for worker in 0..WORKERS {
            let (cache, fake) = (cache.clone(), fake.clone());
            set.spawn(async move {
                let mut token = String::new();
                for i in (worker..TOTAL).step_by(WORKERS) {
                    token.clear();
                    token.push_str("dead-rt-");
                    token.push_str(&i.to_string());
                    let error = if i % 2 == 0 { Fail::InvalidGrant } else { Fail::Unavailable };
                    let result = cache.get_or_refresh("client", &token, || fake.fail(error)).await;
                    assert!(result.is_err());
                }
            });
        }
        set.join_all().await;
        assert_eq!(fake.calls(), TOTAL);
        assert_eq!(cache.entry_count().await, 0);
        assert_eq!(cache.in_flight(), 0);
        let stats = cache.stats();
        assert_eq!(stats.upstream_errors, TOTAL as u64);
        assert_eq!(stats.misses, TOTAL as u64);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn debug_output_never_contains_the_token() {
        const CANARY: &str = "CANARY-rt-5f0d2c7e";
        let cache = TestCache::new(Duration::from_secs(60), 1000);
        let fake = Fake::new(0);
        cache.get_or_refresh("client", CANARY, || fake.ok()).await.expect("ok");
        let fake = Fake::gated();
        let pending = {
            let (cache, fake) = (cache.clone(), fake.clone());
            tokio::spawn(
                async move { cache.get_or_refresh("client", &format!("{CANARY}-2"), || fake.ok()).await },
            )
        };
        eventually("flight registered", || cache.in_flight() == 1).await;
        for text in [format!("{cache:?}"), format!("{cache:#?}")] {
            assert!(!text.contains(CANARY), "{text}");
            assert!(!text.contains("rt-5f0d"), "{text}");
        }
        fake.open();
        pending.await.expect("joined").expect("ok");
        let text = format!("{cache:#?}");
        assert!(!text.contains(CANARY), "{text}");
        assert!(text.contains("RefreshCache"));
    }

    #[test]
    fn handle_and_futures_are_send_and_sync() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let cache = TestCache::new(Duration::from_secs(60), 10);
        send_sync(&cache);
        let fake = Fake::new(0);
        // Built, never polled: only its type is checked.
        let fut = cache.get_or_refresh("client", "rt", || fake.ok());
        send(&fut);
    }

    #[tokio::test]
    async fn namespaces_and_scopes_never_share_an_entry() {
        let cache = TestCache::new(Duration::from_secs(60), 10);
        let (a, b) = (cache.namespace("provider-a"), cache.namespace("provider-b"));
        let k = |ns: &Namespace, scope: &[&str], t: &str| key_in(&ns.mac, scope, t);
        assert_eq!(k(&a, &["client"], "t"), k(&cache.namespace("provider-a"), &["client"], "t"));
        assert_ne!(k(&a, &["client"], "t"), k(&b, &["client"], "t"));
        assert_ne!(k(&a, &["client"], "t"), cache.inner.key("client", "t"));
        assert_ne!(k(&a, &["ab", "c"], "t"), k(&a, &["a", "bc"], "t"));
        assert_ne!(k(&a, &["client", "secret-1"], "t"), k(&a, &["client", "secret-2"], "t"));

        let fake = Fake::new(0);
        let first = cache.get_or_refresh_in(&a, &["client"], "rt", || fake.ok()).await.expect("ok");
        let other = cache.get_or_refresh_in(&b, &["client"], "rt", || fake.ok()).await.expect("ok");
        assert_eq!((first.source, other.source), (Source::Upstream, Source::Upstream));
        let again = cache.get_or_refresh_in(&a, &["client"], "rt", || fake.ok()).await.expect("ok");
        assert_eq!((again.source, again.value), (Source::Cache, first.value));
        assert_eq!(fake.calls(), 2);
    }

    #[test]
    fn key_is_keyed_hmac_of_length_prefixed_client_and_token() {
        let cache = TestCache::new(Duration::from_secs(60), 10);
        let other = TestCache::new(Duration::from_secs(60), 10);
        let key = cache.inner.key("client", "token");
        assert_eq!(key, cache.inner.key("client", "token"));
        assert_ne!(key, cache.inner.key("client2", "token"));
        assert_ne!(key, cache.inner.key("client", "token2"));
        // Per-instance random secret.
        assert_ne!(key, other.inner.key("client", "token"));
        // Zero-padding the 32-byte secret to the block is the same as HMAC's own padding.
        let secret = [7u8; 32];
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&secret);
        let padded = <Hmac<Sha256> as KeyInit>::new(&block.into());
        let direct = <Hmac<Sha256> as Mac>::new_from_slice(&secret).expect("any length");
        assert_eq!(
            padded.chain_update(b"x").finalize().into_bytes(),
            direct.chain_update(b"x").finalize().into_bytes()
        );
    }
}
