//! The continuity service: sessions created from continuity clients' token answers, minted
//! tokens authenticated and re-minted, and the operators' listing and revocation. Refreshing a
//! session's v2 token is [`super::refresh`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use serde::Serialize;

use super::backend::{Admission, Backend};
use super::errors::{invalid_grant, invalid_token, store_failed};
use super::minted;
use super::redis_store::{self, RedisSessions};
use super::session::{DEFAULT_V2_LIFETIME, LIVE_ACCESS_TOKENS, Session, SessionId, TOKEN_HASH_DOMAIN, now};
use super::store::{Embedded, StoreError};
use crate::config::{ClientConfig, Config, StateBackend};
use crate::crypto::KeySet;
use crate::error::{ErrorCode, ShimError};
use crate::legacy::render_minted;
use crate::oauth::{Secret, TraceHeaders, V2Token};
use crate::ops::metrics::Metrics;
use crate::redis::Redis;
use crate::snapshot::Snapshot;

/// The continuity service: the store, and the per-session locks that keep refreshes single.
pub struct Continuity {
    pub(super) store: Backend,
    /// One lock per session being refreshed or re-minted; entries die with their last holder.
    pub(super) locks: Mutex<HashMap<SessionId, Weak<tokio::sync::Mutex<()>>>>,
    pub(super) metrics: Metrics,
    /// How long a Redis refresh lock lives if its holder dies (longer than a token call).
    pub(super) lock_hold: Duration,
}

/// A session's lock, held; [`SessionLock::release`] it (a Redis lock left behind expires by itself).
pub(super) struct SessionLock<'a> {
    _local: tokio::sync::OwnedMutexGuard<()>,
    remote: Option<redis_store::RemoteLock<'a>>,
}

impl SessionLock<'_> {
    pub(super) async fn release(self) {
        if let Some(remote) = self.remote {
            remote.release().await;
        }
    }
}

/// What an operator sees of a session: never a token.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SessionInfo {
    pub id: String,
    pub client: String,
    pub created_at: String,
    pub expires_at: String,
    /// When the current v2 access token expires.
    pub v2_expires_at: Option<String>,
    pub upstream_refreshes: u64,
}

pub(super) fn keys(snapshot: &Snapshot) -> Result<&KeySet, ShimError> {
    // A validated config with a continuity client always has keys.
    snapshot.state_keys.as_deref().ok_or_else(ShimError::internal)
}

impl Continuity {
    /// Open the store `config` names: the embedded file, or Redis (`redis`, the process's
    /// handle) with `[state] backend = "redis"`.
    pub fn open(config: &Config, redis: Option<Redis>, metrics: Metrics) -> Result<Self, StoreError> {
        let store = match (config.state.backend, redis) {
            (StateBackend::Redis, Some(redis)) => Backend::Redis(RedisSessions::new(redis)),
            (StateBackend::Redis, None) => {
                return Err(StoreError("[state] backend is redis, but redis could not be set up".into()));
            }
            (StateBackend::Memory, _) => Backend::Embedded(Arc::new(Embedded::open(&config.continuity.dir)?)),
        };
        let lock_hold = config.upstream.request_timeout + Duration::from_secs(2);
        Ok(Self { store, locks: Mutex::default(), metrics, lock_hold })
    }

    /// Count a store failure, and answer it.
    pub(super) fn store_failed(&self, e: StoreError) -> ShimError {
        self.metrics.continuity_store_error();
        store_failed(e)
    }

    /// Set the sessions gauge from the store.
    pub async fn update_gauge(&self) {
        if let Ok(n) = self.store.count(now()).await {
            self.metrics.continuity_sessions(n);
        }
    }

    /// Write `session` as its next version; `invalid_token` when it was revoked or written by
    /// someone else since it was read.
    pub(super) async fn put(
        &self,
        keys: &KeySet,
        session: &Session,
        add: Vec<[u8; 32]>,
        remove: Vec<[u8; 32]>,
    ) -> Result<(), ShimError> {
        if !self.store.put(keys, session, add, remove).await.map_err(|e| self.store_failed(e))? {
            tracing::info!(session = ?session.id, "continuity session revoked or changed while being written; not written");
            return Err(invalid_token());
        }
        self.update_gauge().await;
        Ok(())
    }

    pub(super) async fn delete(&self, keys: &KeySet, doomed: Vec<Session>) -> Result<usize, ShimError> {
        let n = self.store.delete(keys, doomed).await.map_err(|e| self.store_failed(e))?;
        self.update_gauge().await;
        Ok(n)
    }

