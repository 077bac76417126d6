//! A Redis Cluster (`[state] cluster_nodes`): redis-rs's cluster client sends each command to
//! the master of its key's slot and follows `MOVED` and failovers by itself. This keeps that
//! client, a plain client per configured node for the events channel (a cluster delivers a
//! `PUBLISH` to every node's subscribers), and reads which masters serve the slots, so that a
//! failover is seen.

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;

use super::sentinel::node_client;
use crate::config::{ConfigError, StateConfig};

pub(crate) struct Cluster {
    client: redis::cluster::ClusterClient,
    /// One client per configured node, for the subscription.
    nodes: Vec<redis::Client>,
    /// `[state]`, for the clients of the masters the probe asks directly.
    cfg: StateConfig,
}

impl Cluster {
    /// `None` without `[state] cluster_nodes`.
    pub(crate) fn from_config(cfg: &StateConfig) -> Result<Option<Self>, ConfigError> {
        if cfg.cluster_nodes.is_empty() {
            return Ok(None);
        }
        let bad = |e: redis::RedisError| ConfigError(format!("state.cluster_nodes: {}", e.category()));
        let urls = cfg.cluster_urls();
        let mut builder = ClusterClientBuilder::new(urls.clone())
            .connection_timeout(cfg.connect_timeout)
            .response_timeout(cfg.command_timeout)
            // A few quick retries (a MOVED, a reconnect), within `command_timeout`; waiting out
            // a failover is the caller's (`failover_wait`), not a command's.
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(100);
        if let Some(password) = &cfg.password {
            builder = builder.password(password.expose());
        }
        if let Some(root_cert) = cfg.ca_pem()? {
            builder = builder.certs(redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) });
        }
        let client = builder.build().map_err(bad)?;
        let nodes = urls.iter().map(|url| node_client(cfg, url)).collect::<Result<_, _>>()?;
        Ok(Some(Self { client, nodes, cfg: cfg.clone() }))
    }

    /// Connect to the cluster: reads its slots from the first node that answers.
    pub(crate) async fn connect(&self) -> redis::RedisResult<ClusterConnection> {
        self.client.get_async_connection().await
    }

    /// Whether the node at `addr` (`host:port`) answers, on a connection of its own (the
    /// cluster client would send a command for a dead node to another one), that the cluster
    /// is ok: not while a failover is under way (`CLUSTERDOWN`).
    pub(crate) async fn node_ok(&self, addr: &str) -> Result<(), String> {
        let mut url = url::Url::parse(&self.cfg.cluster_urls()[0]).map_err(|e| e.to_string())?;
        let (host, port) = addr.rsplit_once(':').ok_or("a bad node address")?;
        url.set_host(Some(host)).map_err(|e| e.to_string())?;
        url.set_port(port.parse().ok()).map_err(|()| "a bad node port".to_owned())?;
        let client = node_client(&self.cfg, url.as_str()).map_err(|e| e.to_string())?;
        let ask = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("CLUSTER").arg("INFO").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(self.cfg.connect_timeout + self.cfg.command_timeout, ask).await {
            Ok(Ok(info)) if info.contains("cluster_state:ok") => Ok(()),
            Ok(Ok(_)) => Err(format!("the cluster is down at {addr}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// The client of the `attempt`-th configured node (round robin), for the subscription.
    pub(crate) fn subscriber(&self, attempt: usize) -> &redis::Client {
        &self.nodes[attempt % self.nodes.len()]
    }
}

/// The masters serving the cluster's slots (`host:port`, sorted), each with one of its slots, as
/// `CLUSTER SLOTS` on any node reports them.
pub(crate) async fn masters(conn: &mut ClusterConnection) -> redis::RedisResult<Vec<(String, u16)>> {
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut masters: Vec<(String, u16)> = slots
        .iter()
        .filter_map(|range| match range {
            // [start, end, [host, port, id, …] of the master, replicas…]
            redis::Value::Array(parts) => match (parts.first(), parts.get(2)) {
                (Some(start), Some(redis::Value::Array(master))) => {
                    let start: u16 = redis::from_redis_value(start.clone()).ok()?;
                    let host: String = redis::from_redis_value(master.first()?.clone()).ok()?;
                    let port: u16 = redis::from_redis_value(master.get(1)?.clone()).ok()?;
                    Some((format!("{host}:{port}"), start))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    masters.sort();
    masters.dedup_by(|a, b| a.0 == b.0);
    Ok(masters)
}
