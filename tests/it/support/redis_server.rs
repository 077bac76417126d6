//! A real `redis-server` on a free loopback port, and the `[state]` config that points at it.

use super::{free_port, poll_until};

/// A `redis-server` on a free loopback port, with persistence off; killed when dropped.
/// [`RedisServer::stop`] and [`RedisServer::restart`] simulate an outage on the same port.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    /// Further `redis-server` arguments (TLS, a password).
    extra: Vec<String>,
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// A server started with `extra` arguments (`{port}` in them is replaced by the port).
    /// With `--tls-port {port}` among them, the port speaks TLS only.
    pub async fn start_with(extra: Vec<String>) -> Self {
        let port = free_port();
        let extra = extra.into_iter().map(|a| a.replace("{port}", &port.to_string())).collect();
        let mut server = Self { port, child: None, extra };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL: no goodbye to its clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port, and wait until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        let tls = self.extra.iter().any(|a| a == "--tls-port");
        let plain_port = if tls { "0".to_owned() } else { self.port.to_string() };
        let child = std::process::Command::new("redis-server")
            .args(["--port", &plain_port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        self.child = Some(child);
        let up = poll_until(async || {
            if tls {
                tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok()
            } else {
                self.client().get_multiplexed_async_connection().await.is_ok()
            }
        })
        .await;
        assert!(up, "redis-server did not start on port {}", self.port);
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    /// Every key and its raw contents (`DUMP`, which holds the value as Redis stores it).
    pub async fn dump_all(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut conn = self.client().get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
        let mut out = Vec::new();
        for key in keys {
            let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(&key).query_async(&mut conn).await.unwrap();
            out.push((key, dump.unwrap_or_default()));
        }
        out
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fixed `[state]` key for the tests (64 hex digits).
pub const STATE_KEY: &str = "8f4c2b1a9e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170f1e2d3c";

/// A file holding [`STATE_KEY`], written once per test process.
pub fn state_key_file() -> &'static std::path::Path {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("oauth-shim-test-state-key-{}", std::process::id()));
        std::fs::write(&path, format!("{STATE_KEY}\n")).unwrap();
        path
    })
}

/// `[state]` TOML for a Redis backend at `redis` keyed with [`STATE_KEY`].
pub fn redis_state_toml(redis: &RedisServer) -> String {
    redis_state_toml_timing_out(redis, "500ms")
}

/// [`redis_state_toml`] with another `command_timeout`: a test of what replicas do while Redis
/// is up gives a starved machine's Redis time to answer, so a slow answer is not taken for an
/// outage (which the outage tests cover).
pub fn redis_state_toml_timing_out(redis: &RedisServer, command_timeout: &str) -> String {
    format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\nencryption_key_file = \"{}\"\ncommand_timeout = \"{command_timeout}\"\n",
        redis.url(),
        state_key_file().display()
    )
}
