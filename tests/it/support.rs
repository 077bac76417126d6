//! Test harness: a v2 stand-in plus oauth-shim configured against it, both on 127.0.0.1:0.

#![allow(dead_code)]

use std::net::SocketAddr;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use oauth_shim::app::App;
use oauth_shim::config::Config;
use oauth_shim::devtools::standin::{Standin, StandinClient, StandinConfig};
use oauth_shim::server::{self, Running};
use oauth_shim::snapshot::Snapshot;
use tokio::net::TcpListener;

pub const ID: &str = "legacy-client";
pub const SECRET: &str = "s3cret-canary-secret";

/// The stand-in config most tests use: one client matching [`ID`]/[`SECRET`] with the password
/// grant allowed, and the demo user.
pub fn standin_config() -> StandinConfig {
    StandinConfig {
        clients: vec![StandinClient { id: ID.into(), secret: SECRET.into(), allow_password_grant: true }],
        ..StandinConfig::default()
    }
}

pub struct Harness {
    pub standin: Standin,
    pub shim: Running,
    pub app: App,
    pub base: String,
}

impl Harness {
    /// Stand-in with `standin`, shim with the default client plus `extra_toml` merged on top.
    pub async fn start(standin: StandinConfig, extra_toml: &str) -> Self {
        let standin = Standin::start(standin, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let config = shim_config(&standin, extra_toml);
        Self::with_config(standin, config).await
    }

    pub async fn default() -> Self {
        Self::start(standin_config(), "").await
    }

    pub async fn with_config(standin: Standin, config: Config) -> Self {
        let app = App::new(Snapshot::new(config).unwrap());
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shim = server::start_on(app.clone(), proxy, Some(admin)).unwrap();
        let base = format!("http://{}", shim.proxy_addr);
        Self { standin, shim, app, base }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base, path_and_query)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.shim.admin_addr.unwrap(), path)
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.shim.proxy_addr
    }
}

/// A validated config pointing at `standin`; `extra_toml` is merged over the defaults (use it to
/// change keys), and its `[[clients]]` are appended to the default client: [`ID`] in rewrite
/// mode with the password grant allowed.
pub fn shim_config(standin: &Standin, extra_toml: &str) -> Config {
    let base = format!(
        r#"
        [upstream]
        token_url = "{token}"
        authorize_url = "{authz}"
        api_base = "{api}"
        connect_timeout = "1s"
        request_timeout = "2s"
        [[clients]]
        id = "{ID}"
        secret = "{SECRET}"
        allow_password_grant = true
        "#,
        token = standin.token_url(),
        authz = standin.authorize_url(),
        api = standin.api_base(),
    );
    let figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(&base));
    let figment = if extra_toml.is_empty() { figment } else { figment.admerge(Toml::string(extra_toml)) };
    Config::from_figment(figment).expect("test config is valid")
}

/// A reqwest client that never follows redirects and never uses a proxy.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build().unwrap()
}

/// Decode an `Authorization: Basic` header the upstream received into (id, secret), undoing the
/// RFC 6749 §2.3.1 form-urlencoding.
pub fn decode_basic(value: &str) -> (String, String) {
    use base64::Engine;
    let b64 = value.strip_prefix("Basic ").expect("Basic scheme");
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (id, secret) = raw.split_once(':').unwrap();
    let dec = |s: &str| form_urlencoded::parse(format!("x={s}").as_bytes()).next().unwrap().1.into_owned();
    (dec(id), dec(secret))
}

/// Parse a form body into ordered pairs.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// Everything every test in this binary logs, at TRACE, from the first call on. The subscriber is
/// process-wide, so the canary tests see the log lines of all tests running alongside them.
pub fn captured_logs() -> LogCapture {
    use std::sync::{Arc, Mutex, OnceLock};
    static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let buf = LogCapture(Arc::new(Mutex::new(Vec::new())));
            let writer = buf.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
            buf
        })
        .clone()
}

#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---- Front-door helpers: raw sockets and a recording echo upstream. ----

/// A raw HTTP/1 exchange: write `request` as is, read until the server closes (at most 10 s).
/// Returns everything read, lossily decoded. Use `Connection: close` (or a request the server
/// refuses) so the server closes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw exchange's output (0 when there is none).
pub fn raw_status(raw: &str) -> u16 {
    raw.strip_prefix("HTTP/1.1 ").and_then(|s| s.get(..3)).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A generated body of `len` bytes in 64 KiB frames, never held in memory as a whole.
pub struct Generated {
    pub remaining: u64,
    chunk: bytes::Bytes,
}

impl Generated {
    pub fn new(len: u64) -> Self {
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        Self { remaining: len, chunk: chunk.into() }
    }
}

impl http_body::Body for Generated {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }
}

/// Memory figures of a process from `/proc/<pid>/status`, in KiB: (VmRSS, VmHWM).
pub fn proc_memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// GET `url` and parse the answer as JSON (whatever its status).
pub async fn get_json(url: impl reqwest::IntoUrl) -> serde_json::Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

/// GET `url` and return the answer's body as text (whatever its status).
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    http().get(url).send().await.unwrap().text().await.unwrap()
}

/// Read one request head from a raw upstream connection, as text. `buf` carries bytes read past
/// the head (a body, or the next request) from one call to the next. `None` once the peer has
/// closed (or the read failed).
pub async fn read_request_head(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    Some(head)
}

// ---- A real redis-server for the shared-state tests. ----

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
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
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
        for _ in 0..500 {
            let up = if tls {
                tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok()
            } else {
                self.client().get_multiplexed_async_connection().await.is_ok()
            };
            if up {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
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
    format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\nencryption_key_file = \"{}\"\ncommand_timeout = \"500ms\"\n",
        redis.url(),
        state_key_file().display()
    )
}
