//! The keyed-hash cache key: what a refresh token becomes before it reaches the cache or a flight.

use std::hash::{BuildHasherDefault, Hasher};

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

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::types::Source;
    use super::*;
    use crate::refresh::Scope;
    use hmac::digest::KeyInit;
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
