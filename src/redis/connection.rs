//! The process's one Redis connection, for everything that keeps state in Redis (the refresh
//! flight and its lock, the continuity sessions). It owns three things: the command connection
//! (redis-rs's connection manager, one multiplexed connection), a subscriber connection that
//! forwards the messages of one events channel to in-process listeners, and the health of both.
//!
//! # Failing Redis
//!
//! Every command runs under `command_timeout`. A command that fails, times out, or gets an error
//! answer marks Redis down: the outage is logged once, and from then on every command fails at
//! once until a background probe (PING) succeeds; the recovery is logged too. No command waits
//! on Redis for longer than `command_timeout`.
//!
//! A caller that must not go on without Redis waits for it with [`Redis::wait_up`], at most
//! `[state] failover_wait` into an outage (a restart, a failover): the probe looks every 100 ms
//! during that time, then backs off exponentially to 5 s. What the caller does when Redis is
//! not back is its outage policy (`when_unavailable`); it counts a refusal with
//! [`Redis::refused`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::FromRedisValue;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Notify, broadcast, watch};

use super::sentinel::{Sentinels, Topology, data_client};
use crate::config::{ConfigError, StateConfig};

const PROBE_MIN: Duration = Duration::from_millis(100);
const PROBE_MAX: Duration = Duration::from_secs(5);

/// Redis did not answer usefully in time; the caller uses its in-process state instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("redis unavailable")]
pub struct Unavailable;

/// Why a caller refused to go on without Redis (the `reason` label of the refusals metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Redis refused connections or answered commands with errors.
    Unavailable = 0,
    /// Redis answered no command within `command_timeout`.
    Timeout = 1,
    /// Fewer replicas than `replicas_ack` acknowledged a flight's lock.
    NoReplicaAck = 2,
}

impl Refusal {
    pub(crate) const ALL: [Refusal; 3] = [Refusal::Unavailable, Refusal::Timeout, Refusal::NoReplicaAck];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::NoReplicaAck => "no_replica_ack",
        }
    }
}

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
    /// Failovers followed: a new master named by the sentinels.
    pub failovers: u64,
}

/// A cheap-to-clone handle. The background tasks end when the last handle is dropped.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<RedisCore>,
}

/// The master commands go to: its `host:port`, its client and the connection to it.
#[derive(Clone)]
struct Node {
    addr: String,
    client: redis::Client,
    conn: ConnectionManager,
}