    /// Hold the session's lock: in this process, and with Redis across replicas too.
    pub(super) async fn hold(&self, id: SessionId) -> Result<SessionLock<'_>, ShimError> {
        let local = self.lock(id).lock_owned().await;
        let remote = match &self.store {
            Backend::Redis(r) => {
                Some(r.lock(id, self.lock_hold, self.lock_hold).await.map_err(|e| self.store_failed(e))?)
            }
            Backend::Embedded(_) => None,
        };
        Ok(SessionLock { _local: local, remote })
    }

    pub(super) fn lock(&self, id: SessionId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lock) = map.get(&id).and_then(Weak::upgrade) {
            return lock;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(id, Arc::downgrade(&lock));
        lock
    }

    /// The live session a minted token (access or refresh) belongs to, tried under every key's
    /// hash (a session outlives a key rotation), with the hash that found it.
    pub(super) async fn find(
        &self,
        keys: &KeySet,
        token: &str,
    ) -> Result<Option<(Session, [u8; 32])>, ShimError> {
        for hash in keys.hashes(TOKEN_HASH_DOMAIN, &[token.as_bytes()]) {
            if let Some(session) = self.store.find(keys, &hash).await.map_err(|e| self.store_failed(e))? {
                let live = session.expires_at > now() && session.hashes().contains(&hash);
                return Ok(live.then_some((session, hash)));
            }
        }
        Ok(None)
    }

    pub(super) async fn reload(&self, keys: &KeySet, id: SessionId) -> Result<Option<Session>, ShimError> {
        let session = self.store.load(keys, id).await.map_err(|e| self.store_failed(e))?;
        Ok(session.filter(|s| s.expires_at > now()))
    }

    /// The session of a minted access token, if it may be used by a request on `snapshot` now: the
    /// session is live, its client is still configured with continuity, and its provider is
    /// the request's.
    pub async fn authenticate(&self, snapshot: &Snapshot, token: &[u8]) -> Result<Session, ShimError> {
        let keys = keys(snapshot)?;
        let token = std::str::from_utf8(token).map_err(|_| invalid_token())?;
        if !minted::well_formed(token.as_bytes(), minted::ACCESS_PREFIX) {
            return Err(invalid_token());
        }
        let (session, hash) = self.find(keys, token).await?.ok_or_else(invalid_token)?;
        let client_ok = snapshot
            .client(&session.client_id)
            .is_some_and(|(c, _)| c.continuity && c.mode == crate::config::ClientMode::Rewrite);
        if !session.access_hashes.contains(&hash) || !client_ok || session.provider != provider(snapshot) {
            return Err(invalid_token());
        }
        Ok(session)
    }

    /// Create a session for a continuity client's successful token answer, in the place its
    /// login took ([`Continuity::admit`]), and render the legacy answer with the minted tokens.
    pub(crate) async fn create(
        &self,
        snapshot: &Snapshot,
        client: &ClientConfig,
        v2: &V2Token,
        mut admission: Admission,
    ) -> Result<Vec<u8>, ShimError> {
        let keys = keys(snapshot)?;
        let access = minted::mint(minted::ACCESS_PREFIX)?;
        let refresh = minted::mint(minted::REFRESH_PREFIX)?;
        let now = now();
        let lifetime = client.continuity_lifetime.as_secs();
        let v2_lifetime = v2.lifetime().map_or(DEFAULT_V2_LIFETIME, |d| d.as_secs());
        let session = Session {
            id: admission.id,
            client_id: client.id.clone(),
            provider: provider(snapshot),
            created_at: now,
            expires_at: now.saturating_add(lifetime),
            v2_access: v2.access_token().clone(),
            v2_refresh: v2.refresh_token().cloned(),
            v2_expires_at: Some(now.saturating_add(v2_lifetime)),
            v2_lifetime: Some(v2_lifetime),
            profile: v2.legacy_profile(),
            access_hashes: vec![keys.hash(TOKEN_HASH_DOMAIN, &[access.expose().as_bytes()])],
            refresh_hash: keys.hash(TOKEN_HASH_DOMAIN, &[refresh.expose().as_bytes()]),
            refreshes: 0,
            owners: std::mem::take(&mut admission.owners),
            version: 0,
            until: 0,
        };
        admission.settled = true;
        self.put(keys, &session, session.hashes(), Vec::new()).await?;
        tracing::info!(client = %client.id, session = ?session.id, "continuity session created");
        Ok(render_minted(&access, lifetime, &refresh, &session.profile, &snapshot.config.legacy))
    }

    /// A legacy refresh with a minted refresh token: a new minted access token from the
    /// session, refreshing upstream only if the v2 token is due.
    pub async fn legacy_refresh(
        self: &Arc<Self>,
        snapshot: &Arc<Snapshot>,
        client: &ClientConfig,
        token: &Secret,
        trace: TraceHeaders,
    ) -> Result<Vec<u8>, ShimError> {
        let keys = keys(snapshot)?;
        if !client.continuity || !minted::well_formed(token.expose().as_bytes(), minted::REFRESH_PREFIX) {
            return Err(invalid_grant());
        }
        let (session, hash) = self.find(keys, token.expose()).await?.ok_or_else(invalid_grant)?;
        if hash != session.refresh_hash
            || session.client_id != client.id
            || session.provider != provider(snapshot)
        {
            return Err(invalid_grant());
        }
        let session = match self
            .ensure_fresh(&snapshot.default_provider().token_client, snapshot, session, trace)
            .await
        {
            Err(e) if e.code == ErrorCode::InvalidToken => return Err(invalid_grant()),
            other => other?,
        };
        let access = minted::mint(minted::ACCESS_PREFIX)?;
        let lifetime = client.continuity_lifetime.as_secs();
        let held = self.hold(session.id).await?;
        let renewed = async {
            let mut session = self.reload(keys, session.id).await?.ok_or_else(invalid_grant)?;
            let new_hash = keys.hash(TOKEN_HASH_DOMAIN, &[access.expose().as_bytes()]);
            session.access_hashes.insert(0, new_hash);
            let dropped =
                session.access_hashes.split_off(LIVE_ACCESS_TOKENS.min(session.access_hashes.len()));
            session.expires_at = now().saturating_add(lifetime);
            // Every index entry is written again so that all of them expire with the session.
            self.put(keys, &session, session.hashes(), dropped).await?;
            Ok::<_, ShimError>(session)
        }
        .await;
        held.release().await;
        // Revoked while being renewed: the minted refresh token is dead.
        let session =
            renewed.map_err(|e| if e.code == ErrorCode::InvalidToken { invalid_grant() } else { e })?;
        Ok(render_minted(&access, lifetime, token, &session.profile, &snapshot.config.legacy))
    }

    /// End a session (its upstream grant is gone).
    pub(super) async fn end(&self, keys: &KeySet, session: &Session, why: &'static str) {
        tracing::info!(session = ?session.id, client = %session.client_id, reason = why, "continuity session ended");
        let _ = self.delete(keys, vec![session.clone()]).await;
    }

    /// Every live session that opens with the configured keys.
    pub(super) async fn sessions(&self, keys: &KeySet) -> Result<Vec<Session>, ShimError> {
        let now = now();
        Ok(self
            .store
            .scan(keys, now)
            .await
            .map_err(|e| self.store_failed(e))?
            .into_iter()
            .filter(|s| s.expires_at > now)
            .collect())
    }

    /// Sessions, of one client or all, soonest expiry first.
    pub async fn list(
        &self,
        snapshot: &Snapshot,
        client: Option<&str>,
    ) -> Result<Vec<SessionInfo>, ShimError> {
        let mut sessions = self.sessions(keys(snapshot)?).await?;
        sessions.retain(|s| client.is_none_or(|c| s.client_id == c));
        sessions.sort_by_key(|s| s.expires_at);
        Ok(sessions.iter().map(info).collect())
    }

    /// Revoke a client's sessions (one, by id, or all). Returns how many went.
    pub async fn revoke(
        &self,
        snapshot: &Snapshot,
        client: &str,
        id: Option<SessionId>,
    ) -> Result<usize, ShimError> {
        let keys = keys(snapshot)?;
        let doomed: Vec<Session> = self
            .sessions(keys)
            .await?
            .into_iter()
            .filter(|s| s.client_id == client && id.is_none_or(|want| s.id == want))
            .collect();
        let n = self.delete(keys, doomed).await?;
        tracing::info!(client, revoked = n, "continuity sessions revoked");
        Ok(n)
    }

    /// Delete expired sessions.
    pub async fn sweep(&self) -> Result<usize, ShimError> {
        let n = self.store.sweep(now()).await.map_err(|e| self.store_failed(e))?;
        self.update_gauge().await;
        Ok(n)
    }
}

/// The provider a session belongs to: the token URL its grant was issued by.
pub(super) fn provider(snapshot: &Snapshot) -> String {
    snapshot.config.provider.token_url.clone().unwrap_or_default()
}

fn info(s: &Session) -> SessionInfo {
    let at = |t: u64| crate::ops::migration::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(t));
    SessionInfo {
        id: s.id.hex(),
        client: s.client_id.clone(),
        created_at: at(s.created_at),
        expires_at: at(s.expires_at),
        v2_expires_at: s.v2_expires_at.map(at),
        upstream_refreshes: s.refreshes,
    }
}
