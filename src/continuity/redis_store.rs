//! Sessions in Redis (`[state] backend = "redis"`), for replicas that share them. Keys, under
//! `[state] key_prefix`:
//!
//! - `cont:ses:<id>`: the sealed record (the same envelope as the embedded store), expiring
//!   with the session;
//! - `cont:tok:<hmac>`: the session id a minted token's keyed hash indexes, expiring with it;
//! - `cont:index`: a sorted set of session ids scored by expiry (listing, counting, the sweep),
//!   and of the logins under way scored by when their place lapses (see `reserve`);
//! - `cont:own:<hmac>`: the same, for the sessions of one owner (a client, or a user of a
//!   client): the per-client and per-user caps count these;
//! - `cont:lock:<id>`: the refresh lock of one session (`SET NX PX`, released by its holder
//!   only); a release is published on the `[state]` events channel, so a replica waiting for
//!   the lock wakes at once instead of polling.
//!
//! No token is ever a key or a value in the clear. Redis unreachable: continuity requests get
//! `temporarily_unavailable` (the sessions live only there); nothing else is affected.

use std::time::Duration;

use rand::RngCore;

use super::session::SessionId;
use super::store::{Cap, Doomed, Over, StoreError, Stored};
use crate::state::redis::Redis;

/// Compare-and-delete: release a lock only while holding it, and announce the release.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[2], ARGV[2])
  return 1
end
return 0
";

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
    /// `[state] key_prefix`.
    prefix: String,
}

fn unavailable(_: crate::state::redis::Unavailable) -> StoreError {
    StoreError("redis unavailable".into())
}

fn id_hex(id: &SessionId) -> String {
    id.hex()
}

impl RedisSessions {
    pub(crate) fn new(redis: Redis, prefix: &str) -> Self {
        Self { redis, prefix: prefix.to_owned() }
    }

    fn session_key(&self, id: &SessionId) -> String {
        format!("{}cont:ses:{}", self.prefix(), id_hex(id))
    }

    fn token_key(&self, hash: &[u8; 32]) -> String {
        self.redis.key("cont:tok", hash)
    }

    fn index_key(&self) -> String {
        format!("{}cont:index", self.prefix())
    }

    fn owner_key(&self, owner: &[u8; 32]) -> String {
        self.redis.key("cont:own", owner)
    }

