//! The binary as a process, scratch directories, free ports, and bounded waits.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{ID, SECRET};

/// The `oauth-shim` binary, with `OAUTH_SHIM_CONFIG` cleared so the test's environment cannot
/// choose its config, and its migration record in a fresh directory (a test that restarts a
/// process on one record sets `OAUTH_SHIM_MIGRATION__DIR` again).
pub fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_oauth-shim"));
    c.env_remove("OAUTH_SHIM_CONFIG");
    c.env("OAUTH_SHIM_MIGRATION__DIR", temp_dir("record"));
    c
}

/// A child process killed when dropped, so a failing assertion leaves no process behind.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A new, empty directory under the system temp dir, its name made of `name`, this test
/// process's id and a counter (a fresh one per call).
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("oauth-shim-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback port nothing listened on a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Poll `cond` every 10 ms until it holds, for at most 10 s (a bound on a wait, never a timing
/// assertion). Whether it held.
pub async fn poll_until(mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if cond().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait, as [`poll_until`] does, until `cond` holds; panics naming `what` if it never does.
pub async fn eventually(what: &str, cond: impl AsyncFnMut() -> bool) {
    assert!(poll_until(cond).await, "timed out waiting for {what}");
}

/// `oauth-shim serve` as a process on a config file that listens on 127.0.0.1:0 and logs JSON
/// (`[log] format = "json"`); its addresses are read from its "listening" line. Its stdout and
/// stderr lines are kept; it is killed when dropped.
pub struct ShimProcess {
    child: std::process::Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl ShimProcess {
    /// Serve `config` with `envs` set (and `RUST_LOG` unset unless among them).
    pub async fn serve(config: &Path, envs: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut child = bin()
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (log, tx) = (log.clone(), tx.clone());
            readers.push(std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("oauth-shim listening") {
                        let _ = tx.send(line.clone());
                    }
                    log.lock().unwrap().push(line);
                }
            }));
        }
        let line = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("the binary logs its addresses");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let proxy = v["proxy"].as_str().unwrap().parse().unwrap();
        let admin =
            v["admin"].as_str().unwrap().trim_start_matches("Some(").trim_end_matches(')').parse().unwrap();
        Self { child, proxy, admin, log, readers }
    }

    /// Serve a config against the upstream at `upstream_base` (tokens, authorize and API alike),
    /// with [`ID`] as its client, logging at debug.
    pub async fn against(upstream_base: &str) -> Self {
        Self::against_with(upstream_base, "").await
    }

    /// [`ShimProcess::against`] with `upstream_keys` (TOML lines) added to its `[upstream]`.
    pub async fn against_with(upstream_base: &str, upstream_keys: &str) -> Self {
        let config = temp_dir("serve").join("shim.toml");
        let toml = format!(
            r#"
            [server]
            listen = "127.0.0.1:0"
            shutdown_grace = "20s"
            [admin]
            listen = "127.0.0.1:0"
            [log]
            format = "json"
            level = "debug"
            [upstream]
            token_url = "{upstream_base}/oauth/v2/token"
            authorize_url = "{upstream_base}/oauth/v2/authorize"
            api_base = "{upstream_base}"
            {upstream_keys}
            [[clients]]
            id = "{ID}"
            secret = "{SECRET}"
            "#
        );
        std::fs::write(&config, toml).unwrap();
        Self::serve(&config, &[]).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send the process `signal` (`TERM`, `HUP`, ...).
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Wait (bounded, 30 s) for the process to exit, then for the last of its output.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        for _ in 0..1500 {
            if let Some(status) = self.child.try_wait().unwrap() {
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        panic!("oauth-shim did not exit");
    }

    /// SIGTERM, then [`ShimProcess::wait`].
    pub async fn terminate_and_wait(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait().await
    }

    /// SIGKILL, then [`ShimProcess::wait`].
    pub async fn kill(&mut self) {
        let _ = self.child.kill();
        self.wait().await;
    }

    /// Every line it has written so far, stdout's and stderr's.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for ShimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
