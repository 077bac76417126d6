//! A Sentinel setup of real `redis-server` processes on free loopback ports: 1 master, 2
//! replicas and 3 sentinels (`down-after-milliseconds 1000`), and the `[state]` config that
//! points at it.

use super::{RedisServer, eventually, free_port, state_key_file};

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "oauth-shim-test";

pub struct SentinelSetup {
    /// The data nodes; `nodes[0]` is the first master.
    pub nodes: Vec<RedisServer>,
    sentinels: Vec<(u16, std::process::Child)>,
    dir: std::path::PathBuf,
}

impl SentinelSetup {
    pub async fn start() -> Self {
        let master = RedisServer::start().await;
        let replica_of = vec!["--replicaof".to_owned(), "127.0.0.1".to_owned(), master.port.to_string()];
        let mut nodes = vec![master];
        for _ in 0..2 {
            nodes.push(RedisServer::start_with(replica_of.clone()).await);
        }
        let dir =
            std::env::temp_dir().join(format!("oauth-shim-sentinel-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            // Sentinel rewrites its config file: one each.
            let conf = dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nsentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\nsentinel parallel-syncs {MASTER_NAME} 2\n",
                    nodes[0].port
                ),
            )
            .unwrap();
            let child = std::process::Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server runs Sentinel mode too");
            sentinels.push((port, child));
        }
        let setup = Self { nodes, sentinels, dir };
        eventually("replicas in sync and sentinels watching", async || setup.ready().await).await;
        setup
    }

    /// Both replicas connected to the master and synced, and every sentinel knows the 2 replicas and the
    /// 2 other sentinels.
    async fn ready(&self) -> bool {
        let Ok(mut conn) = self.nodes[0].client().get_multiplexed_async_connection().await else {
            return false;
        };
        let Ok(info): redis::RedisResult<String> =
            redis::cmd("INFO").arg("replication").query_async(&mut conn).await
        else {
            return false;
        };
        // Both synced (`state=online`): until then WAIT does not count a replica.
        if !info.contains("connected_slaves:2") || info.matches("state=online").count() != 2 {
            return false;
        }
        for (port, _) in &self.sentinels {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return false };
            let Ok(master): redis::RedisResult<std::collections::HashMap<String, String>> =
                redis::cmd("SENTINEL").arg("master").arg(MASTER_NAME).query_async(&mut conn).await
            else {
                return false;
            };
            if master.get("num-slaves").map(String::as_str) != Some("2")
                || master.get("num-other-sentinels").map(String::as_str) != Some("2")
            {
                return false;
            }
        }
        true
    }

    /// The master's port as the first sentinel reports it.
    pub async fn master_port(&self) -> Option<u16> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.sentinels[0].0)).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(MASTER_NAME)
            .query_async(&mut conn)
            .await
            .ok()?;
        addr.map(|(_, port)| port)
    }

    /// The data node listening on `port`.
    pub fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes.iter_mut().find(|n| n.port == port).expect("a node of this setup")
    }

    /// `[state]` TOML for a Redis backend through these sentinels.
    pub fn state_toml(&self) -> String {
        let sentinels: Vec<String> =
            self.sentinels.iter().map(|(p, _)| format!("\"127.0.0.1:{p}\"")).collect();
        format!(
            "[state]\nbackend = \"redis\"\nsentinels = [{}]\nmaster_name = \"{MASTER_NAME}\"\n\
             encryption_key_file = \"{}\"\ncommand_timeout = \"500ms\"\nfailover_wait = \"8s\"\n",
            sentinels.join(", "),
            state_key_file().display()
        )
    }
}

impl Drop for SentinelSetup {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
