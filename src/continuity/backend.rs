//! Where sessions live: the embedded file ([`super::store`]) or Redis
//! ([`super::redis_store`]), behind one set of calls. The embedded store's calls run on the
//! blocking pool.

use std::sync::Arc;

use super::redis_store::RedisSessions;
use super::session::SessionId;
use super::store::{Embedded, StoreError, Stored};

/// Where sessions live.
pub(super) enum Backend {
    /// The embedded redb file; its reads are short and served from redb's cache, so they run
    /// on the calling thread, and writes (which wait for fsync) on the blocking pool.
    Embedded(Arc<Embedded>),
    Redis(RedisSessions),
}

impl Backend {
    pub(super) async fn find(&self, hash: &[u8; 32]) -> Result<Option<Stored>, StoreError> {
        match self {
            Self::Embedded(s) => s.find(hash),
            Self::Redis(r) => r.find(hash).await,
        }
    }

    pub(super) async fn load(&self, id: SessionId) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Self::Embedded(s) => s.load(id),
            Self::Redis(r) => r.load(id).await,
        }
    }

    pub(super) async fn put(
        &self,
        id: SessionId,
        expires_at: u64,
        sealed: Vec<u8>,
        add: Vec<[u8; 32]>,
        remove: Vec<[u8; 32]>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Embedded(s) => {
                let s = Arc::clone(s);
                blocking(move || s.put(id, expires_at, &sealed, &add, &remove)).await
            }
            Self::Redis(r) => r.put(id, expires_at, &sealed, &add, &remove).await,
        }
    }

    pub(super) async fn delete(&self, doomed: Vec<(SessionId, Vec<[u8; 32]>)>) -> Result<usize, StoreError> {
        match self {
            Self::Embedded(s) => {
                let s = Arc::clone(s);
                blocking(move || s.delete(&doomed)).await
            }
            Self::Redis(r) => r.delete(&doomed).await,
        }
    }

    pub(super) async fn scan(&self, now: u64) -> Result<Vec<Stored>, StoreError> {
        match self {
            Self::Embedded(s) => s.scan(),
            Self::Redis(r) => r.scan(now).await,
        }
    }

    pub(super) async fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        match self {
            Self::Embedded(s) => {
                let s = Arc::clone(s);
                blocking(move || s.sweep(now)).await
            }
            Self::Redis(r) => r.sweep(now).await,
        }
    }

    pub(super) async fn count(&self, now: u64) -> Result<u64, StoreError> {
        match self {
            Self::Embedded(s) => s.count(),
            Self::Redis(r) => r.count(now).await,
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| StoreError("store task failed".into()))?
}
