//! How one refresh flight lives in Redis: its keys, its [`Lock`] (held by the flight that leads,
//! its token telling one flight from the next), and the sealed record of its outcome (`s…` an
//! answer, `e…` an error marker tagged with the flight's lock token), which is stored under the
//! value key and published on the events channel.
//!
//! An answer is served only while it is younger than it was kept for ([`keep`]), reckoned from
//! the answer time sealed in it: an answer written back to Redis, or left there with its expiry
//! stripped, by someone without the `[state]` key is refused once stale, and the look that
//! refused it takes the lock (or finds the flight that did), so the refresh is made once.

use std::time::Duration;

use super::portable::Portable;
use crate::crypto::{KeySet, Opened, unix_ms};
use crate::redis::lock::{GetOrAcquire, Lock, Looked};
use crate::redis::{Redis, Unavailable};
use crate::refresh::types::Refreshed;

/// How much longer than the upstream deadline a flight's lock lives: time for the leader's
/// store-and-publish after a call that took the whole deadline.
pub(super) const LOCK_MARGIN: Duration = Duration::from_secs(2);

/// The read half of a look (the lock takes the rest, see [`GetOrAcquire`]): serve a stored
/// answer; an error marker only to a waiter whose flight token (`ARGV[3]`) it carries. A record
/// the caller refused before (`ARGV[4]`: stale or unreadable) is deleted and looked past.
const READ: &str = r"
local v = redis.call('GET', KEYS[2])
if v and ARGV[4] ~= '' and v == ARGV[4] then
  redis.call('DEL', KEYS[2])
  v = false
end
if v then
  if string.sub(v, 1, 1) == 's' or (ARGV[3] ~= '' and string.sub(v, 2, 17) == ARGV[3]) then
    return {1, v}
  end
end
";

fn get_or_lock_script() -> &'static GetOrAcquire {
    static SCRIPT: std::sync::OnceLock<GetOrAcquire> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| GetOrAcquire::new(READ))
}

/// How long an answer is kept, and served: as long as the local cache would keep it,
/// `min(ttl, lifetime)`.
pub(super) fn keep<V: Refreshed>(value: &V, ttl: Duration) -> Duration {
    value.lifetime().map_or(ttl, |l| l.min(ttl))
}

/// The Redis keys of one refresh, its flight's lock (this caller's token, the lease), and how
/// long its answers are kept.
pub(super) struct Keys {
    /// The keyed hash of the refresh; messages on the events channel start with it.
    pub(super) hash: [u8; 32],
    value: String,
    pub(super) lock: Lock,
    /// `refresh_cache.ttl`.
    ttl: Duration,
}

impl Keys {
    pub(super) fn new(redis: &Redis, hash: [u8; 32], lock_ttl: Duration, ttl: Duration) -> Self {
        let (value, lock) = (redis.key("refresh", &hash), redis.key("refresh-lock", &hash));
        Self { hash, value, lock: Lock::new(lock, lock_ttl), ttl }
    }