struct RedisCore {
    /// `None` until the sentinels named a master.
    node: std::sync::RwLock<Option<Node>>,
    topology: Topology,
    /// `[state]`, to build the client of a new master.
    cfg: StateConfig,
    manager_cfg: ConnectionManagerConfig,
    /// Masters followed after the first (failovers seen).
    failovers: AtomicU64,
    prefix: String,
    events_channel: String,
    command_timeout: Duration,
    failover_wait: Duration,
    up: AtomicBool,
    /// The same as `up`, for those waiting for Redis to be back.
    up_changes: watch::Sender<bool>,
    /// When the current outage began (read only while down).
    down_since: std::sync::Mutex<tokio::time::Instant>,
    /// The [`Refusal`] the current outage is counted as.
    down_reason: AtomicU8,
    fallbacks: AtomicU64,
    outages: AtomicU64,
    refusals: [AtomicU64; 3],
    ack_failures: AtomicU64,
    /// `[state] replicas_ack`.
    replicas_ack: u32,
    /// Wakes the probe task when a command fails.
    failed: Arc<Notify>,
    events: broadcast::Sender<Bytes>,
    /// Dropped with the last handle: the background tasks watch it and stop.
    _alive: watch::Sender<()>,
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
        let (topology, node) = match Sentinels::from_config(cfg)? {
            // The master is asked of the sentinels by the probe, in the background.
            Some(sentinels) => (Topology::Sentinel(sentinels), None),
            None => {
                let client = data_client(cfg, None)?;
                let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg.clone())
                    .map_err(bad)?;
                let addr = client.get_connection_info().addr().to_string();
                (Topology::Standalone, Some(Node { addr, client, conn }))
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
            replicas_ack: cfg.replicas_ack(),
            failed: Arc::new(Notify::new()),
            events,
            _alive: alive,
        });
        tokio::spawn(probe(Arc::downgrade(&inner), Arc::clone(&inner.failed), stopped.clone()));
        tokio::spawn(subscribe(Arc::downgrade(&inner), cfg.connect_timeout, stopped));
        Ok(Self { inner })
    }

    /// How the master is found (`standalone`, `sentinel`) and the master in use, if any.
    pub fn topology(&self) -> (&'static str, Option<String>) {
        (self.inner.topology.name(), self.inner.node().map(|n| n.addr))
    }

    /// Whether commands are being sent (false: they fail at once).
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// `key_prefix` followed by `kind`, `:` and the hex of `hash`.
    pub fn key(&self, kind: &str, hash: &[u8; 32]) -> String {
        use std::fmt::Write;
        let mut key = String::with_capacity(self.inner.prefix.len() + kind.len() + 65);
        key.push_str(&self.inner.prefix);
        key.push_str(kind);
        key.push(':');
        for b in hash {
            let _ = write!(key, "{b:02x}");
        }
        key
    }

    /// `key_prefix` followed by `name`.
    pub fn prefixed(&self, name: &str) -> String {
        format!("{}{name}", self.inner.prefix)
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
        F: FnOnce(ConnectionManager) -> Fut,
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

    /// The `WAIT` that asks for `replicas_ack` acknowledgements of this connection's writes so
    /// far, within half the `command_timeout` (so it answers inside the command's own).
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

impl RedisCore {
    fn node(&self) -> Option<Node> {
        self.node.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Ask the sentinels for the master, and move to it if it is another node (a failover).
    async fn follow(&self, sentinels: &Sentinels) {
        let Some(addr) = sentinels.master().await else { return };
        let old = self.node().map(|n| n.addr);
        if old.as_deref() == Some(addr.as_str()) {
            return;
        }
        let built = data_client(&self.cfg, Some(&addr)).and_then(|client| {
            let conn = ConnectionManager::new_lazy_with_config(client.clone(), self.manager_cfg.clone())
                .map_err(|e| ConfigError(format!("state: {}", e.category())))?;
            Ok(Node { addr: addr.clone(), client, conn })
        });
        match built {
            Ok(node) => {
                *self.node.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(node);
                match old {
                    Some(old) => {
                        self.failovers.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(old_master = %old, new_master = %addr, "state: redis failed over to a new master");
                    }
                    None => tracing::info!(master = %addr, "state: redis master found through sentinel"),
                }
            }
            Err(e) => tracing::error!(error = %e, "state: cannot use the master the sentinels name"),
        }
    }
}

/// While Redis is down, PING it with backoff and mark it up on the first answer. Also makes the
/// first connection at start.
async fn probe(inner: std::sync::Weak<RedisCore>, failed: Arc<Notify>, mut stopped: watch::Receiver<()>) {
    let mut first = true;
    loop {
        let mut delay = PROBE_MIN;
        loop {
            let Some(strong) = inner.upgrade() else { return };
            if let Topology::Sentinel(sentinels) = &strong.topology {
                strong.follow(sentinels).await;
            }
            let failure = match strong.node() {
                None => Some("no master known to the sentinels".to_owned()),
                Some(mut node) => {
                    // ROLE, not PING: a master demoted to a replica answers PING too.
                    let role = redis::cmd("ROLE");
                    let answer = role.query_async::<redis::Value>(&mut node.conn);
                    match tokio::time::timeout(strong.command_timeout.max(PROBE_MIN), answer).await {
                        Ok(Ok(redis::Value::Array(parts)))
                            if parts.first().is_some_and(
                                |r| matches!(r, redis::Value::BulkString(b) if b == b"master"),
                            ) =>
                        {
                            None
                        }
                        Ok(Ok(_)) => Some("the node is not a master".to_owned()),
                        // Connection, TLS and authentication failures; the answer carries no data.
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some("timed out".to_owned()),
                    }
                }
            };
            let Some(failure) = failure else {
                strong.up.store(true, Ordering::Release);
                strong.up_changes.send_replace(true);
                if !first {
                    tracing::info!("state: redis reachable again; shared state resumed");
                }
                first = false;
                break;
            };
            if first {
                first = false;
                strong.down_reason.store(
                    if failure == "timed out" { Refusal::Timeout } else { Refusal::Unavailable } as u8,
                    Ordering::Relaxed,
                );
                strong.outages.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    error = %failure,
                    "state: redis unavailable at start; using in-process state until it is reachable"
                );
            } else {
                tracing::debug!(error = %failure, "state: redis still unavailable");
            }
            // Quick looks while callers may be waiting for it (`failover_wait`), then backoff.
            let since = *strong.down_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let young = since.elapsed() < strong.failover_wait;
            drop(strong);
            tokio::select! {
                () = tokio::time::sleep(if young { PROBE_MIN } else { delay }) => {}
                _ = stopped.changed() => return,
            }
            if !young {
                delay = (delay * 2).min(PROBE_MAX);
            }
        }
        // Up: sleep until a command fails.
        tokio::select! {
            () = failed.notified() => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Keep one subscription to the events channel and fan its messages out to the listeners,
/// reconnecting with backoff.
async fn subscribe(
    inner: std::sync::Weak<RedisCore>,
    connect_timeout: Duration,
    mut stopped: watch::Receiver<()>,
) {
    let mut delay = PROBE_MIN;
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let (channel, node) = (strong.events_channel.clone(), strong.node());
        drop(strong);
        let connected = tokio::time::timeout(connect_timeout, async {
            let client = node.map(|n| n.client).ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Io, "no master known to the sentinels"))
            })?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        if let Ok(Ok(pubsub)) = connected {
            delay = PROBE_MIN;
            let mut messages = pubsub.into_on_message();
            loop {
                let msg = tokio::select! {
                    msg = messages.next() => msg,
                    _ = stopped.changed() => return,
                };
                let Some(msg) = msg else { break };
                let Some(strong) = inner.upgrade() else { return };
                // No listener is fine: nobody is waiting.
                let _ = strong.events.send(Bytes::copy_from_slice(msg.get_payload_bytes()));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped.changed() => return,
        }
        delay = (delay * 2).min(PROBE_MAX);
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
