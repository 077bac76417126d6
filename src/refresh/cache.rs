//! The short-lived answer cache and the handle callers use: a cached answer, else a flight.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hmac::Mac;
use moka::future::Cache;
use rand::RngCore;

use super::entries::{CacheCore, Key, KeyHash, RefreshExpiry, key_in};
use super::flight::{Detach, Step, served, wait};
use super::types::{RefreshFailure, RefreshStats, Refreshed, Served, Source};
use crate::crypto::keyed_mac;

/// The memory backend: coalesces concurrent refreshes of one key into one upstream call and
/// replays successful answers for a short time. Cloning is cheap and shares all state.
pub struct RefreshCache<V: Refreshed, E: RefreshFailure> {
    pub(super) inner: Arc<CacheCore<V, E>>,
}

impl<V: Refreshed, E: RefreshFailure> Clone for RefreshCache<V, E> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
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
        let mac = keyed_mac(&secret);

        let capacity = if ttl.is_zero() { 0 } else { max_entries };
        let cache = Cache::builder()
            .max_capacity(capacity)
            .expire_after(RefreshExpiry { ttl })
            .build_with_hasher(KeyHash::default());

        Self {
            inner: Arc::new(CacheCore {
                mac,
                provider_macs: std::sync::RwLock::default(),
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

    /// The key of `refresh_token` within `scope` (length-prefixed parts, see
    /// [`Scope`](super::Scope)).
    pub(super) fn key(&self, scope: &[&str], refresh_token: &str) -> Key {
        match scope.split_first() {
            Some((provider, rest)) => self.inner.key_for_provider(provider, rest, refresh_token),
            None => key_in(&self.inner.mac, scope, refresh_token),
        }
    }

    /// The key `refresh_token` within `scope` is cached under: for the benches, which measure
    /// the derivation every refresh pays.
    #[doc(hidden)]
    pub fn key_of(&self, scope: &[&str], refresh_token: &str) -> [u8; 32] {
        self.key(scope, refresh_token)
    }

    /// The keyed hash of a client secret a caller presented: HMAC-SHA256 under a sub-key of this
    /// cache's key, kept apart from every refresh key.
    pub(crate) fn proof(&self, secret: &str) -> [u8; 32] {
        let mut mac = self.inner.mac.clone();
        mac.update(b"proof\0");
        let mut mac = keyed_mac(&mac.finalize().into_bytes().into());
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Serve the refresh of `key` (see [`RefreshCache::get_or_refresh`]).
    pub(super) async fn serve<F, Fut>(&self, key: Key, fetch: F) -> Result<Served<V>, E>
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

    /// The cached answer for `key`, if any, without counting or starting anything.
    pub(super) async fn peek(&self, key: &Key) -> Option<Served<V>> {
        let stored = self.inner.cached(key).await?;
        Some(served(&stored, Source::Cache))
    }

    /// Drop the cached answer for `key`, if any.
    pub(super) async fn invalidate(&self, key: &Key) {
        if self.inner.caching() {
            Box::pin(self.inner.cache.invalidate(key)).await;
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

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::time::Duration;
    use tokio::task::JoinSet;

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
    fn proofs_are_keyed_hashes_apart_from_refresh_keys() {
        let (cache, other) =
            (TestCache::new(Duration::from_secs(60), 10), TestCache::new(Duration::from_secs(60), 10));
        assert_eq!(cache.proof("secret"), cache.proof("secret"));
        assert_ne!(cache.proof("secret"), cache.proof("secret2"));
        assert_ne!(cache.proof("secret"), other.proof("secret"), "per-cache key");
        assert_ne!(cache.proof("secret"), cache.key(&["proof"], "secret"));
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
}
