//! The keyed-hash cache key: what a refresh token becomes before it reaches the cache or a flight.

use std::{
    fmt,
    hash::{BuildHasherDefault, Hasher},
};

use hmac::{Hmac, Mac};
use sha2::Sha256;

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

/// The key of `refresh_token` within `scope` under `mac`: each part length-prefixed, then the
/// token. Inlined into each caller, as the one derivation was before namespaces.
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

/// A part of the cache of its own (a provider's): its keys are HMACs under a sub-key derived
/// from the cache's key and the namespace's name, so two namespaces never share an entry or a
/// flight, and a lookup costs what it costs without one. Derive it once
/// ([`super::cache::RefreshCache::namespace`]) and keep it; the same name gives the same namespace.
#[derive(Clone)]
pub(crate) struct Namespace {
    pub(super) mac: Hmac<Sha256>,
}

/// Never shows the sub-key.
impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Namespace")
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::types::Source;
    use super::*;
    use hmac::digest::KeyInit;
    use std::time::Duration;

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
