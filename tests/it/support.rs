//! Test harness: a v2 stand-in plus oauth-shim configured against it, both on 127.0.0.1:0, and
//! the fixtures several test files share: the binary, scratch directories, free ports, bounded
//! waits, grants, replicas and a real `redis-server`.

#![allow(dead_code)]

use std::net::SocketAddr;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use oauth_shim::app::App;
use oauth_shim::config::{Config, ValidConfig};
use oauth_shim::devtools::standin::{Standin, StandinClient, StandinConfig};
use oauth_shim::server::{self, Running};
use oauth_shim::snapshot::Snapshot;
use tokio::net::TcpListener;

mod certs;
mod process;
mod raw;
mod redis_cluster;
mod redis_sentinel;
mod redis_server;

pub use certs::*;
pub use process::*;
pub use raw::*;
pub use redis_cluster::*;
pub use redis_sentinel::*;
pub use redis_server::*;

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

/// A stand-in with `config` on a free loopback port.
pub async fn start_standin(config: StandinConfig) -> Standin {
    Standin::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// [`standin_config`] with refresh tokens rotated on use and token answers `delay_ms` late.
pub fn rotating(delay_ms: u64) -> StandinConfig {
    StandinConfig {
        rotate_refresh_tokens: true,
        token_delay: std::time::Duration::from_millis(delay_ms),
        ..standin_config()
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
        let standin = start_standin(standin).await;
        let config = shim_config(&standin, extra_toml);
        Self::with_config(standin, config).await
    }

    pub async fn default() -> Self {
        Self::start(standin_config(), "").await
    }

    pub async fn with_config(standin: Standin, config: impl Validate) -> Self {
        let app = App::new(Snapshot::new(config.valid()).unwrap());
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

    /// oauth-shim on the config file at `path`, against `standin`; reloads read the file.
    pub async fn from_file(standin: Standin, path: &std::path::Path) -> Self {
        let h = Self::with_config(standin, Config::load(path).unwrap()).await;
        h.app.state().ops.reload.set_source(path.to_path_buf());
        h
    }

    /// A legacy password grant (GET) for [`ID`] and the stand-in's demo user.
    pub fn password_url(&self) -> String {
        self.url(&format!(
            "/oauth/access_token?grant_type=password&user_id=demo%40example.com&password=demo-password&client_id={ID}"
        ))
    }

    /// A legacy refresh (GET) of `rt` by [`ID`].
    pub fn refresh_url(&self, rt: &str) -> String {
        self.url(&format!("/oauth/access_token?grant_type=refresh_token&refresh_token={rt}&client_id={ID}"))
    }

    /// Whether this instance's Redis connection is up (false without a Redis backend).
    pub fn redis_up(&self) -> bool {
        self.app.state().redis.as_ref().is_some_and(|r| r.is_up())
    }

    /// Wait (bounded) until this instance has connected to Redis.
    pub async fn wait_for_redis(&self) {
        eventually("oauth-shim to connect to redis", async || self.redis_up()).await;
    }
}

/// `n` replicas of oauth-shim on `config`, each with its own app, listeners and Redis
/// connection, all against `standin`; returned once every replica with a Redis backend has
/// connected to it.
pub async fn replicas(standin: &Standin, config: &Config, n: usize) -> Vec<Harness> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Harness::with_config(standin.clone(), config.clone()).await);
    }
    let connected = |h: &Harness| h.app.state().redis.as_ref().is_none_or(|r| r.is_up());
    eventually("every replica to connect to redis", async || out.iter().all(connected)).await;
    out
}

/// `POST /sessions/revoke?client=` [`ID`] on `h`'s admin listener: how many sessions it revoked.
pub async fn revoke_all(h: &Harness) -> u64 {
    let resp = http().post(h.admin_url(&format!("/sessions/revoke?client={ID}"))).send().await.unwrap();
    resp.json::<serde_json::Value>().await.unwrap()["revoked"].as_u64().unwrap()
}

