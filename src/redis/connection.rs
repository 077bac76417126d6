//! The process's one Redis connection, for everything that keeps state in Redis (the refresh
//! flight and its lock, the continuity sessions). It owns three things: the command connection
//! (redis-rs's connection manager, one multiplexed connection to the master; or its cluster
//! client, which sends each command to the master of its key's slot), a subscriber connection that
//! forwards the messages of one events channel to in-process listeners, and the health of both.
//!
//! # Failing Redis
//!
//! Every command runs under `command_timeout`. A command that fails, times out, or gets an error
//! answer marks Redis down: the outage is logged once, and from then on every command fails at
//! once until a background probe succeeds (`ROLE` says master; in a cluster, every master
//! answers `PING`); the recovery is logged too. No command waits
//! on Redis for longer than `command_timeout`.
//!
//! A caller that must not go on without Redis waits for it with [`Redis::wait_up`], at most
//! `[state] failover_wait` into an outage (a restart, a failover): the probe looks every 100 ms
//! during that time, then backs off exponentially to 5 s. What the caller does when Redis is
//! not back is its outage policy (`when_unavailable`); it counts a refusal with
//! [`Redis::refused`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use bytes::Bytes;
use redis::FromRedisValue;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use tokio::sync::{Notify, broadcast, watch};

use super::cluster::Cluster;
use super::sentinel::{Sentinels, data_client};
use super::state::Conn;
pub(crate) use super::state::Refusal;
use super::state::{Node, PROBE_MAX, PROBE_MIN, RedisCore, Topology};
use crate::config::{ConfigError, StateConfig};

/// Redis did not answer usefully in time; the caller uses its in-process state instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("redis unavailable")]
pub struct Unavailable;

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// True while commands are sent to Redis (false during an outage and before the first
    /// connection).
    pub up: bool,
    /// Operations that fell back to in-process state because Redis was unavailable.
    pub fallbacks: u64,
    /// Outages seen (each logged once).
    pub outages: u64,
    /// Operations refused because Redis was unavailable, by [`Refusal`] (indexed by its value).
    pub refusals: [u64; 3],
    /// `WAIT`s that fewer than `replicas_ack` replicas acknowledged in time.
    pub ack_failures: u64,
    /// Failovers followed: a new master named by the sentinels, or new masters serving a
    /// cluster's slots.
    pub failovers: u64,
    /// Waits for a master to answer again (within `failover_wait`), and their total length.
    pub master_waits: u64,
    pub master_wait_micros: u64,
}

/// A cheap-to-clone handle. The background tasks end when the last handle is dropped.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<RedisCore>,
}

