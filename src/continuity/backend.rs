//! Where sessions live: the embedded file ([`super::store`]) or Redis
//! ([`super::redis_store`]), behind one set of calls that take and give opened sessions. The
//! embedded store's calls run on the blocking pool.

use std::sync::Arc;

use super::redis_store::RedisSessions;
use super::session::{Session, SessionId};
use super::store::{Embedded, StoreError};
use crate::crypto::KeySet;

/// Where sessions live.
pub(super) enum Backend {
    /// The embedded redb file; its reads are short and served from redb's cache, so they run
    /// on the calling thread, and writes (which wait for fsync) on the blocking pool.
    Embedded(Arc<Embedded>),
    Redis(RedisSessions),
}

impl Backend {
    /// The session a minted token's hash indexes, if its record opens (with Redis: if it is
    /// the session's current, live record).
    pub(super) async fn find(&self, keys: &KeySet, hash: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        match self {
            Self::Embedded(s) => Ok(s.find(hash)?.and_then(|(id, sealed)| open(keys, id, &sealed))),
            Self::Redis(r) => r.find(keys, hash).await,
        }
    }

    pub(super) async fn load(&self, keys: &KeySet, id: SessionId) -> Result<Option<Session>, StoreError> {
        match self {
            Self::Embedded(s) => Ok(s.load(id)?.and_then(|sealed| open(keys, id, &sealed))),
            Self::Redis(r) => r.load(keys, id).await,
        }
    }

    /// Write `session` as its next version. `false`, and nothing written, when Redis holds a
    /// newer version or a revocation of it (someone else wrote or revoked it meanwhile).
    pub(super) async fn put(
        &self,
        keys: &KeySet,
        session: &Session,
        add: Vec<[u8; 32]>,
        remove: Vec<[u8; 32]>,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Embedded(s) => {
                let (s, id, expires_at) = (Arc::clone(s), session.id, session.expires_at);
                let sealed = session.seal(keys, session.version + 1);
                blocking(move || s.put(id, expires_at, &sealed, &add, &remove)).await.map(|()| true)
            }
            Self::Redis(r) => r.put(keys, session, &add, &remove).await,
        }
    }

    /// Delete (with Redis: revoke, leaving a tombstone) sessions. Returns how many existed.
    pub(super) async fn delete(&self, keys: &KeySet, doomed: Vec<Session>) -> Result<usize, StoreError> {
        match self {
            Self::Embedded(s) => {
                let s = Arc::clone(s);
                let doomed: Vec<_> = doomed.iter().map(|d| (d.id, d.hashes())).collect();
                blocking(move || s.delete(&doomed)).await
            }
            Self::Redis(r) => r.revoke(keys, &doomed).await,
        }
    }

    /// Every session whose record opens (with Redis: every current, live one).
    pub(super) async fn scan(&self, keys: &KeySet, now: u64) -> Result<Vec<Session>, StoreError> {
        match self {
            Self::Embedded(s) => Ok(s
                .scan()?
                .into_iter()
                .filter_map(|(id, sealed)| Session::open(id, &sealed, keys))
                .collect()),
            Self::Redis(r) => r.scan(keys, now).await,
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

/// An embedded record, opened; a record that does not open is logged and skipped.
fn open(keys: &KeySet, id: SessionId, sealed: &[u8]) -> Option<Session> {
    let session = Session::open(id, sealed, keys);
    if session.is_none() {
        tracing::warn!(session = ?id, "a session record does not open with the configured keys");
    }
    session
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| StoreError("store task failed".into()))?
}