/// Seed 000's refresh of `rt` through `via`: JSON to the token path by [`ID`], with `secret` if
/// any. Its status and body.
pub async fn v2_json_refresh(via: &Harness, rt: &str, secret: Option<&str>) -> (u16, serde_json::Value) {
    let mut call = serde_json::json!({"grant_type": "refresh_token", "refresh_token": rt, "client_id": ID});
    if let Some(secret) = secret {
        call["client_secret"] = secret.into();
    }
    let resp = http()
        .post(via.url("/oauth/v2/token"))
        .header("content-type", "application/json")
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// A fresh grant of [`ID`]'s: a code the stand-in issues, exchanged through `via`'s legacy
/// route. Its refresh token.
pub async fn grant(via: &Harness) -> String {
    let code = via.standin.issue_code(ID, None);
    let body = get_json(
        via.url(&format!("/oauth/access_token?grant_type=authorization_code&code={code}&client_id={ID}")),
    )
    .await;
    body["refresh_token"].as_str().unwrap().to_owned()
}

/// A config a test hands to a harness: validated already, or validated there.
pub trait Validate {
    fn valid(self) -> ValidConfig;
}

impl Validate for ValidConfig {
    fn valid(self) -> ValidConfig {
        self
    }
}

impl Validate for Config {
    fn valid(self) -> ValidConfig {
        self.validated().expect("test config is valid")
    }
}

/// A config pointing at `standin`, validated once (validate it again after changing it). Its
/// base is the default provider's keys under `[upstream]`, the deprecated shape existing configs
/// use, which tests' `extra_toml` override; `extra_toml` is merged over the defaults (use it to
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
    let mut config = Config::from_figment(figment).expect("test config is valid").into_inner();
    if config.migration.dir == oauth_shim::config::MigrationConfig::default().dir {
        config.migration.dir = temp_dir("record");
    }
    config
}

/// A config file for `standin` with the default client in `mode`, plus `extra` TOML.
pub fn config_file(name: &str, standin: &Standin, mode: &str, extra: &str) -> std::path::PathBuf {
    let path = temp_dir(&format!("ops-{name}")).join("shim.toml");
    write_config(&path, standin, mode, extra);
    path
}

pub fn write_config(path: &std::path::Path, standin: &Standin, mode: &str, extra: &str) {
    let text = format!(
        r#"
[upstream]
token_url = "{token}"
authorize_url = "{authz}"
api_base = "{api}"
connect_timeout = "1s"
request_timeout = "5s"
{extra}
[[clients]]
id = "{ID}"
secret = "{SECRET}"
allow_password_grant = true
mode = "{mode}"
"#,
        token = standin.token_url(),
        authz = standin.authorize_url(),
        api = standin.api_base(),
    );
    // The migration record in a scratch directory, unless `extra` names one.
    let text = if extra.contains("[migration]") {
        text
    } else {
        format!("{text}\n[migration]\ndir = {:?}\n", temp_dir("record"))
    };
    // Write then rename, as config management tools do, so a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// GET `url` and parse the answer as JSON (whatever its status).
pub async fn get_json(url: impl reqwest::IntoUrl) -> serde_json::Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

/// GET `url` and return the answer's body as text (whatever its status).
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    http().get(url).send().await.unwrap().text().await.unwrap()
}

/// reqwest's TLS (used by the TLS listener tests) takes its crypto provider from the process:
/// ring, as oauth-shim uses. Every reqwest client is built after this.
pub fn reqwest_builder() -> reqwest::ClientBuilder {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// A reqwest client with its defaults (follows redirects).
pub fn client() -> reqwest::Client {
    reqwest_builder().build().unwrap()
}

/// GET `url` with [`client`].
pub async fn fetch_url(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    client().get(url).send().await
}

/// A reqwest client that never follows redirects and never uses a proxy.
pub fn http() -> reqwest::Client {
    reqwest_builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build().unwrap()
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
