//! Where sessions live: the embedded file ([`super::store`]) or Redis
//! ([`super::redis_store`]), behind one set of calls that take and give opened sessions, and
//! the places logins under way take there ([`Admission`]). The embedded store's writes run on
//! the blocking pool.

use std::sync::Arc;

use super::redis_store::RedisSessions;
use super::session::{Session, SessionId};
use super::store::{Doomed, Embedded, StoreError};
use crate::crypto::KeySet;

/// Where sessions live.
#[derive(Clone)]
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

    /// Write `session` as its next version, counted against its owners. `false`, and nothing
    /// written, when Redis holds a newer version or a revocation of it (someone else wrote or
    /// revoked it meanwhile).
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
                let owners = session.owners.clone();
                blocking(move || s.put(id, expires_at, &sealed, &add, &remove, &owners)).await.map(|()| true)
            }
            Self::Redis(r) => r.put(keys, session, &add, &remove).await,
        }
    }

    /// Delete (with Redis: revoke, leaving a tombstone) sessions, with every index entry they
    /// have (token and owner entries). Returns how many existed.
    pub(super) async fn delete(&self, keys: &KeySet, doomed: Vec<Session>) -> Result<usize, StoreError> {
        match self {
            Self::Embedded(s) => {
                let s = Arc::clone(s);
                let doomed: Vec<_> = doomed
                    .iter()
                    .map(|d| Doomed { id: d.id, tokens: d.hashes(), owners: d.owners.clone() })
                    .collect();
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
