//! The state the Redis handle ([`super::connection`]) and its background tasks
//! ([`super::tasks`]) share: how the master is found ([`Topology`]), the connection commands go
//! to ([`Conn`], [`Node`]), the health and the counters ([`RedisCore`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use tokio::sync::{Notify, broadcast, watch};

use super::cluster::Cluster;
use super::sentinel::Sentinels;
use crate::config::StateConfig;

/// How oauth-shim finds the master.
pub(super) enum Topology {
    /// The one node of `url`.
    Standalone,
    /// Asked of the sentinels.
    Sentinel(Sentinels),
    /// A Redis Cluster: each key's master is its slot's, which redis-rs's cluster client
    /// follows.
    Cluster(Box<Cluster>),
}

impl Topology {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Sentinel(_) => "sentinel",
            Self::Cluster(_) => "cluster",
        }
    }
}

pub(super) const PROBE_MIN: Duration = Duration::from_millis(100);
pub(super) const PROBE_MAX: Duration = Duration::from_secs(5);

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

/// The connection commands go to: one master's (standalone, Sentinel), or the cluster client's,
/// which sends each command to the master of its key's slot.
#[derive(Clone)]
pub enum Conn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Where commands go: the master's `host:port` (a cluster's: its masters'), the client of the
/// master (none for a cluster) and the connection.
#[derive(Clone)]
pub(super) struct Node {
    pub(super) addr: String,
    pub(super) client: Option<redis::Client>,
    pub(super) conn: Conn,
}

pub(super) struct RedisCore {
    /// `None` until the sentinels named a master.
    pub(super) node: std::sync::RwLock<Option<Node>>,
    pub(super) topology: Topology,
    /// `[state]`, to build the client of a new master.
    pub(super) cfg: StateConfig,
    pub(super) manager_cfg: ConnectionManagerConfig,
    /// Masters followed after the first (failovers seen).
    pub(super) failovers: AtomicU64,
    pub(super) prefix: String,
    pub(super) events_channel: String,
    pub(super) command_timeout: Duration,
    pub(super) failover_wait: Duration,
    pub(super) up: AtomicBool,
    /// The same as `up`, for those waiting for Redis to be back.
    pub(super) up_changes: watch::Sender<bool>,
    /// When the current outage began (read only while down).
    pub(super) down_since: std::sync::Mutex<tokio::time::Instant>,
    /// The [`Refusal`] the current outage is counted as.
    pub(super) down_reason: AtomicU8,
    pub(super) fallbacks: AtomicU64,
    pub(super) outages: AtomicU64,
    pub(super) refusals: [AtomicU64; 3],
    pub(super) ack_failures: AtomicU64,
    pub(super) master_waits: AtomicU64,
    pub(super) master_wait_micros: AtomicU64,
    /// `[state] replicas_ack`.
    pub(super) replicas_ack: u32,
    /// Wakes the probe task when a command fails.
    pub(super) failed: Arc<Notify>,
    pub(super) events: broadcast::Sender<Bytes>,
    /// Dropped with the last handle: the background tasks watch it and stop.
    pub(super) _alive: watch::Sender<()>,
}
