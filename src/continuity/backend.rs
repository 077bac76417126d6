//! Where sessions live: the embedded file ([`super::store`]) or Redis
//! ([`super::redis_store`]), behind one set of calls, and the places logins under way take
//! there ([`Admission`]). The embedded store's writes run on the blocking pool.

use std::sync::Arc;

use super::redis_store::RedisSessions;
use super::session::SessionId;
use super::store::{Doomed, Embedded, StoreError, Stored};

/// Where sessions live.
#[derive(Clone)]
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
        owners: Vec<[u8; 32]>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Embedded(s) => {
                let s = Arc::clone(s);
                blocking(move || s.put(id, expires_at, &sealed, &add, &remove, &owners)).await
            }
            Self::Redis(r) => r.put(id, expires_at, &sealed, &add, &remove, &owners).await,
        }
    }

    pub(super) async fn delete(&self, doomed: Vec<Doomed>) -> Result<usize, StoreError> {
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

/// A place among the sessions, taken for a login before its upstream call
/// (`Continuity::admit`). The session created for the login takes it over
/// (`Continuity::create`); dropped otherwise (the login failed, or its caller went away), it is
/// given back.
pub(crate) struct Admission {
    /// The id of the session the login will create.
    pub(super) id: SessionId,
    /// Whom the session will count against (the first key's hashes).
    pub(super) owners: Vec<[u8; 32]>,
    /// Set once the session is being stored: the place is then the session's.
    pub(super) settled: bool,
    store: Backend,
}

impl Admission {
    pub(super) fn new(id: SessionId, owners: Vec<[u8; 32]>, store: Backend) -> Self {
        Self { id, owners, settled: false, store }
    }

    /// Give the place back now (the login failed), rather than when dropped: with Redis, the
    /// place is free for the next login when this returns.
    pub(crate) async fn give_back(mut self) {
        if let Backend::Redis(r) = &self.store {
            self.settled = true;
            r.give_back(self.id, &self.owners).await;
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        match &self.store {
            // Given back in any case: a stored session counts by itself.
            Backend::Embedded(e) => e.give_back(self.id),
            // A place left behind in Redis lapses by itself; giving it back is only sooner.
            Backend::Redis(r) if !self.settled => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let (r, id, owners) = (r.clone(), self.id, std::mem::take(&mut self.owners));
                    runtime.spawn(async move { r.give_back(id, &owners).await });
                }
            }
            Backend::Redis(_) => {}
        }
    }
}
