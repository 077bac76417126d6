//! Sessions in Redis (`[state] backend = "redis"`), for replicas that share them. Keys, under
//! `[state] key_prefix`:
//!
//! - `cont:ses:<id>`: the sealed record, stamped with its version and expiry, expiring with the
//!   session;
//! - `cont:anchors`: a hash of each session's anchor (its current record version, live or revoked;
//!   see [`super::anchor`]), kept until the latest expiry of any of its records;
//! - `cont:tok:<hmac>`: the session id a minted token's keyed hash indexes, expiring with it;
//! - `cont:index`: a sorted set of live session ids scored by that latest expiry (listing,
//!   counting, the sweep), and of the logins under way scored by when their place lapses (see
//!   `reserve`); `cont:revoked` the same for revoked sessions, until their tombstones go;
//! - `cont:own:<hmac>`: the sessions of one owner (a client, or a user of a client) scored by
//!   their expiry, and that owner's logins under way: the per-client and per-user caps count
//!   these;
//! - `cont:lock:<id>`: the refresh lock of one session (a [`Lock`]: leased, released by its
//!   holder only); a release is announced on the `[state]` events channel, so a replica waiting
//!   for the lock wakes at once.
//!
//! With `[state] replicas_ack`, a session's writes and its refresh lock are acknowledged by that
//! many replicas (`WAIT`) before they count as done, as a refresh flight's are.
//!
//! A record and its anchor are written together by one script that first checks the anchor is the
//! one the writer read, and read together in one transaction, so a session read is always a
//! consistent one. No token is ever a key or a value in the clear. Redis unreachable:
//! continuity requests get `temporarily_unavailable` (the sessions live only there); nothing
//! else is affected.

use std::time::Duration;

use super::anchor::{self, Anchor};
use super::session::{Session, SessionId};
use super::store::{Cap, Over, StoreError};
use crate::crypto::{KeySet, unix_ms};
use crate::redis::Redis;
use crate::redis::lock::Lock;

/// Write a session's record and anchor, index it, count it against its owners, and update its
/// token entries, only if its anchor still starts with the version the writer read (`ARGV[2]`;
/// empty: no anchor). A session revoked meanwhile is thus neither written back nor counted
/// against its owners again.
///
/// `KEYS`: record, anchors, index, then `ARGV[9]` owner sets, then `ARGV[10]` token keys to drop
/// and the rest to add. `ARGV`: id (hex), expected anchor version, sealed record, sealed anchor,
/// expiry, latest expiry (the anchor's), id (bytes), now, then the two counts.
const PUT: &str = r"
local anchor = redis.call('HGET', KEYS[2], ARGV[1])
if (anchor and string.sub(anchor, 1, 8) or '') ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3], 'EXAT', ARGV[5])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
local owners, drop = tonumber(ARGV[9]), tonumber(ARGV[10])
for i = 4, 3 + owners do
  redis.call('ZADD', KEYS[i], ARGV[5], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[8])
  -- The set lives as long as its longest-lived session.
  redis.call('EXPIREAT', KEYS[i], ARGV[5], 'NX')
  redis.call('EXPIREAT', KEYS[i], ARGV[5], 'GT')
end
local tokens = 4 + owners
for i = tokens, tokens + drop - 1 do
  redis.call('DEL', KEYS[i])
end
for i = tokens + drop, #KEYS do
  redis.call('SET', KEYS[i], ARGV[7], 'EXAT', ARGV[5])
end
return 1
";

/// Drop the index entries, and the anchors, of sessions and tombstones past their latest expiry.
/// `KEYS`: anchors, index, revoked; `ARGV[1]`: now. Returns how many live entries went.
const SWEEP: &str = r"
local swept = 0
for i = 2, 3 do
  local ids = redis.call('ZRANGE', KEYS[i], '-inf', ARGV[1], 'BYSCORE')
  for _, id in ipairs(ids) do
    redis.call('HDEL', KEYS[1], id)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[1])
  if i == 2 then swept = #ids end
end
return swept
";

/// A value as Redis gave it, if there was one.
type Reply = Option<Vec<u8>>;

/// What a lock release publishes: this prefix and the session id.
const RELEASED: &[u8] = b"continuity-released:";