    fn lock_key(&self, id: &SessionId) -> String {
        format!("{}cont:lock:{}", self.prefix(), id_hex(id))
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) async fn find(&self, hash: &[u8; 32]) -> Result<Option<Stored>, StoreError> {
        let key = self.token_key(hash);
        let id: Option<Vec<u8>> = self
            .redis
            .run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        let Some(id) = id.and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok()).map(SessionId) else {
            return Ok(None);
        };
        Ok(self.load(id).await?.map(|sealed| (id, sealed)))
    }

    pub(crate) async fn load(&self, id: SessionId) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.session_key(&id);
        self.redis
            .run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn put(
        &self,
        id: SessionId,
        expires_at: u64,
        sealed: &[u8],
        add: &[[u8; 32]],
        remove: &[[u8; 32]],
        owners: &[[u8; 32]],
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SET").arg(self.session_key(&id)).arg(sealed).arg("EXAT").arg(expires_at).ignore();
        pipe.cmd("ZADD").arg(self.index_key()).arg(expires_at).arg(id_hex(&id)).ignore();
        let now = super::session::now();
        for owner in owners {
            let key = self.owner_key(owner);
            pipe.cmd("ZADD").arg(&key).arg(expires_at).arg(id_hex(&id)).ignore();
            pipe.cmd("ZREMRANGEBYSCORE").arg(&key).arg("-inf").arg(now).ignore();
            // The set lives as long as its longest-lived session.
            pipe.cmd("EXPIREAT").arg(&key).arg(expires_at).arg("NX").ignore();
            pipe.cmd("EXPIREAT").arg(&key).arg(expires_at).arg("GT").ignore();
        }
        for h in remove {
            pipe.cmd("DEL").arg(self.token_key(h)).ignore();
        }
        for h in add {
            pipe.cmd("SET").arg(self.token_key(h)).arg(&id.0[..]).arg("EXAT").arg(expires_at).ignore();
        }
        // Every index entry of the session lives as long as the session.
        self.redis.run(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await.map_err(unavailable)
    }

    pub(crate) async fn delete(&self, doomed: &[Doomed]) -> Result<usize, StoreError> {
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for d in doomed {
            pipe.cmd("DEL").arg(self.session_key(&d.id));
            pipe.cmd("ZREM").arg(self.index_key()).arg(id_hex(&d.id)).ignore();
            for h in &d.tokens {
                pipe.cmd("DEL").arg(self.token_key(h)).ignore();
            }
            for owner in &d.owners {
                pipe.cmd("ZREM").arg(self.owner_key(owner)).arg(id_hex(&d.id)).ignore();
            }
        }
        let deleted: Vec<u64> = self
            .redis
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        Ok(deleted.iter().filter(|n| **n > 0).count())
    }

    pub(crate) async fn scan(&self, now: u64) -> Result<Vec<Stored>, StoreError> {
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
        let keys: Vec<String> = ids.iter().map(|id| self.session_key(id)).collect();
        let values: Vec<Option<Vec<u8>>> = self
            .redis
            .run(|mut c| async move { redis::cmd("MGET").arg(keys).query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        Ok(ids.into_iter().zip(values).filter_map(|(id, v)| v.map(|v| (id, v))).collect())
    }

    /// Redis expires the records and token entries itself; this trims the index.
    pub(crate) async fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        let index = self.index_key();
        let n: u64 = self
            .redis
            .run(|mut c| async move {
                redis::cmd("ZREMRANGEBYSCORE").arg(index).arg("-inf").arg(now).query_async(&mut c).await
            })
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
        script.arg(now).arg(until).arg(id_hex(&id)).arg(max_sessions).arg(1);
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
        pipe.cmd("ZREM").arg(self.index_key()).arg(id_hex(&id)).ignore();
        for owner in owners {
            pipe.cmd("ZREM").arg(self.owner_key(owner)).arg(id_hex(&id)).ignore();
        }
        let _ = self.redis.run(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await;
    }

    /// Take the session's refresh lock across replicas, waiting at most `wait` for another
    /// holder's release (announced on the events channel; re-tried every 250 ms in case an
    /// announcement is missed). The lock expires by itself after `hold`, should its holder die.
    pub(crate) async fn lock(
        &self,
        id: SessionId,
        hold: Duration,
        wait: Duration,
    ) -> Result<RemoteLock<'_>, StoreError> {
        let mut token = [0u8; 16];
        rand::rng().fill_bytes(&mut token);
        let key = self.lock_key(&id);
        let mut released = self.redis.events();
        let mut wanted = RELEASED.to_vec();
        wanted.extend_from_slice(&id.0);
        let hold_ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (k, t) = (key.clone(), token);
            let taken: Option<String> = self
                .redis
                .run(|mut c| async move {
                    redis::cmd("SET")
                        .arg(k)
                        .arg(&t[..])
                        .arg("NX")
                        .arg("PX")
                        .arg(hold_ms)
                        .query_async(&mut c)
                        .await
                })
                .await
                .map_err(unavailable)?;
            if taken.is_some() {
                return Ok(RemoteLock { store: self, key, token, id });
            }
            let woken = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(250)),
                async {
                    loop {
                        match released.recv().await {
                            Ok(msg) if msg[..] == wanted[..] => return,
                            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                },
            )
            .await;
            if woken.is_err() && tokio::time::Instant::now() >= deadline {
                return Err(StoreError("timed out waiting for another replica's session refresh".into()));
            }
        }
    }

    async fn release(&self, key: String, token: [u8; 16], id: SessionId) {
        let mut message = RELEASED.to_vec();
        message.extend_from_slice(&id.0);
        let channel = self.redis.events_channel().to_owned();
        let _ = self
            .redis
            .run(|mut c| async move {
                redis::cmd("EVAL")
                    .arg(RELEASE)
                    .arg(2)
                    .arg(key)
                    .arg(channel)
                    .arg(&token[..])
                    .arg(message)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
    }
}

/// A held refresh lock; release it with [`RemoteLock::release`] (or it expires by itself).
pub(crate) struct RemoteLock<'a> {
    store: &'a RedisSessions,
    key: String,
    token: [u8; 16],
    id: SessionId,
}

impl RemoteLock<'_> {
    pub(crate) async fn release(self) {
        self.store.release(self.key, self.token, self.id).await;
    }
}
