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
            // One quick retry (a MOVED, a reconnect); waiting out a failover is the caller's
            // (`failover_wait`), not a command's.
            .retries(1)
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
        Ok(Some(Self { client, nodes }))
    }

    /// Connect to the cluster: reads its slots from the first node that answers.
    pub(crate) async fn connect(&self) -> redis::RedisResult<ClusterConnection> {
        self.client.get_async_connection().await
    }

    /// The client of the `attempt`-th configured node (round robin), for the subscription.
    pub(crate) fn subscriber(&self, attempt: usize) -> &redis::Client {
        &self.nodes[attempt % self.nodes.len()]
    }
}

/// The masters serving the cluster's slots (`host:port`, sorted), as `CLUSTER SLOTS` on any
/// node reports them.
pub(crate) async fn masters(conn: &mut ClusterConnection) -> redis::RedisResult<Vec<String>> {
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut masters: Vec<String> = slots
        .iter()
        .filter_map(|range| match range {
            // [start, end, [host, port, id, …] of the master, replicas…]
            redis::Value::Array(parts) => match parts.get(2) {
                Some(redis::Value::Array(master)) => {
                    let host: String = redis::from_redis_value(master.first()?.clone()).ok()?;
                    let port: u16 = redis::from_redis_value(master.get(1)?.clone()).ok()?;
                    Some(format!("{host}:{port}"))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    masters.sort();
    masters.dedup();
    Ok(masters)
}
