//! The background tasks of the Redis connection ([`super::connection`]): the probe, which finds
//! the master (asking the sentinels, or connecting to the cluster), sees failovers and marks
//! Redis up again after a failure, and the subscriber, which forwards the events channel.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use tokio::sync::{Notify, watch};

use super::cluster::{Cluster, masters};
use super::sentinel::{Sentinels, data_client};
use super::state::{Conn, Node, PROBE_MAX, PROBE_MIN, RedisCore, Refusal, Topology};
use crate::config::ConfigError;

/// A cluster's masters before they were read.
const UNKNOWN: &str = "unknown";

impl RedisCore {
    pub(super) fn node(&self) -> Option<Node> {
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
            Ok(Node { addr: addr.clone(), client: Some(client), conn: Conn::Node(conn) })
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

    /// Connect to the cluster if not yet connected, and check that every master answers;
    /// `Err` names why not. Then read which masters serve the slots: another set than before
    /// is a failover, logged and counted.
    async fn check_cluster(&self, cluster: &Cluster) -> Result<(), String> {
        let limit = self.command_timeout.max(PROBE_MIN);
        let mut conn = match self.node() {
            Some(Node { conn: Conn::Cluster(conn), .. }) => conn,
            _ => {
                let connect = tokio::time::timeout(self.cfg.connect_timeout + limit, cluster.connect());
                let conn = connect.await.map_err(|_| "timed out".to_owned())?.map_err(|e| e.to_string())?;
                let addr = format!("{UNKNOWN} (nodes {})", self.cfg.cluster_nodes.join(","));
                *self.node.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(Node { addr, client: None, conn: Conn::Cluster(conn.clone()) });
                conn
            }
        };
        // Every master the slot map names answers, on a connection of its own, that the
        // cluster is ok; then through the client's own routing (by one of its slots), so that a
        // stale route fails here, and makes the client read the slot map again.
        let limit = self.cfg.connect_timeout + 2 * limit;
        let masters = match tokio::time::timeout(limit, masters(&mut conn)).await {
            Ok(Ok(masters)) if !masters.is_empty() => masters,
            Ok(Ok(_)) => return Err("the cluster serves no slot".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("timed out".into()),
        };
        for (addr, _) in &masters {
            cluster.node_ok(addr).await?;
        }
        let routed = async {
            for (_, slot) in &masters {
                let route = Route::new(*slot, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                conn.route_command(redis::cmd("PING"), routing).await?;
            }
            Ok::<_, redis::RedisError>(())
        };
        match tokio::time::timeout(limit, routed).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("timed out".into()),
        }
        let now = masters.into_iter().map(|(addr, _)| addr).collect::<Vec<_>>().join(",");
        let mut node = self.node.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(node) = node.as_mut() else { return Ok(()) };
        if node.addr != now {
            if node.addr.starts_with(UNKNOWN) {
                tracing::info!(masters = %now, "state: redis cluster masters found");
            } else {
                self.failovers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(old_masters = %node.addr, new_masters = %now, "state: redis cluster failed over to new masters");
            }
            node.addr = now;
        }
        Ok(())
    }
}

/// While Redis is down, PING it with backoff and mark it up on the first answer. Also makes the
/// first connection at start.
pub(super) async fn probe(
    inner: std::sync::Weak<RedisCore>,
    failed: Arc<Notify>,
    mut stopped: watch::Receiver<()>,
) {
    let mut first = true;
    loop {
        let mut delay = PROBE_MIN;
        loop {
            let Some(strong) = inner.upgrade() else { return };
            if let Topology::Sentinel(sentinels) = &strong.topology {
                strong.follow(sentinels).await;
            }
            let failure = match (&strong.topology, strong.node()) {
                (Topology::Cluster(cluster), _) => strong.check_cluster(cluster).await.err(),
                (_, None) => Some("no master known to the sentinels".to_owned()),
                (_, Some(mut node)) => {
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
pub(super) async fn subscribe(
    inner: std::sync::Weak<RedisCore>,
    connect_timeout: Duration,
    mut stopped: watch::Receiver<()>,
) {
    let mut delay = PROBE_MIN;
    for attempt in 0.. {
        let Some(strong) = inner.upgrade() else { return };
        let channel = strong.events_channel.clone();
        let client = match &strong.topology {
            // Any node: the cluster delivers every message to every node's subscribers.
            Topology::Cluster(cluster) => Some(cluster.subscriber(attempt).clone()),
            _ => strong.node().and_then(|n| n.client),
        };
        drop(strong);
        let connected = tokio::time::timeout(connect_timeout, async {
            let client = client.ok_or_else(|| {
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
