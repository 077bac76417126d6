//! The one Redis lock, for work only one replica may do at a time (a refresh flight, the refresh
//! of a continuity session). A lock is a key holding its holder's random token:
//!
//! - acquired with a lease (`SET key token NX PX lease`, the one place oauth-shim sets a key
//!   only if it is absent), so a holder that dies lets go by itself;
//! - renewed and released only by its holder (the token must still be there: a holder whose
//!   lease ran out and was taken by another never extends or deletes the other's lock);
//! - its release announced on the `[state]` events channel, so those waiting for it wake at
//!   once; they also look again on a slow timer, in case an announcement is missed.
//!
//! A caller that must read a value and take the lock in one step (a refresh: serve the stored
//! answer, else lead the flight) builds a [`GetOrAcquire`] script from the Lua that reads it.

use std::sync::OnceLock;
use std::time::Duration;

use rand::RngCore;
use tokio::sync::broadcast::error::RecvError;

use super::connection::{Redis, Unavailable};

/// A holder's token: random, so only the holder renews or releases, and others can tell one
/// holder from the next.
pub(crate) type Token = [u8; 16];

/// How often a waiter looks at the lock again when no release announcement woke it.
const RECHECK: Duration = Duration::from_millis(250);

/// Acquire: the tail of every acquiring script. `KEYS[1]` the lock, `ARGV[1]` the token,
/// `ARGV[2]` the lease in ms. `{2, ''}` when taken, else `{3, the holder's token, the ms left
/// of its lease}`.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2, ''}
end
return {3, redis.call('GET', KEYS[1]) or '', redis.call('PTTL', KEYS[1])}
";

/// Extend the lease (`ARGV[2]` ms) only while `ARGV[1]` holds the lock.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Delete the lock only while `ARGV[1]` holds it; then publish `ARGV[2]` (if any) on the events
/// channel (`ARGV[3]`), whoever held it: a holder whose lease ran out still wakes its waiters.
/// The channel is no key: in a cluster, a script's keys share the lock's slot, and a `PUBLISH`
/// reaches every node.
const RELEASE: &str = r"
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  released = redis.call('DEL', KEYS[1])
end
if ARGV[2] ~= '' then
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return released
";

