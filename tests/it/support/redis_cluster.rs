//! A Redis Cluster of real `redis-server` processes on free loopback ports: 3 masters and 3
//! replicas (`cluster-node-timeout 1000`, each bus port set explicitly: it defaults to port +
//! 10000), created with `redis-cli --cluster create`, and the `[state]` config that points at it.

use super::{RedisServer, eventually, free_port, state_key_file, temp_dir};

pub struct ClusterSetup {
    pub nodes: Vec<RedisServer>,
    dir: std::path::PathBuf,
}

impl ClusterSetup {
    pub async fn start() -> Self {
        let dir = temp_dir("cluster");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let bus = free_port();
            let args = [
                "--cluster-enabled yes",
                &format!("--cluster-port {bus}"),
                "--cluster-node-timeout 1000",
                "--cluster-config-file nodes-{port}.conf",
                &format!("--dir {}", dir.display()),
            ];
            let args = args.iter().flat_map(|a| a.splitn(2, ' ').map(str::to_owned)).collect();
            nodes.push(RedisServer::start_with(args).await);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("redis-cli is installed with redis-server");
        assert!(created.success(), "redis-cli --cluster create failed");
        let setup = Self { nodes, dir };
        eventually("the cluster to be ok, every master with a replica in sync", async || setup.ready().await)
            .await;
        setup
    }

    /// Every node says `cluster_state:ok`, and every master has a replica online.
    async fn ready(&self) -> bool {
        let mut masters = 0;
        for node in &self.nodes {
            let Some(info) = info(node, &["CLUSTER", "INFO"]).await else { return false };
            if !info.contains("cluster_state:ok") {
                return false;
            }
            let Some(replication) = info_replication(node).await else { return false };
            if replication.contains("role:master") {
                // Online: its first sync is done (a master delays it, `repl-diskless-sync-delay`),
                // so it acknowledges writes (`WAIT`).
                if !replication.contains("connected_slaves:1") || !replication.contains("state=online") {
                    return false;
                }
                masters += 1;
            }
        }
        masters == 3
    }

    /// The port of the master that serves `key`'s slot, as `node` reports it.
    pub async fn master_of(&self, key: &str) -> u16 {
        for node in &self.nodes {
            let Ok(mut conn) = node.client().get_multiplexed_async_connection().await else { continue };
            let Ok(slot) = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async::<i64>(&mut conn).await
            else {
                continue;
            };
            let Ok(ranges) =
                redis::cmd("CLUSTER").arg("SLOTS").query_async::<Vec<redis::Value>>(&mut conn).await
            else {
                continue;
            };
            for range in ranges {
                let redis::Value::Array(parts) = range else { continue };
                let (Some(start), Some(end), Some(master)) = (parts.first(), parts.get(1), parts.get(2))
                else {
                    continue;
                };
                let start: i64 = redis::from_redis_value(start.clone()).unwrap();
                let end: i64 = redis::from_redis_value(end.clone()).unwrap();
                if (start..=end).contains(&slot) {
                    let redis::Value::Array(master) = master else { continue };
                    return redis::from_redis_value(master[1].clone()).unwrap();
                }
            }
        }
        panic!("no node names the master of the key's slot");
    }

    /// The data node listening on `port`.
    pub fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes.iter_mut().find(|n| n.port == port).expect("a node of this setup")
    }

    /// `[state]` TOML for a Redis backend on this cluster, naming two of its nodes.
    pub fn state_toml(&self) -> String {
        format!(
            "[state]\nbackend = \"redis\"\ncluster_nodes = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n\
             encryption_key_file = \"{}\"\ncommand_timeout = \"500ms\"\nfailover_wait = \"8s\"\n",
            self.nodes[0].port,
            self.nodes[3].port,
            state_key_file().display()
        )
    }
}

impl Drop for ClusterSetup {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn info(node: &RedisServer, cmd: &[&str]) -> Option<String> {
    let mut conn = node.client().get_multiplexed_async_connection().await.ok()?;
    redis::cmd(cmd[0]).arg(&cmd[1..]).query_async(&mut conn).await.ok()
}

async fn info_replication(node: &RedisServer) -> Option<String> {
    info(node, &["INFO", "replication"]).await
}