impl Redis {
    /// Build the client from `[state]` and start the probe and subscriber tasks; connects in
    /// the background, so this never waits on Redis. Needs a Tokio runtime.
    pub fn start(cfg: &StateConfig) -> Result<Self, ConfigError> {
        // The `redis` crate builds its rustls config with the process default provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bad = |e: redis::RedisError| ConfigError(format!("state.url: {}", e.category()));
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.command_timeout))
            .set_number_of_retries(1)
            .set_min_delay(PROBE_MIN)
            .set_max_delay(PROBE_MAX);
        let (topology, node) = match (Sentinels::from_config(cfg)?, Cluster::from_config(cfg)?) {
            // The master is asked of the sentinels by the probe, in the background.
            (Some(sentinels), _) => (Topology::Sentinel(sentinels), None),
            // The probe connects to the cluster, in the background.
            (None, Some(cluster)) => (Topology::Cluster(Box::new(cluster)), None),
            (None, None) => {
                let client = data_client(cfg, None)?;
                let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg.clone())
                    .map_err(bad)?;
                let addr = client.get_connection_info().addr().to_string();
                (Topology::Standalone, Some(Node { addr, client: Some(client), conn: Conn::Node(conn) }))
            }
        };
        let (alive, stopped) = watch::channel(());
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(RedisCore {
            node: std::sync::RwLock::new(node),
            topology,
            cfg: cfg.clone(),
            manager_cfg,
            failovers: AtomicU64::new(0),
            prefix: cfg.key_prefix.clone(),
            events_channel: format!("{}events", cfg.key_prefix),
            command_timeout: cfg.command_timeout,
            failover_wait: cfg.failover_wait,
            up: AtomicBool::new(false),
            up_changes: watch::Sender::new(false),
            down_since: std::sync::Mutex::new(tokio::time::Instant::now()),
            down_reason: AtomicU8::new(Refusal::Unavailable as u8),
            fallbacks: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            refusals: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            ack_failures: AtomicU64::new(0),
            master_waits: AtomicU64::new(0),
            master_wait_micros: AtomicU64::new(0),
            replicas_ack: cfg.replicas_ack(),
            failed: Arc::new(Notify::new()),
            events,
            _alive: alive,
        });
        tokio::spawn(super::tasks::probe(Arc::downgrade(&inner), Arc::clone(&inner.failed), stopped.clone()));
        tokio::spawn(super::tasks::subscribe(Arc::downgrade(&inner), cfg.connect_timeout, stopped));
        Ok(Self { inner })
    }

    /// How the master is found (`standalone`, `sentinel`, `cluster`) and the master in use, if
    /// any (a cluster's masters, comma-separated).
    pub fn topology(&self) -> (&'static str, Option<String>) {
        (self.inner.topology.name(), self.inner.node().map(|n| n.addr))
    }

    /// Whether commands are being sent (false: they fail at once).
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// `key_prefix` followed by `kind`, `:` and the hex of `hash` in braces: the hash tag, so
    /// every key of one `hash` (a lock and its value) is in one cluster slot.
    pub fn key(&self, kind: &str, hash: &[u8; 32]) -> String {
        let mut key = String::with_capacity(self.inner.prefix.len() + kind.len() + 67);
        key.push_str(&self.inner.prefix);
        key.push_str(kind);
        key.push_str(":{");
        push_hex(&mut key, hash);
        key.push('}');
        key
    }

    /// Whether this is a Redis Cluster (keys used together must share a hash tag).
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.topology, Topology::Cluster(_))
    }

    /// `key_prefix` followed by `name`.
    pub fn prefixed(&self, name: &str) -> String {
        format!("{}{name}", self.inner.prefix)
    }

    /// The start of the keys of `group` (keys that scripts and transactions use together):
    /// `key_prefix`, `group` and `:`; in a cluster `{group}:`, a hash tag that keeps them in one
    /// slot. Only a cluster has the tag, so what a standalone or Sentinel Redis holds keeps its
    /// name.
    pub fn group(&self, group: &str) -> String {
        let prefix = &self.inner.prefix;
        if self.is_cluster() { format!("{prefix}{{{group}}}:") } else { format!("{prefix}{group}:") }
    }

    /// The channel whose messages [`Redis::events`] delivers.
    pub fn events_channel(&self) -> &str {
        &self.inner.events_channel
    }

    /// Messages published on the events channel from now on (by any replica, this one too).
    /// Lagging listeners see `RecvError::Lagged` and should re-read what they wait for.
    pub fn events(&self) -> broadcast::Receiver<Bytes> {
        self.inner.events.subscribe()
    }

    /// Run a command, pipeline or script invocation on the shared connection within
    /// `command_timeout`. Fails at once while Redis is down; a failure here marks it down.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, Unavailable>
    where
        T: FromRedisValue,
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(Unavailable);
        }
        let Some(node) = self.inner.node() else { return Err(Unavailable) };
        match tokio::time::timeout(self.inner.command_timeout, op(node.conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.mark_down(e.category(), Refusal::Unavailable);
                Err(Unavailable)
            }
            Err(_) => {
                self.mark_down("timed out", Refusal::Timeout);
                Err(Unavailable)
            }
        }
    }

    /// Wait for Redis to answer again, until `until` at the latest. `true` when it is up.
    pub async fn wait_up(&self, until: tokio::time::Instant) -> bool {
        let mut changes = self.inner.up_changes.subscribe();
        if *changes.borrow_and_update() {
            return true;
        }
        matches!(tokio::time::timeout_at(until, changes.wait_for(|up| *up)).await, Ok(Ok(_)))
    }

    /// [`Redis::wait_up`] for a caller that cannot go on without a master: the time it waited
    /// is counted (`oauth_shim_state_master_wait_seconds_total`).
    pub async fn wait_master(&self, until: tokio::time::Instant) -> bool {
        let started = tokio::time::Instant::now();
        let up = self.wait_up(until).await;
        let waited = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.inner.master_waits.fetch_add(1, Ordering::Relaxed);
        self.inner.master_wait_micros.fetch_add(waited, Ordering::Relaxed);
        up
    }

    /// Until when a caller that found Redis unavailable waits for it: `failover_wait` into the
    /// current outage (in the past for an older outage: decided at once).
    pub fn failover_deadline(&self) -> tokio::time::Instant {
        let since = if self.is_up() {
            tokio::time::Instant::now()
        } else {
            *self.inner.down_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        since + self.inner.failover_wait
    }

    /// Count one operation refused because Redis was unavailable (the current outage's reason,
    /// or `reason`).
    pub(crate) fn refused(&self, reason: Option<Refusal>) {
        let reason = match reason {
            Some(reason) => reason as usize,
            None => usize::from(self.inner.down_reason.load(Ordering::Relaxed)).min(1),
        };
        self.inner.refusals[reason].fetch_add(1, Ordering::Relaxed);
    }

    /// `[state] replicas_ack`: how many replicas must acknowledge a lock and an answer.
    pub fn replicas_ack(&self) -> u32 {
        self.inner.replicas_ack
    }

    /// How many replicas acknowledged the writes made so far to the master of `key` (its slot's,
    /// in a cluster: a keyless `WAIT` would go to any master there), see [`Redis::wait_cmd`].
    pub async fn acks(&self, key: &str) -> Result<i64, Unavailable> {
        let wait = self.wait_cmd();
        let route = Route::with_key(key, SlotAddr::Master);
        self.run(|conn| async move {
            match conn {
                Conn::Node(mut c) => wait.query_async(&mut c).await,
                Conn::Cluster(mut c) => {
                    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                    redis::from_redis_value(c.route_command(wait, routing).await?).map_err(Into::into)
                }
            }
        })
        .await
    }

    /// The `WAIT` that asks for `replicas_ack` acknowledgements of this connection's writes so
    /// far, within half the `command_timeout` (so it answers inside the command's own). In a
    /// pipeline, the pipeline's key routes it.
    pub fn wait_cmd(&self) -> redis::Cmd {
        let timeout = u64::try_from((self.inner.command_timeout / 2).as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(self.inner.replicas_ack).arg(timeout);
        cmd
    }

    /// Whether `acked` replicas are enough; counts a failure when not.
    pub fn enough_acks(&self, acked: i64) -> bool {
        let enough = acked >= i64::from(self.inner.replicas_ack);
        if !enough {
            self.inner.ack_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                acked,
                wanted = self.inner.replicas_ack,
                "state: too few redis replicas acknowledged a write"
            );
        }
        enough
    }

    /// Count one operation that used in-process state because Redis was unavailable.
    pub fn fell_back(&self) {
        self.inner.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> RedisStats {
        RedisStats {
            up: self.is_up(),
            fallbacks: self.inner.fallbacks.load(Ordering::Relaxed),
            outages: self.inner.outages.load(Ordering::Relaxed),
            refusals: self.inner.refusals.each_ref().map(|r| r.load(Ordering::Relaxed)),
            failovers: self.inner.failovers.load(Ordering::Relaxed),
            ack_failures: self.inner.ack_failures.load(Ordering::Relaxed),
            master_waits: self.inner.master_waits.load(Ordering::Relaxed),
            master_wait_micros: self.inner.master_wait_micros.load(Ordering::Relaxed),
        }
    }

    fn mark_down(&self, why: &str, reason: Refusal) {
        if self.inner.up.swap(false, Ordering::AcqRel) {
            *self.inner.down_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                tokio::time::Instant::now();
            self.inner.down_reason.store(reason as u8, Ordering::Relaxed);
            self.inner.up_changes.send_replace(false);
            self.inner.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = why,
                "state: redis unavailable; refreshes follow when_unavailable until it is back"
            );
        }
        self.inner.failed.notify_one();
    }
}

/// Append the lowercase hex of `bytes`.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write;
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.inner.prefix)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
