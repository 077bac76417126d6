//! How one shared flight lives in Redis: its keys, the lock (`SET NX PX`, released only by the
//! flight that holds it), and the sealed record of its outcome (`s…` an answer, `e…` an error
//! marker tagged with the flight's lock token), which is stored under the value key and
//! published on the events channel.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::portable::Portable;
use crate::crypto::KeySet;
use crate::state::redis::{Redis, Unavailable};

/// A flight's lock token: random, so only the flight that took the lock releases it, and
/// waiters can tell their flight's error marker from another's.
pub(super) type Token = [u8; 16];

/// How much longer than the upstream deadline a flight's lock lives: time for the leader's
/// store-and-publish after a call that took the whole deadline.
pub(super) const LOCK_MARGIN: Duration = Duration::from_secs(2);

/// Serve a stored answer, take the lock, or report the running flight's lock token. Error
/// markers are returned only to a waiter whose flight token (`ARGV[3]`) they carry.
const GET_OR_LOCK: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  if string.sub(v, 1, 1) == 's' or (ARGV[3] ~= '' and string.sub(v, 2, 17) == ARGV[3]) then
    return {1, v}
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2, ''}
end
return {3, redis.call('GET', KEYS[2]) or ''}
";

/// Delete the lock only if this flight still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

fn get_or_lock_script() -> &'static redis::Script {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(GET_OR_LOCK))
}

/// What [`Keys::get_or_lock`] found.
pub(super) enum Looked {
    /// A stored answer (`s…`) or this waiter's error marker (`e…`).
    Found(Vec<u8>),
    /// This caller holds the lock now.
    Locked,
    /// Another flight holds the lock; its token.
    Busy(Vec<u8>),
}

/// The Redis keys of one refresh, and its lock's lifetime.
pub(super) struct Keys {
    /// The keyed hash of the refresh; messages on the events channel start with it.
    pub(super) hash: [u8; 32],
    value: String,
    lock: String,
    pub(super) lock_ttl: Duration,
}

impl Keys {
    pub(super) fn new(redis: &Redis, hash: [u8; 32], lock_ttl: Duration) -> Self {
        Self { hash, value: redis.key("refresh", &hash), lock: redis.key("refresh-lock", &hash), lock_ttl }
    }

    /// One round trip: the stored record (an answer, or the error marker of the flight
    /// `waiting_on`), else the lock for `token`, else the running flight's token.
    pub(super) async fn get_or_lock(
        &self,
        redis: &Redis,
        token: &Token,
        waiting_on: Option<&[u8]>,
    ) -> Result<Looked, Unavailable> {
        let lock_ms = u64::try_from(self.lock_ttl.as_millis()).unwrap_or(u64::MAX);
        let script = get_or_lock_script();
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&self.value)
            .key(&self.lock)
            .arg(&token[..])
            .arg(lock_ms)
            .arg(waiting_on.unwrap_or(b""));
        let (kind, bytes): (u8, Vec<u8>) =
            redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        Ok(match kind {
            1 => Looked::Found(bytes),
            2 => Looked::Locked,
            _ => Looked::Busy(bytes),
        })
    }

    /// The record of an answer: `s`, then sealed (bound to the value key) the time it was
    /// answered and the value.
    pub(super) fn seal_answer<V: Portable>(&self, seal: &KeySet, value: &V) -> Vec<u8> {
        let mut plain = unix_ms().to_be_bytes().to_vec();
        plain.extend_from_slice(&value.encode());
        let mut stored = vec![b's'];
        stored.extend_from_slice(&seal.seal(self.value.as_bytes(), &plain));
        stored
    }

    /// The record of an error: `e`, the flight's token, then the sealed error.
    pub(super) fn seal_error<E: Portable>(&self, seal: &KeySet, token: &Token, error: &E) -> Vec<u8> {
        let mut stored = vec![b'e'];
        stored.extend_from_slice(token);
        stored.extend_from_slice(&seal.seal(self.value.as_bytes(), &error.encode()));
        stored
    }

    /// Open a stored record: `Ok` with the value and its age for an answer, `Err` for an error
    /// marker of the flight `waiting_on`; `None` for anything else (another flight's marker,
    /// a record this key set cannot open).
    pub(super) fn open<V: Portable, E: Portable>(
        &self,
        seal: &KeySet,
        stored: &[u8],
        waiting_on: Option<&[u8]>,
    ) -> Option<Result<(V, Duration), E>> {
        let aad = self.value.as_bytes();
        match stored.split_first()? {
            (b's', sealed) => {
                let opened = seal.open(aad, sealed).and_then(|plain| {
                    let (at, encoded) = plain.split_first_chunk::<8>()?;
                    let age = Duration::from_millis(unix_ms().saturating_sub(u64::from_be_bytes(*at)));
                    Some((V::decode(encoded)?, age))
                });
                if opened.is_none() {
                    tracing::warn!(
                        "state: a refresh answer in Redis does not open with this [state] key set; calling upstream"
                    );
                }
                opened.map(Ok)
            }
            (b'e', rest) if rest.len() > 16 && Some(&rest[..16]) == waiting_on => {
                let plain = seal.open(aad, &rest[16..])?;
                Some(Err(E::decode(&plain)?))
            }
            _ => None,
        }
    }

    /// One pipelined round trip at the end of a flight: keep `stored` for `keep` (or, for a
    /// zero `keep`, drop any stale record), publish it to the waiters, and release the lock if
    /// `token` still holds it.
    pub(super) async fn finish(
        &self,
        redis: &Redis,
        token: &Token,
        stored: &[u8],
        keep: Duration,
    ) -> Result<(), Unavailable> {
        let mut message = self.hash.to_vec();
        message.extend_from_slice(stored);
        let mut pipe = redis::pipe();
        let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        if keep_ms > 0 {
            pipe.cmd("SET").arg(&self.value).arg(stored).arg("PX").arg(keep_ms).ignore();
        } else {
            // Not cached: the success is only published; drop any stale marker.
            pipe.cmd("DEL").arg(&self.value).ignore();
        }
        pipe.cmd("PUBLISH").arg(redis.events_channel()).arg(&message).ignore();
        pipe.cmd("EVAL").arg(RELEASE).arg(1).arg(&self.lock).arg(&token[..]).ignore();
        redis.run(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
