//! What one refresh cache holds, shared by the cache lookup and the flights: the keyed hash a
//! refresh token becomes before it reaches the cache or a flight, the settings, the answer
//! cache and the in-flight map.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::{Arc, Mutex, MutexGuard, PoisonError, atomic::AtomicU64},
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac};
use moka::{Expiry, future::Cache};
use sha2::Sha256;
use tokio::sync::watch;

use super::types::{RefreshFailure, Refreshed};

/// HMAC-SHA256 of the length-prefixed client id and the refresh token.
pub(super) type Key = [u8; 32];

/// Hashes a [`Key`] by its first eight bytes. Keys are HMAC outputs under a per-process random
/// secret, so they are already uniform and unpredictable to callers: SipHash over all 32 bytes
/// added no protection, only work on every lookup.
#[derive(Default)]
pub(super) struct KeyHasher(u64);

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

pub(super) type KeyHash = BuildHasherDefault<KeyHasher>;

/// Provider sub-keys kept by one cache; a provider beyond them derives its sub-key per refresh.
pub(super) const MAX_PROVIDER_KEYS: usize = 64;

/// The key of `refresh_token` within `scope` under `mac`: each part length-prefixed, then the
/// token. Inlined into each caller: it is on every refresh's path.
#[inline(always)]
pub(super) fn key_in(mac: &Hmac<Sha256>, scope: &[&str], refresh_token: &str) -> Key {
    let mut mac = mac.clone();
    for part in scope {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    mac.update(refresh_token.as_bytes());
    mac.finalize().into_bytes().into()
}

/// A successful upstream answer and when it arrived.
pub(super) struct CachedAnswer<V> {
    pub(super) value: V,
    pub(super) answered_at: Instant,
}

/// What a flight publishes to its waiters. `None` until the upstream answers.
pub(super) type FlightResult<V, E> = Option<Result<Arc<CachedAnswer<V>>, E>>;

/// One registered upstream call.
pub(super) struct Flight<V, E> {
    /// Distinguishes this registration from any later one for the same key.
    pub(super) id: u64,
    /// Where the outcome is published; made by the first caller that joins, so a refresh
    /// nobody joins (the usual case) never allocates a channel.
    pub(super) tx: Option<watch::Sender<FlightResult<V, E>>>,
}

/// The state a [`super::cache::RefreshCache`] shares among its clones: the key, the cached
/// answers and the flights in progress.
pub(super) struct CacheCore<V: Refreshed, E: RefreshFailure> {
    /// HMAC state already keyed with the per-process secret; cloned per derivation.
    pub(super) mac: Hmac<Sha256>,
    /// Per provider name, HMAC state keyed with a sub-key of `mac` for that provider (see
    /// [`CacheCore::key_for_provider`]); as many as the config has providers, at most
    /// [`MAX_PROVIDER_KEYS`].
    pub(super) provider_macs: std::sync::RwLock<Vec<(Box<str>, Hmac<Sha256>)>>,
    pub(super) ttl: Duration,
    pub(super) max_entries: u64,
    pub(super) cache: Cache<Key, Arc<CachedAnswer<V>>, KeyHash>,
    pub(super) in_flight: Mutex<HashMap<Key, Flight<V, E>, KeyHash>>,
    pub(super) next_flight_id: AtomicU64,
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) coalesced: AtomicU64,
    pub(super) upstream_errors: AtomicU64,
}

/// Per-entry expiry: `min(ttl, lifetime)` counted from when the upstream answered.
pub(super) struct RefreshExpiry {
    pub(super) ttl: Duration,
}

impl RefreshExpiry {
    pub(super) fn remaining<V: Refreshed>(&self, stored: &CachedAnswer<V>, now: Instant) -> Duration {
        let bound = match stored.value.lifetime() {
            Some(lifetime) => lifetime.min(self.ttl),
            None => self.ttl,
        };
        bound.saturating_sub(now.saturating_duration_since(stored.answered_at))
    }
}