fn script(cell: &'static OnceLock<redis::Script>, lua: &str) -> &'static redis::Script {
    cell.get_or_init(|| redis::Script::new(lua))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A script that reads a value and, if it serves none, acquires the lock, in one step. Its Lua
/// reads `KEYS[2]`, may use `ARGV[3]` on, and returns `{1, value}` to serve a value; else it
/// falls through to the acquire.
pub(crate) struct GetOrAcquire(redis::Script);

impl GetOrAcquire {
    pub(crate) fn new(read: &str) -> Self {
        Self(redis::Script::new(&format!("{read}\n{ACQUIRE}")))
    }
}

/// What an acquiring look found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Looked {
    /// The value the [`GetOrAcquire`] script served.
    Found(Vec<u8>),
    /// This holder holds the lock now.
    Acquired,
    /// Another holder holds it: its token, and how long its lease still runs (from when Redis
    /// answered). Nobody else takes the lock before then, unless Redis loses it (a restart
    /// without persistence, a failover).
    Busy(Vec<u8>, Duration),
}

/// One lock as one would-be holder sees it: the key, this holder's token and the lease.
pub(crate) struct Lock {
    key: String,
    token: Token,
    lease: Duration,
}

impl Lock {
    /// The lock at `key` (already prefixed) for a new holder, with a random token.
    pub(crate) fn new(key: String, lease: Duration) -> Self {
        let mut token = [0u8; 16];
        rand::rng().fill_bytes(&mut token);
        Self { key, token, lease }
    }

    pub(crate) fn token(&self) -> &Token {
        &self.token
    }

    /// The lock's key (prefixed).
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Whether `looked` says this holder holds the lock: it took it, or a look whose answer was
    /// lost took it (Redis slow or restarting) and the next look found its own token.
    pub(crate) fn ours(&self, looked: &Result<Looked, Unavailable>) -> bool {
        match looked {
            Ok(Looked::Acquired) => true,
            Ok(Looked::Busy(holder, _)) => holder[..] == self.token[..],
            _ => false,
        }
    }

    pub(crate) fn lease(&self) -> Duration {
        self.lease
    }

    /// Take the lock if it is free.
    pub(crate) async fn try_acquire(&self, redis: &Redis) -> Result<Looked, Unavailable> {
        static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
        self.invoke(redis, script(&SCRIPT, ACQUIRE), None, &[]).await
    }

    /// Run `read` (see [`GetOrAcquire`]) on `value_key` with `args` (from `ARGV[3]`), and take
    /// the lock if it served nothing, in one round trip.
    pub(crate) async fn get_or_acquire(
        &self,
        redis: &Redis,
        read: &GetOrAcquire,
        value_key: &str,
        args: &[&[u8]],
    ) -> Result<Looked, Unavailable> {
        self.invoke(redis, &read.0, Some(value_key), args).await
    }

    async fn invoke(
        &self,
        redis: &Redis,
        script: &redis::Script,
        value_key: Option<&str>,
        args: &[&[u8]],
    ) -> Result<Looked, Unavailable> {
        let mut invocation = script.prepare_invoke();
        invocation.key(&self.key);
        if let Some(value_key) = value_key {
            invocation.key(value_key);
        }
        invocation.arg(&self.token[..]).arg(millis(self.lease));
        for arg in args {
            invocation.arg(*arg);
        }
        let answer: Vec<redis::Value> =
            redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        let field = |i: usize| answer.get(i).cloned().unwrap_or(redis::Value::Nil);
        let kind: u8 = redis::from_redis_value(field(0)).unwrap_or(0);
        let bytes: Vec<u8> = redis::from_redis_value(field(1)).unwrap_or_default();
        Ok(match kind {
            1 => Looked::Found(bytes),
            2 => Looked::Acquired,
            _ => {
                let left: i64 = redis::from_redis_value(field(2)).unwrap_or(0);
                Looked::Busy(bytes, Duration::from_millis(u64::try_from(left).unwrap_or(0)))
            }
        })
    }

    /// Take the lock, waiting at most `wait` for the holder to let go: woken by a release
    /// announcing `wake` on the events channel, or by the lease running out (seen on the next
    /// look, every 250 ms). `false` when the wait ran out.
    pub(crate) async fn acquire(
        &self,
        redis: &Redis,
        wait: Duration,
        wake: &[u8],
    ) -> Result<bool, Unavailable> {
        // Listening before the first look: a release announced after it cannot be missed.
        let mut released = redis.events();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.try_acquire(redis).await? == Looked::Acquired {
                return Ok(true);
            }
            let woken = tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + RECHECK), async {
                loop {
                    match released.recv().await {
                        Ok(msg) if msg[..] == wake[..] => return,
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            })
            .await;
            if woken.is_err() && tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    /// Extend the lease to a full one from now, if this holder still holds the lock. `false`
    /// when it does not (its lease ran out, and perhaps another holder took it).
    ///
    /// Today's holders take a lease longer than the upstream deadline that bounds their work, so
    /// none renews yet; work that can outlast its lease renews it with this.
    #[cfg_attr(not(test), expect(dead_code, reason = "no holder outlives its lease today"))]
    pub(crate) async fn renew(&self, redis: &Redis) -> Result<bool, Unavailable> {
        static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
        let mut invocation = script(&SCRIPT, RENEW).prepare_invoke();
        invocation.key(&self.key).arg(&self.token[..]).arg(millis(self.lease));
        let renewed: i64 = redis.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await?;
        Ok(renewed == 1)
    }

    /// Let go of the lock if this holder still holds it, and announce `wake` (if not empty) to
    /// the waiters. `false` when it was no longer held.
    pub(crate) async fn release(&self, redis: &Redis, wake: &[u8]) -> Result<bool, Unavailable> {
        let cmd = self.release_cmd(redis, wake);
        let released: i64 = redis.run(|mut c| async move { cmd.query_async(&mut c).await }).await?;
        Ok(released == 1)
    }

    /// [`Lock::release`] as a command, for a pipeline that ends the holder's work.
    pub(crate) fn release_cmd(&self, redis: &Redis, wake: &[u8]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE).arg(1).arg(&self.key).arg(&self.token[..]).arg(wake).arg(redis.events_channel());
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StateConfig;

    /// A `redis-server` on a free loopback port, killed when dropped.
    struct Server(std::process::Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn redis() -> (Server, Redis) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let server = Server(child);
        let cfg = StateConfig { url: Some(format!("redis://127.0.0.1:{port}")), ..StateConfig::default() };
        let redis = Redis::start(&cfg).unwrap();
        for _ in 0..1000 {
            if redis.is_up() {
                return (server, redis);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server did not come up");
    }

    /// The holder a look found busy, without its lease.
    fn holder(looked: Result<Looked, Unavailable>) -> Option<Vec<u8>> {
        match looked {
            Ok(Looked::Busy(holder, left)) => {
                assert!(left > Duration::ZERO, "a held lock's lease runs");
                Some(holder)
            }
            _ => None,
        }
    }

    #[tokio::test]
    async fn only_the_holder_renews_or_releases_and_a_release_wakes_a_waiter() {
        let (_server, redis) = redis().await;
        let lease = Duration::from_secs(30);
        let (a, b) = (Lock::new("t:lock".into(), lease), Lock::new("t:lock".into(), lease));
        assert_ne!(a.token(), b.token());
        assert_eq!(a.try_acquire(&redis).await, Ok(Looked::Acquired));
        assert_eq!(holder(b.try_acquire(&redis).await), Some(a.token().to_vec()));
        assert_eq!(holder(a.try_acquire(&redis).await), Some(a.token().to_vec()), "not re-entrant");
        assert_eq!(b.renew(&redis).await, Ok(false));
        assert_eq!(b.release(&redis, b"").await, Ok(false), "a non-holder cannot release");
        assert_eq!(a.renew(&redis).await, Ok(true));

        // B waits; A's release wakes it, and B holds the lock.
        let waiter = {
            let redis = redis.clone();
            tokio::spawn(async move {
                let got = b.acquire(&redis, Duration::from_secs(60), b"released:t").await;
                (got, b)
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(a.release(&redis, b"released:t").await, Ok(true));
        let (got, b) = waiter.await.unwrap();
        assert_eq!(got, Ok(true));
        assert_eq!(a.renew(&redis).await, Ok(false), "a released holder renews nothing");
        assert_eq!(holder(a.try_acquire(&redis).await), Some(b.token().to_vec()));
        assert_eq!(b.release(&redis, b"").await, Ok(true));
    }

    #[tokio::test]
    async fn a_lease_runs_out_by_itself_and_a_wait_can_run_out() {
        let (_server, redis) = redis().await;
        let dead = Lock::new("t:lease".into(), Duration::from_millis(100));
        assert_eq!(dead.try_acquire(&redis).await, Ok(Looked::Acquired));
        // Its holder never releases: the next one gets it once the lease is over.
        let next = Lock::new("t:lease".into(), Duration::from_secs(30));
        assert_eq!(next.acquire(&redis, Duration::from_secs(30), b"never").await, Ok(true));
        assert_eq!(dead.release(&redis, b"").await, Ok(false), "the lapsed holder releases nothing");
        let late = Lock::new("t:lease".into(), Duration::from_secs(30));
        assert_eq!(late.acquire(&redis, Duration::from_millis(50), b"never").await, Ok(false));
    }

    #[tokio::test]
    async fn get_or_acquire_serves_the_value_or_takes_the_lock_in_one_step() {
        let (_server, redis) = redis().await;
        let read = GetOrAcquire::new(
            "local v = redis.call('GET', KEYS[2])\nif v and v ~= ARGV[3] then return {1, v} end",
        );
        let lock = Lock::new("t:goa".into(), Duration::from_secs(30));
        let other = Lock::new("t:goa".into(), Duration::from_secs(30));
        assert_eq!(lock.get_or_acquire(&redis, &read, "t:value", &[b"skip"]).await, Ok(Looked::Acquired));
        assert_eq!(
            holder(other.get_or_acquire(&redis, &read, "t:value", &[b"skip"]).await),
            Some(lock.token().to_vec())
        );
        let set = redis::cmd("SET").arg("t:value").arg("answer").clone();
        redis.run(|mut c| async move { set.query_async::<()>(&mut c).await }).await.unwrap();
        assert_eq!(
            other.get_or_acquire(&redis, &read, "t:value", &[b"skip"]).await,
            Ok(Looked::Found(b"answer".to_vec()))
        );
        assert_eq!(
            holder(other.get_or_acquire(&redis, &read, "t:value", &[b"answer"]).await),
            Some(lock.token().to_vec()),
            "a value the read passes over falls through to the lock"
        );
    }
}