/// Take a place among the sessions, if every cap allows one more: count the live entries
/// (score after `now`) of the index and of each cap's owner sets, and add the place to the
/// index and to each cap's first set (the first key's hash), lapsing at `until`. Returns 0 when
/// taken, else the 1-based position of the refusing cap (1: the index).
///
/// KEYS: the index, then each cap's owner sets. ARGV: now, until, id, then per cap its maximum
/// and how many keys it has (the index: 1).
const RESERVE: &str = r"
local live = '(' .. ARGV[1]
local k, a, firsts = 1, 4, {}
while ARGV[a] do
  local max, n, count = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), 0
  firsts[#firsts + 1] = KEYS[k]
  for j = k, k + n - 1 do
    count = count + redis.call('ZCOUNT', KEYS[j], live, '+inf')
  end
  if count >= max then return (a - 2) / 2 end
  k, a = k + n, a + 2
end
for i, key in ipairs(firsts) do
  redis.call('ZADD', key, ARGV[2], ARGV[3])
  if i > 1 then
    redis.call('EXPIREAT', key, ARGV[2], 'NX')
    redis.call('EXPIREAT', key, ARGV[2], 'GT')
  end
end
return 0
";

#[derive(Clone)]
pub(crate) struct RedisSessions {
    redis: Redis,
    /// What every key starts with: [`Redis::group`] `cont` (in a cluster `{cont}:`, one slot, as
    /// the scripts and transactions that write a session, its anchor, index and owner sets
    /// together need).
    base: String,
}

fn unavailable(_: crate::redis::Unavailable) -> StoreError {
    StoreError("redis unavailable".into())
}

impl RedisSessions {
    pub(crate) fn new(redis: Redis) -> Self {
        Self { base: redis.group("cont"), redis }
    }

    fn session_key(&self, id: &SessionId) -> String {
        format!("{}ses:{}", self.base, id.hex())
    }

    fn token_key(&self, hash: &[u8; 32]) -> String {
        self.hashed("tok:", hash)
    }

    fn anchors_key(&self) -> String {
        format!("{}anchors", self.base)
    }

    fn index_key(&self) -> String {
        format!("{}index", self.base)
    }

    fn revoked_key(&self) -> String {
        format!("{}revoked", self.base)
    }

    fn owner_key(&self, owner: &[u8; 32]) -> String {
        self.hashed("own:", owner)
    }

    fn lock_key(&self, id: &SessionId) -> String {
        format!("{}lock:{}", self.base, id.hex())
    }

    fn hashed(&self, kind: &str, hash: &[u8; 32]) -> String {
        let mut key = format!("{}{kind}", self.base);
        crate::redis::connection::push_hex(&mut key, hash);
        key
    }

    /// The current, live session a minted token's hash indexes.
    pub(crate) async fn find(&self, keys: &KeySet, hash: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        let key = self.token_key(hash);
        let id: Option<Vec<u8>> = self
            .redis
            .run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        let Some(id) = id.and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok()).map(SessionId) else {
            return Ok(None);
        };
        self.load(keys, id).await
    }

    /// The current, live session `id`: its record, anchor and index entry read in one transaction.
    pub(crate) async fn load(&self, keys: &KeySet, id: SessionId) -> Result<Option<Session>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("GET").arg(self.session_key(&id));
        pipe.cmd("HGET").arg(self.anchors_key()).arg(id.hex());
        pipe.cmd("ZSCORE").arg(self.index_key()).arg(id.hex());
        let (record, anchor, indexed): (Reply, Reply, Option<f64>) = self
            .redis
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        Ok(anchor::current(keys, id, record.as_deref(), anchor.as_deref(), indexed.is_some(), unix_ms()))
    }

    /// Write `session` as the version after the one it was read as, with its anchor, index entry,
    /// owner entries (a place its login took becomes the session's) and token entries (`add`
    /// indexed, `remove` dropped), all expiring with it. `false`, and nothing written, when its
    /// anchor is no longer the one it was read with: the session was revoked, or written by
    /// someone else, meanwhile.
    pub(crate) async fn put(
        &self,
        keys: &KeySet,
        session: &Session,
        add: &[[u8; 32]],
        remove: &[[u8; 32]],
    ) -> Result<bool, StoreError> {
        let (id, version) = (session.id, session.version + 1);
        let next = Anchor::live(session, version);
        let mut invocation = put_script().prepare_invoke();
        invocation.key(self.session_key(&id)).key(self.anchors_key()).key(self.index_key());
        for owner in &session.owners {
            invocation.key(self.owner_key(owner));
        }
        for h in remove.iter().chain(add) {
            invocation.key(self.token_key(h));
        }
        invocation
            .arg(id.hex())
            .arg(anchor::expected(session.version))
            .arg(session.seal(keys, version))
            .arg(next.seal(keys, &id))
            .arg(session.expires_at)
            .arg(next.until)
            .arg(&id.0[..])
            .arg(super::session::now())
            .arg(session.owners.len())
            .arg(remove.len());
        let written: i64 = self
            .redis
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        if written == 1 {
            self.acknowledged(&self.session_key(&id)).await?;
        }
        Ok(written == 1)
    }

    /// Whether `[state] replicas_ack` replicas have the writes made so far to the master of
    /// `key` (all continuity keys share one), so that a failover right after them keeps them:
    /// `Err` when too few acknowledged (counted), and the caller gets a retryable error.
    async fn acknowledged(&self, key: &str) -> Result<(), StoreError> {
        if self.redis.replicas_ack() == 0 {
            return Ok(());
        }
        let acked = self.redis.acks(key).await.map_err(unavailable)?;
        if self.redis.enough_acks(acked) {
            Ok(())
        } else {
            Err(StoreError("too few redis replicas acknowledged a session write".into()))
        }
    }

    /// Revoke sessions, in one transaction: each anchor becomes a tombstone that outlives every
    /// record the session had, and its record, index entry, token entries and owner entries go
    /// (its places under the caps are free at once). Returns how many had a record.
    pub(crate) async fn revoke(&self, keys: &KeySet, doomed: &[Session]) -> Result<usize, StoreError> {
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for session in doomed {
            let (id, tombstone) = (session.id, Anchor::tombstone(session));
            pipe.cmd("DEL").arg(self.session_key(&id));
            pipe.cmd("HSET").arg(self.anchors_key()).arg(id.hex()).arg(tombstone.seal(keys, &id)).ignore();
            pipe.cmd("ZREM").arg(self.index_key()).arg(id.hex()).ignore();
            pipe.cmd("ZADD").arg(self.revoked_key()).arg(tombstone.until).arg(id.hex()).ignore();
            for h in session.hashes() {
                pipe.cmd("DEL").arg(self.token_key(&h)).ignore();
            }
            for owner in &session.owners {
                pipe.cmd("ZREM").arg(self.owner_key(owner)).arg(id.hex()).ignore();
            }
        }
        let deleted: Vec<u64> = self
            .redis
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        self.acknowledged(&self.anchors_key()).await?;
        Ok(deleted.iter().filter(|n| **n > 0).count())
    }

    /// Every current, live session the index lists.
    pub(crate) async fn scan(&self, keys: &KeySet, now: u64) -> Result<Vec<Session>, StoreError> {
        let index = self.index_key();
        let ids: Vec<String> = self
            .redis
            .run(|mut c| async move {
                redis::cmd("ZRANGE")
                    .arg(index)
                    .arg(format!("({now}"))
                    .arg("+inf")
                    .arg("BYSCORE")
                    .query_async(&mut c)
                    .await
            })
            .await
            .map_err(unavailable)?;
        let ids: Vec<SessionId> = ids.iter().filter_map(|h| SessionId::parse(h)).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("MGET").arg(ids.iter().map(|id| self.session_key(id)).collect::<Vec<_>>());
        pipe.cmd("HMGET").arg(self.anchors_key()).arg(ids.iter().map(SessionId::hex).collect::<Vec<_>>());
        let (records, anchors): (Vec<Reply>, Vec<Reply>) = self
            .redis
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        let now_ms = unix_ms();
        Ok(ids
            .into_iter()
            .zip(records.iter().zip(&anchors))
            .filter_map(|(id, (record, anchor))| {
                anchor::current(keys, id, record.as_deref(), anchor.as_deref(), true, now_ms)
            })
            .collect())
    }

    /// Redis expires the records and token entries itself; this trims the index, the revoked
    /// set and the anchors.
    pub(crate) async fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        let mut invocation = sweep_script().prepare_invoke();
        invocation.key(self.anchors_key()).key(self.index_key()).key(self.revoked_key()).arg(now);
        let n: u64 = self
            .redis
            .run(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(crate) async fn count(&self, now: u64) -> Result<u64, StoreError> {
        let index = self.index_key();
        self.redis
            .run(|mut c| async move {
                redis::cmd("ZCOUNT").arg(index).arg(format!("({now}")).arg("+inf").query_async(&mut c).await
            })
            .await
            .map_err(unavailable)
    }

    /// Take a place for a login under way (the session it will create is `id`), across
    /// replicas and in one step, unless that would put more than `max_sessions` in the store
    /// or more than a cap's `max` under one of its owners; `Some` names the cap that refused.
    /// The place lapses at `until` unless the session is stored (or it is released) first.
    pub(crate) async fn reserve(
        &self,
        id: SessionId,
        now: u64,
        until: u64,
        max_sessions: u64,
        caps: &[Cap],
    ) -> Result<Option<Over>, StoreError> {
        let mut script = redis::cmd("EVAL");
        let keys = 1 + caps.iter().map(|c| c.owners.len()).sum::<usize>();
        script.arg(RESERVE).arg(keys).arg(self.index_key());
        for owner in caps.iter().flat_map(|c| &c.owners) {
            script.arg(self.owner_key(owner));
        }
        script.arg(now).arg(until).arg(id.hex()).arg(max_sessions).arg(1);
        for cap in caps {
            script.arg(cap.max).arg(cap.owners.len());
        }
        let refused: usize = self
            .redis
            .run(|mut c| async move { script.query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        Ok(match refused {
            0 => None,
            1 => Some(Over::All),
            i => Some(caps.get(i - 2).map_or(Over::All, |c| c.over)),
        })
    }

    /// Give back the place a login took (it failed): `owners` are the sets it was added to.
    pub(crate) async fn give_back(&self, id: SessionId, owners: &[[u8; 32]]) {
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM").arg(self.index_key()).arg(id.hex()).ignore();
        for owner in owners {
            pipe.cmd("ZREM").arg(self.owner_key(owner)).arg(id.hex()).ignore();
        }
        let _ = self.redis.run(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await;
    }

    /// Take the session's refresh lock across replicas, waiting at most `wait` for another
    /// holder's release (see [`Lock::acquire`]). The lock expires by itself after `hold`, should
    /// its holder die.
    pub(crate) async fn lock(
        &self,
        id: SessionId,
        hold: Duration,
        wait: Duration,
    ) -> Result<RemoteLock<'_>, StoreError> {
        let lock = Lock::new(self.lock_key(&id), hold);
        if lock.acquire(&self.redis, wait, &released(&id)).await.map_err(unavailable)? {
            // A lock the promoted replica lacks after a failover would let another replica
            // refresh the session with the same upstream refresh token.
            if let Err(e) = self.acknowledged(lock.key()).await {
                let _ = lock.release(&self.redis, &released(&id)).await;
                return Err(e);
            }
            Ok(RemoteLock { store: self, lock, id })
        } else {
            Err(StoreError("timed out waiting for another replica's session refresh".into()))
        }
    }
}

/// What a lock's release announces: [`RELEASED`] and the session id.
fn released(id: &SessionId) -> Vec<u8> {
    let mut message = RELEASED.to_vec();
    message.extend_from_slice(&id.0);
    message
}

/// A held refresh lock; release it with [`RemoteLock::release`] (or it expires by itself).
pub(crate) struct RemoteLock<'a> {
    store: &'a RedisSessions,
    lock: Lock,
    id: SessionId,
}

impl RemoteLock<'_> {
    pub(crate) async fn release(self) {
        let _ = self.lock.release(&self.store.redis, &released(&self.id)).await;
    }
}

fn put_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(PUT))
}

fn sweep_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(SWEEP))
}