    /// One round trip: the stored record (an answer, or the error marker of the flight
    /// `waiting_on`), else the lock, else the running flight's token. A stored record equal to
    /// `refused` is deleted first.
    pub(super) async fn get_or_lock(
        &self,
        redis: &Redis,
        waiting_on: Option<&[u8]>,
        refused: Option<&[u8]>,
    ) -> Result<Looked, Unavailable> {
        let args = [waiting_on.unwrap_or(b""), refused.unwrap_or(b"")];
        self.lock.get_or_acquire(redis, get_or_lock_script(), &self.value, &args).await
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
    pub(super) fn seal_error<E: Portable>(&self, seal: &KeySet, error: &E) -> Vec<u8> {
        let mut stored = vec![b'e'];
        stored.extend_from_slice(self.lock.token());
        stored.extend_from_slice(&seal.seal(self.value.as_bytes(), &error.encode()));
        stored
    }

    /// Open a stored record: `Ok` with the value and its age for an answer, `Err` for an error
    /// marker of the flight `waiting_on`; `None` for anything else (another flight's marker,
    /// a record this key set cannot open, an answer past its [`keep`]).
    ///
    /// Answers are written sealed without a stamp, the answer time first; one sealed with a
    /// [`Stamp`](crate::crypto::Stamp) in front is read too, its sealed expiry deciding, so that
    /// a later version can write stamped answers while this one still runs.
    pub(super) fn open<V: Portable + Refreshed, E: Portable>(
        &self,
        seal: &KeySet,
        stored: &[u8],
        waiting_on: Option<&[u8]>,
    ) -> Option<Result<(V, Duration), E>> {
        self.open_within(seal, stored, waiting_on, Duration::ZERO)
    }

    /// As [`Keys::open`], for a record published on the events channel to the waiters of
    /// `waiting_on`: an answer is theirs for the lock's lifetime at least, also when it is not
    /// kept at all (`refresh_cache.ttl = "0s"`).
    pub(super) fn open_published<V: Portable + Refreshed, E: Portable>(
        &self,
        seal: &KeySet,
        published: &[u8],
        waiting_on: &[u8],
    ) -> Option<Result<(V, Duration), E>> {
        self.open_within(seal, published, Some(waiting_on), self.lock.lease())
    }

    fn open_within<V: Portable + Refreshed, E: Portable>(
        &self,
        seal: &KeySet,
        stored: &[u8],
        waiting_on: Option<&[u8]>,
        at_least: Duration,
    ) -> Option<Result<(V, Duration), E>> {
        let aad = self.value.as_bytes();
        match stored.split_first()? {
            (b's', sealed) => {
                let now = unix_ms();
                let (stamped, plain) = match seal.open_stamped(aad, sealed, now) {
                    Some(Opened::Stamped(_, plain)) => (true, plain),
                    Some(Opened::Plain(plain)) => (false, plain),
                    None => {
                        tracing::warn!(
                            "state: a refresh answer in Redis does not open with this [state] key set, or is past its expiry; calling upstream"
                        );
                        return None;
                    }
                };
                let (at, encoded) = plain.split_first_chunk::<8>()?;
                let age = Duration::from_millis(now.saturating_sub(u64::from_be_bytes(*at)));
                let value = V::decode(encoded)?;
                let keep = keep(&value, self.ttl).max(at_least);
                if !stamped && age >= keep {
                    // Past its keep by more than Redis's own expiry would explain: written back.
                    if age >= keep + Duration::from_secs(1) {
                        tracing::warn!(
                            age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                            "state: a refresh answer in Redis is past its expiry (written back?); calling upstream"
                        );
                    }
                    return None;
                }
                Some(Ok((value, age)))
            }
            (b'e', rest) if rest.len() > 16 && Some(&rest[..16]) == waiting_on => {
                let plain = seal.open(aad, &rest[16..])?;
                Some(Err(E::decode(&plain)?))
            }
            _ => None,
        }
    }

    /// One pipelined round trip at the end of a flight: keep `stored` for `keep` (or, for a
    /// zero `keep`, drop any stale record), wait for `replicas_ack` replicas to have it (if
    /// any; too few is an `Err`), release the lock if this flight still holds it, and publish
    /// `stored` to the waiters (the lock's wake-up).
    pub(super) async fn finish(
        &self,
        redis: &Redis,
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
        if redis.replicas_ack() == 0 {
            pipe.add_command(self.lock.release_cmd(redis, &message)).ignore();
            return redis.run(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await;
        }
        // Replication is in order: a release the replicas lack comes after an answer they lack,
        // so on a promoted replica the lock is still held, and this flight stores again there.
        pipe.add_command(redis.wait_cmd());
        pipe.add_command(self.lock.release_cmd(redis, &message)).ignore();
        let (acked,): (i64,) = redis.run(|mut c| async move { pipe.query_async(&mut c).await }).await?;
        if redis.enough_acks(acked) { Ok(()) } else { Err(Unavailable) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StateConfig;
    use crate::crypto::Stamp;

    /// An answer whose token lives this many seconds, if the answer says.
    #[derive(Debug, Clone, PartialEq)]
    struct Answer(Option<u64>);

    impl Refreshed for Answer {
        fn lifetime(&self) -> Option<Duration> {
            self.0.map(Duration::from_secs)
        }
    }

    impl Portable for Answer {
        fn encode(&self) -> Vec<u8> {
            self.0.map(|s| s.to_be_bytes().to_vec()).unwrap_or_default()
        }
        fn decode(bytes: &[u8]) -> Option<Self> {
            Some(Self(bytes.try_into().ok().map(u64::from_be_bytes)))
        }
    }

    const TTL: Duration = Duration::from_secs(30);
    const LOCK_TTL: Duration = Duration::from_secs(12);

    fn keys(ttl: Duration) -> (Redis, Keys, KeySet) {
        let cfg = StateConfig { url: Some("redis://127.0.0.1:1".into()), ..StateConfig::default() };
        let redis = Redis::start(&cfg).unwrap();
        let keys = Keys::new(&redis, [7; 32], LOCK_TTL, ttl);
        (redis, keys, KeySet::parse(&"ef".repeat(32)).unwrap())
    }

    /// A stored answer as [`Keys::seal_answer`] writes it, answered `ago` before now.
    fn answered(keys: &Keys, seal: &KeySet, answer: &Answer, ago: Duration) -> Vec<u8> {
        let at = unix_ms() - u64::try_from(ago.as_millis()).unwrap();
        let mut plain = at.to_be_bytes().to_vec();
        plain.extend_from_slice(&answer.encode());
        let mut stored = vec![b's'];
        stored.extend_from_slice(&seal.seal(keys.value.as_bytes(), &plain));
        stored
    }

    fn served(keys: &Keys, seal: &KeySet, stored: &[u8]) -> Option<Answer> {
        match keys.open::<Answer, Answer>(seal, stored, None)? {
            Ok((answer, _)) => Some(answer),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn an_answer_is_served_only_while_younger_than_it_was_kept_for() {
        let (redis, keys, seal) = keys(TTL);
        let hour = Answer(Some(3600));
        assert_eq!(served(&keys, &seal, &keys.seal_answer(&seal, &hour)), Some(hour.clone()));
        // `refresh_cache.ttl` bounds an answer whose token lives longer.
        assert_eq!(
            served(&keys, &seal, &answered(&keys, &seal, &hour, Duration::from_secs(29))),
            Some(hour.clone())
        );
        assert_eq!(served(&keys, &seal, &answered(&keys, &seal, &hour, Duration::from_secs(32))), None);
        // The token's lifetime bounds it when shorter; no stated lifetime means the ttl.
        let short = Answer(Some(10));
        assert_eq!(
            served(&keys, &seal, &answered(&keys, &seal, &short, Duration::from_secs(9))),
            Some(short.clone())
        );
        assert_eq!(served(&keys, &seal, &answered(&keys, &seal, &short, Duration::from_secs(11))), None);
        assert_eq!(
            served(&keys, &seal, &answered(&keys, &seal, &Answer(None), Duration::from_secs(31))),
            None
        );
        // An answer another refresh's key sealed does not open here.
        let other = Keys::new(&redis, [8; 32], LOCK_TTL, TTL);
        assert_eq!(served(&keys, &seal, &other.seal_answer(&seal, &hour)), None);
    }

    #[tokio::test]
    async fn a_published_answer_is_its_waiters_for_the_lock_lifetime_even_when_not_kept() {
        let (_redis, keys, seal) = keys(Duration::ZERO);
        let hour = Answer(Some(3600));
        let stored = keys.seal_answer(&seal, &hour);
        assert_eq!(served(&keys, &seal, &stored), None, "not kept, so never served from Redis");
        let published = |ago| {
            keys.open_published::<Answer, Answer>(&seal, &answered(&keys, &seal, &hour, ago), b"flight")
        };
        assert!(matches!(published(Duration::ZERO), Some(Ok(_))));
        assert!(published(LOCK_TTL + Duration::from_secs(1)).is_none(), "an old message published again");
    }

    #[tokio::test]
    async fn a_stamped_answer_is_read_until_its_stamp_expires() {
        let (_redis, keys, seal) = keys(TTL);
        let stamped = |expires_at_ms| {
            let mut plain = (unix_ms() - 60_000).to_be_bytes().to_vec();
            plain.extend_from_slice(&Answer(Some(3600)).encode());
            let stamp = Stamp { version: 0, expires_at_ms };
            let mut stored = vec![b's'];
            stored.extend_from_slice(&seal.seal_stamped(keys.value.as_bytes(), stamp, &plain));
            stored
        };
        assert_eq!(served(&keys, &seal, &stamped(unix_ms() + 5_000)), Some(Answer(Some(3600))));
        assert_eq!(served(&keys, &seal, &stamped(unix_ms() - 1)), None);
    }
}
