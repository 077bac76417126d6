//! Single flight per key: the locked join-or-lead step, the upstream call a leader drives and
//! how waiters get its outcome.
//!
//! The future a leader drives ([`Detach`]) is hand-written because an `async fn` cannot act
//! when it is dropped: this one hands the rest of the upstream call to a spawned task when the
//! leader hangs up, so the call the waiters and the cache depend on is never cancelled, and a
//! leader that stays pays no task.

use std::{
    future::Future,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use tokio::sync::watch;

use super::entries::{CacheCore, CachedAnswer, Flight, FlightResult, Key, RefreshExpiry};
use super::types::{RefreshFailure, Refreshed, Served, Source};

/// What the locked step of a lookup decided.
pub(super) enum Step<V: Refreshed, E: RefreshFailure> {
    /// A flight for the key is running: wait for it.
    Join(watch::Receiver<FlightResult<V, E>>),
    /// An answer landed in the cache after our first check: look again.
    Recheck,
    /// Nothing in flight or cached: this caller starts the upstream call.
    Lead(FlightGuard<V, E>),
}

/// Unregisters a flight when dropped, whatever happened to the upstream call. It lives in
/// the flight's future, so it drops when the call finishes or panics, when a shutting-down
/// runtime drops the detached rest of it, or in the caller if `fetch()` itself panics.
pub(super) struct FlightGuard<V: Refreshed, E: RefreshFailure> {
    pub(super) inner: Arc<CacheCore<V, E>>,
    pub(super) key: Key,
    pub(super) id: u64,
    pub(super) answered: bool,
    /// Already unregistered (by [`FlightGuard::unregister`]).
    pub(super) done: bool,
}

impl<V: Refreshed, E: RefreshFailure> FlightGuard<V, E> {
    /// Remove the flight from the in-flight map, returning its channel if anyone joined.
    pub(super) fn unregister(&mut self) -> Option<watch::Sender<FlightResult<V, E>>> {
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

impl<V: Refreshed, E: RefreshFailure> CacheCore<V, E> {
    /// Under the in-flight lock: join a running flight, notice an answer that landed in
    /// the cache since the caller's first check, or register a new flight.
    ///
    /// A flight inserts into the cache before it unregisters (both ordered by this lock),
    /// so finding no flight here means any answer that finished earlier is visible to
    /// `contains_key`.
    ///
    /// With `may_recheck` false it never answers `Recheck`, which bounds the caller's loop
    /// should the cache keep reporting an entry that `get` does not return.
    pub(super) fn join_or_lead(self: &Arc<Self>, key: &Key, may_recheck: bool) -> Step<V, E> {
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
    pub(super) async fn run_flight<Fut>(
        self: Arc<Self>,
        mut guard: FlightGuard<V, E>,
        fut: Fut,
    ) -> Result<Arc<CachedAnswer<V>>, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let result = fut.await;
        let answered_at = Instant::now();
        guard.answered = true;
        let key = guard.key;
        let outcome = match result {
            Ok(value) => {
                let stored = Arc::new(CachedAnswer { value, answered_at });
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

pub(super) fn served<V: Clone>(stored: &CachedAnswer<V>, source: Source) -> Served<V> {
    Served { value: stored.value.clone(), age: stored.answered_at.elapsed(), source }
}

/// Waits for a flight's outcome. The sender only drops without publishing if the task
/// died, which every waiter reports as `E::internal()`.
pub(super) async fn wait<V: Refreshed, E: RefreshFailure>(
    mut rx: watch::Receiver<FlightResult<V, E>>,
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

/// A flight's future as its leader drives it. Dropped before it finished (the leader hung
/// up), it hands the rest of the call to a spawned task instead of cancelling it.
pub(super) struct Detach<T: Send + 'static> {
    pub(super) fut: Option<std::pin::Pin<Box<dyn Future<Output = T> + Send>>>,
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

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    use std::time::{Duration, Instant};
    use tokio::sync::Semaphore;
    use tokio::task::JoinSet;

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
        let planted = Arc::new(CachedAnswer {
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
        let planted = Arc::new(CachedAnswer {
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

    #[test]
    fn detach_stays_one_boxed_pointer() {
        assert!(std::mem::size_of::<Detach<u64>>() <= 16);
    }
}