impl<V: Refreshed> Expiry<Key, Arc<CachedAnswer<V>>> for RefreshExpiry {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Arc<CachedAnswer<V>>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(self.remaining(value, created_at))
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        value: &Arc<CachedAnswer<V>>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.remaining(value, updated_at))
    }
}

impl<V: Refreshed, E: RefreshFailure> CacheCore<V, E> {
    pub(super) fn lock_in_flight(&self) -> MutexGuard<'_, HashMap<Key, Flight<V, E>, KeyHash>> {
        // No code panics while holding this lock, but never turn poisoning into a panic.
        self.in_flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn caching(&self) -> bool {
        !self.ttl.is_zero() && self.max_entries > 0
    }

    /// The key of `refresh_token` for the scope `provider`, `rest`: under a sub-key derived
    /// from the cache's key and the provider's name (kept per provider), the rest
    /// length-prefixed before the token. The provider's name is thus hashed once per provider,
    /// not once per refresh, which keeps a refresh's message inside one SHA-256 block for usual
    /// client ids and tokens.
    pub(super) fn key_for_provider(&self, provider: &str, rest: &[&str], refresh_token: &str) -> Key {
        {
            let macs = self.provider_macs.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, mac)) = macs.iter().find(|(name, _)| **name == *provider) {
                return key_in(mac, rest, refresh_token);
            }
        }
        // Kept apart from every refresh key by its own first part.
        let mac = crate::crypto::keyed_mac(&key_in(&self.mac, &["provider sub-key", provider], ""));
        let key = key_in(&mac, rest, refresh_token);
        let mut macs = self.provider_macs.write().unwrap_or_else(PoisonError::into_inner);
        if macs.len() < MAX_PROVIDER_KEYS && !macs.iter().any(|(name, _)| **name == *provider) {
            macs.push((provider.into(), mac));
        }
        key
    }

    pub(super) fn key(&self, client_id: &str, refresh_token: &str) -> Key {
        key_in(&self.mac, &[client_id], refresh_token)
    }

    pub(super) async fn cached(&self, key: &Key) -> Option<Arc<CachedAnswer<V>>> {
        // moka's futures are large; boxed, they do not size every refresh's future (cache
        // off included) for themselves.
        if self.caching() { Box::pin(self.cache.get(key)).await } else { None }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::types::Source;
    use super::*;
    use crate::refresh::Scope;
    use std::time::Duration;

    #[tokio::test]
    async fn scopes_never_share_an_entry() {
        let cache = TestCache::new(Duration::from_secs(60), 10);
        let k = |scope: &[&str], t: &str| cache.key(scope, t);
        assert_ne!(k(&["provider-a", "client"], "t"), k(&["provider-b", "client"], "t"));
        assert_ne!(k(&["ab", "c"], "t"), k(&["a", "bc"], "t"));
        assert_ne!(k(&["p", "client"], "t"), k(&["p", "client2"], "t"));

        let fake = Fake::new(0);
        let (a, b) = (Scope::new("provider-a", "client"), Scope::new("provider-b", "client"));
        let serve = |scope: Scope<'static>| cache.serve(cache.key(&scope.parts(), "rt"), || fake.ok());
        let first = serve(a).await.expect("ok");
        let other = serve(b).await.expect("ok");
        assert_eq!((first.source, other.source), (Source::Upstream, Source::Upstream));
        let again = serve(a).await.expect("ok");
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
        // The one keyed-hash set-up (zero-padding the key to the block) is HMAC's own padding.
        let secret = [7u8; 32];
        let padded = crate::crypto::keyed_mac(&secret);
        let direct = <Hmac<Sha256> as Mac>::new_from_slice(&secret).expect("any length");
        assert_eq!(
            padded.chain_update(b"x").finalize().into_bytes(),
            direct.chain_update(b"x").finalize().into_bytes()
        );
    }
}
