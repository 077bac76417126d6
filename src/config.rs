//! Typed configuration: built-in defaults < TOML file < `OAUTH_SHIM_` environment, validated once
//! at load. Everything on the request path reads a validated [`Config`]; nothing re-parses it.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::oauth::{BasicAuthEncoding, Secret};

/// The whole configuration. Field names are the public interface (the TOML keys).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub legacy: LegacyConfig,
    pub refresh_cache: RefreshCacheConfig,
    pub state: StateConfig,
    pub log: LogConfig,
    pub reload: ReloadConfig,
    pub continuity: ContinuityConfig,
    /// Providers besides the default one (`[upstream]`), selected by the request's `Host`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderConfig>,
    pub clients: Vec<ClientConfig>,
    /// What loading noticed that is worth a warning but not fatal (environment variables under
    /// `OAUTH_SHIM_` that name no key, no clients configured). `check-config` prints them to
    /// stderr; `serve` and reloads log them once.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The name of the provider `[upstream]` describes; clients without `provider` belong to it.
pub const DEFAULT_PROVIDER: &str = "default";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the proxy listens on.
    pub listen: SocketAddr,
    /// A client must send its complete request head within this time; a new connection must
    /// start its first request within it (HTTP/1.1 and HTTP/2). Slower clients are disconnected.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this time (HTTP/1.1 and
    /// HTTP/2). An HTTP/1.1 connection's wait for its next request is also limited by
    /// `header_read_timeout`, so idle HTTP/1.1 connections close after the smaller of the two.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Concurrent client connections; further connections wait in the accept queue.
    pub max_connections: usize,
    /// Largest request head (request line and headers; HTTP/2: decoded header list) accepted;
    /// larger gets 431. At least 8192.
    pub max_header_bytes: usize,
    /// Longest request target accepted; longer gets 414.
    pub max_uri_bytes: usize,
    /// Largest body accepted on `/oauth/access_token` and on POSTs to a provider's token path;
    /// larger gets 413.
    pub max_body_bytes: usize,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Threads that run requests; `0` means one per CPU this process may use. With one,
    /// oauth-shim runs tokio's single-threaded scheduler, which spends less CPU per request than
    /// a one-worker multi-threaded one (benches/load).
    pub worker_threads: usize,
    /// The whole body of an `/oauth/access_token` call must arrive within this time, counted
    /// from when its head was read; a slower one gets 408 and the connection is closed.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: requests one client connection may have open
    /// at once.
    pub http2_max_concurrent_streams: u32,
    /// What happens to a client-sent `X-Forwarded-For` on pass-through.
    pub x_forwarded_for: ForwardedFor,
}

/// Whether the `X-Forwarded-For` (and `X-Forwarded-Proto`) a client sends is believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ForwardedFor {
    /// Trust the hop in front: keep the client's `X-Forwarded-For` and append its address; keep
    /// a client's single `X-Forwarded-Proto` of `http` or `https`.
    #[default]
    Append,
    /// Trust no one: the client's `X-Forwarded-For` is replaced by its address alone, and
    /// `X-Forwarded-Proto` is always `http`.
    Replace,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(25),
            worker_threads: 0,
            body_read_timeout: Duration::from_secs(5),
            http2_max_concurrent_streams: 100,
            x_forwarded_for: ForwardedFor::Append,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Health/readiness listener, separate from the proxy port. Set `enabled = false` to turn off.
    pub listen: SocketAddr,
    pub enabled: bool,
    /// Concurrent admin connections; further ones wait in the accept queue, so a flood of them
    /// cannot starve the process (probes and scrapes need only a few).
    pub max_connections: usize,
    /// Name of an environment variable holding a bearer token that `/reload` and `/migration`
    /// then require (`Authorization: Bearer <token>`). `/healthz`, `/readyz` and `/metrics`
    /// stay open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// The same token read from a file (surrounding whitespace trimmed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The resolved token, when `token_env` or `token_file` is set.
    #[serde(skip)]
    pub token: Option<Secret>,
}

impl ServerConfig {
    /// `worker_threads` with `0` resolved to the CPUs available to this process (its affinity
    /// mask and cgroup quota).
    pub fn resolved_worker_threads(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            enabled: true,
            max_connections: 64,
            token_env: None,
            token_file: None,
            token: None,
        }
    }
}

impl AdminConfig {
    /// Read the admin token from `token_env` or `token_file`, if one is named. Used at load and
    /// by the admin client commands (`reload`, `report`, `healthcheck`).
    pub fn resolve_token(&mut self) -> Result<(), ConfigError> {
        let value = match (&self.token_env, &self.token_file) {
            (None, None) => return Ok(()),
            (Some(_), Some(_)) => {
                return Err(ConfigError("admin: set only one of token_env, token_file".into()));
            }
            (Some(var), None) => std::env::var(var).map_err(|_| {
                ConfigError(format!("admin.token_env: environment variable {var} is not set"))
            })?,
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| {
                    ConfigError(format!("admin.token_file: cannot read {}: {}", file.display(), e.kind()))
                })?
                .trim()
                .to_owned(),
        };
        if value.is_empty() {
            return Err(ConfigError("admin: the token is empty".into()));
        }
        self.token = Some(Secret::new(value));
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    pub token_url: String,
    pub authorize_url: String,
    pub api_base: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline for a whole upstream token call, and for response headers on pass-through.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest token response read from the upstream; larger is treated as garbage (502).
    pub max_response_bytes: usize,
    /// Largest answer head (status line and headers) read from the upstream, token calls and
    /// pass-through alike; a larger one is a 502.
    pub max_response_header_bytes: usize,
    /// A pass-through body, either way, that makes no progress for this long is cut off.
    #[serde(with = "humantime_serde")]
    pub body_stall_timeout: Duration,
    /// Idle pooled upstream connections are closed after this time.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// PEM file of extra CA certificates trusted for upstream TLS (a private CA or an internal
    /// gateway), in addition to the public web roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How client credentials are encoded inside the upstream Basic header.
    pub basic_auth_encoding: BasicAuthEncoding,
    /// How client credentials go upstream: the Basic header, or the form body.
    pub client_auth: ClientAuth,
    /// Optional lookup filling legacy fields the token answer lacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_fields: Option<LegacyFieldsConfig>,
}

/// How the upstream wants client credentials (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `Authorization: Basic`, encoded as `basic_auth_encoding` says.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// Built-in endpoint sets for `[[providers]] preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// GoTo's v2 endpoints on api.getgo.com (the default provider's defaults).
    Goto,
    /// GoTo's identity host, authentication.logmeininc.com; the API stays on api.getgo.com.
    GotoIdentity,
}

impl Preset {
    /// (token_url, authorize_url, api_base).
    pub fn urls(self) -> [&'static str; 3] {
        match self {
            Self::Goto => [
                "https://api.getgo.com/oauth/v2/token",
                "https://api.getgo.com/oauth/v2/authorize",
                "https://api.getgo.com",
            ],
            Self::GotoIdentity => [
                "https://authentication.logmeininc.com/oauth/token",
                "https://authentication.logmeininc.com/oauth/authorize",
                "https://api.getgo.com",
            ],
        }
    }
}

/// An OAuth provider besides the default one. Connection settings (timeouts, pool sizes, CA
/// file) come from `[upstream]`; each provider still gets a pool of its own.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    /// Fills `token_url`, `authorize_url` and `api_base` where they are not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// `Host` values (port ignored, case-insensitive) whose requests this provider serves.
    pub hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    pub client_auth: ClientAuth,
    pub basic_auth_encoding: BasicAuthEncoding,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_fields: Option<LegacyFieldsConfig>,
}

impl ProviderConfig {
    /// The endpoints, filled by the preset at load (empty only before validation).
    pub fn urls(&self) -> [&str; 3] {
        [&self.token_url, &self.authorize_url, &self.api_base].map(|u| u.as_deref().unwrap_or_default())
    }
}

/// A `GET` of `url` with the new access token as `Bearer`, and an RFC 6901 JSON pointer into its
/// answer per legacy field. Fields without a pointer are never looked up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LegacyFieldsConfig {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organizer_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_type: Option<String>,
    #[serde(rename = "firstName", skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(rename = "lastName", skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Lookup answers kept (one per access token, for the token's life).
    pub cache_max_entries: u64,
}

impl Default for LegacyFieldsConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            organizer_key: None,
            account_key: None,
            account_type: None,
            first_name: None,
            last_name: None,
            email: None,
            cache_max_entries: 10_000,
        }
    }
}

impl LegacyFieldsConfig {
    /// The pointers in legacy field order: organizer_key, account_key, account_type,
    /// firstName, lastName, email.
    pub fn pointers(&self) -> [Option<&str>; 6] {
        [
            &self.organizer_key,
            &self.account_key,
            &self.account_type,
            &self.first_name,
            &self.last_name,
            &self.email,
        ]
        .map(|p| p.as_deref())
    }
}

impl UpstreamConfig {
    /// The certificates of `ca_file`, if set. Read at start-up (validation and client build).
    pub fn extra_roots(&self) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let Some(path) = &self.ca_file else { return Ok(Vec::new()) };
        let bad = |why: String| ConfigError(format!("upstream.ca_file {}: {why}", path.display()));
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("contains no PEM certificate".into()));
        }
        Ok(certs)
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            token_url: "https://api.getgo.com/oauth/v2/token".into(),
            authorize_url: "https://api.getgo.com/oauth/v2/authorize".into(),
            api_base: "https://api.getgo.com".into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_response_bytes: 256 * 1024,
            max_response_header_bytes: 64 * 1024,
            body_stall_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
            ca_file: None,
            basic_auth_encoding: BasicAuthEncoding::FormUrlencoded,
            client_auth: ClientAuth::ClientSecretBasic,
            legacy_fields: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LegacyConfig {
    pub platform: String,
    pub version: String,
    /// Keep `token_type`, `scope`, `principal` and other v2-only fields in legacy answers.
    pub keep_extra_fields: bool,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        Self { platform: "GLOBAL".into(), version: "2".into(), keep_extra_fields: false }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefreshCacheConfig {
    /// How long a successful refresh answer is reused; never longer than the token lives.
    /// `"0s"` turns caching off (concurrent refreshes are still coalesced).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    pub max_entries: u64,
}

impl Default for RefreshCacheConfig {
    fn default() -> Self {
        Self { ttl: Duration::from_secs(30), max_entries: 100_000 }
    }
}

/// Where the refresh cache and single flight live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// In this process (one replica, or replicas that never share a refresh token).
    #[default]
    Memory,
    /// In Redis, shared by every replica configured with the same Redis and key set.
    Redis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    pub backend: StateBackend,
    /// `redis://host:port[/db]` or `rediss://…` (TLS). A user name may be in the URL; the
    /// password may not (use `password_env` or `password_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Name of an environment variable that holds the Redis password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Path of a file that holds the Redis password (surrounding whitespace is trimmed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Prepended to every Redis key and channel, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Limit for opening a connection to Redis.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Limit for one Redis command; slower counts as Redis failing (fall back to local state).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// PEM file of the CA certificates that Redis's TLS certificate must chain to (`rediss://`);
    /// unset: the public web roots, as for the upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Name of an environment variable holding the encryption keys: one or more keys of 32
    /// random bytes, each as 64 hex digits or base64, separated by commas or whitespace; the
    /// first encrypts, all decrypt. Required with the Redis backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_key_env: Option<String>,
    /// Path of a file holding the encryption keys, in the same format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_key_file: Option<PathBuf>,
    /// The resolved password, after load.
    #[serde(skip)]
    pub password: Option<Secret>,
    /// The resolved key material, after load (parsed by [`StateConfig::key_set`]).
    #[serde(skip)]
    pub encryption_keys: Option<Secret>,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            backend: StateBackend::Memory,
            url: None,
            password_env: None,
            password_file: None,
            key_prefix: "oauth-shim:".into(),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_millis(250),
            ca_file: None,
            encryption_key_env: None,
            encryption_key_file: None,
            password: None,
            encryption_keys: None,
        }
    }
}

impl StateConfig {
    /// The key set, if key material is configured. Validated at load, so a loaded config's
    /// material always parses.
    pub fn key_set(&self) -> Result<Option<crate::crypto::KeySet>, ConfigError> {
        let Some(material) = &self.encryption_keys else { return Ok(None) };
        crate::crypto::KeySet::parse(material.expose())
            .map(Some)
            .map_err(|e| ConfigError(format!("state encryption key: {e}")))
    }

    /// The CA certificates of `ca_file`, as PEM text, if set.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let Some(path) = &self.ca_file else { return Ok(None) };
        let bad = |why: String| ConfigError(format!("state.ca_file {}: {why}", path.display()));
        let pem = std::fs::read(path).map_err(|e| bad(e.kind().to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("contains no PEM certificate".into()));
        }
        Ok(Some(pem))
    }

    fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        self.password = read_secret_source(
            "state.password",
            self.password_env.as_deref(),
            self.password_file.as_deref(),
        )?;
        self.encryption_keys = read_secret_source(
            "state.encryption_key",
            self.encryption_key_env.as_deref(),
            self.encryption_key_file.as_deref(),
        )?;
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.key_set()?;
        if self.backend == StateBackend::Memory {
            return Ok(());
        }
        let Some(url) = &self.url else {
            return Err(ConfigError("state.url is required with state.backend = \"redis\"".into()));
        };
        // The URL is not echoed: it may carry a user name.
        let parsed = Url::parse(url).map_err(|e| ConfigError(format!("state.url is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(ConfigError("state.url must start with redis:// or rediss://".into()));
        }
        if parsed.host().is_none() {
            return Err(ConfigError("state.url names no host".into()));
        }
        if parsed.password().is_some() {
            return Err(ConfigError(
                "state.url must not contain a password; use state.password_env or state.password_file".into(),
            ));
        }
        redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .map_err(|e| ConfigError(format!("state.url is not a usable Redis URL: {}", e.category())))?;
        if self.encryption_keys.is_none() {
            return Err(ConfigError(
                "state.backend = \"redis\" needs state.encryption_key_env or state.encryption_key_file"
                    .into(),
            ));
        }
        if self.ca_file.is_some() && parsed.scheme() != "rediss" {
            return Err(ConfigError("state.ca_file needs a rediss:// url".into()));
        }
        self.ca_pem()?;
        for (key, value) in
            [("state.connect_timeout", self.connect_timeout), ("state.command_timeout", self.command_timeout)]
        {
            if value.is_zero() {
                return Err(ConfigError(format!("{key} must be greater than 0s")));
            }
        }
        Ok(())
    }
}

/// Read a secret from the environment variable or file named for it (at most one of them).
fn read_secret_source(
    what: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    let value = match (env, file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => return Err(ConfigError(format!("{what}: set only one of _env and _file"))),
        (Some(var), None) => std::env::var(var)
            .map_err(|_| ConfigError(format!("{what}: environment variable {var} is not set")))?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{what}: cannot read {}: {}", path.display(), e.kind())))?,
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(ConfigError(format!("{what} is empty")));
    }
    Ok(Some(Secret::new(value)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace` or a full filter; `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// Reload when the config file's content changes (polled, so Kubernetes ConfigMap symlink
    /// swaps are seen). SIGHUP, `POST /reload` and `oauth-shim reload` work either way.
    pub watch: bool,
    /// How often the file is checked.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { watch: true, watch_interval: Duration::from_secs(2) }
    }
}

/// What oauth-shim does with a configured client's legacy calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientMode {
    /// Rewrite legacy calls to v2 and map the answers back.
    #[default]
    Rewrite,
    /// Forward the call unchanged to `upstream.api_base`.
    Passthrough,
    /// Refuse, telling the caller it must migrate to OAuth v2.
    Deny,
}

impl ClientMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rewrite => "rewrite",
            Self::Passthrough => "passthrough",
            Self::Deny => "deny",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    pub id: String,
    /// The provider this client belongs to (a `[[providers]]` name); default: `[upstream]`'s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The secret inline. Prefer `secret_env` or `secret_file`. After load this holds the
    /// resolved secret whichever source it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Name of an environment variable that holds the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Path of a file that holds the secret (surrounding whitespace is trimmed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    pub mode: ClientMode,
    pub allow_password_grant: bool,
    /// Used at authorize and code exchange when the caller sends none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// When non-empty, a caller's `redirect_uri` at authorize must be one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redirect_uri_allow: Vec<String>,
    /// Token continuity: legacy token calls answer with oauth-shim-minted long-lived tokens,
    /// and API calls with them go upstream with the session's current v2 token.
    pub continuity: bool,
    /// How long a minted token lives (the legacy `expires_in`); a legacy refresh renews it.
    #[serde(with = "humantime_serde")]
    pub continuity_lifetime: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            provider: None,
            secret: None,
            secret_env: None,
            secret_file: None,
            mode: ClientMode::default(),
            allow_password_grant: false,
            redirect_uri: None,
            redirect_uri_allow: Vec::new(),
            continuity: false,
            continuity_lifetime: DEFAULT_CONTINUITY_LIFETIME,
        }
    }
}

/// What legacy access tokens lived: 365 days.
pub const DEFAULT_CONTINUITY_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContinuityConfig {
    /// Directory of the embedded session store (`sessions.redb`), used unless `[state]` is Redis.
    pub dir: PathBuf,
    /// How often expired sessions are deleted.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// A session's v2 access token is refreshed once it has less than this left (in the
    /// background while it is still valid; capped at half the token's lifetime).
    #[serde(with = "humantime_serde")]
    pub refresh_margin: Duration,
    /// Most sessions the store holds; a token call that would create one more is refused
    /// (`temporarily_unavailable`).
    pub max_sessions: u64,
}

impl Default for ContinuityConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/oauth-shim"),
            sweep_interval: Duration::from_secs(600),
            refresh_margin: Duration::from_secs(300),
            max_sessions: 1_000_000,
        }
    }
}

impl ClientConfig {
    /// The name of the provider this client belongs to.
    pub fn provider_name(&self) -> &str {
        self.provider.as_deref().unwrap_or(DEFAULT_PROVIDER)
    }

    /// The resolved secret. Present on every client of a validated config.
    pub fn secret(&self) -> &Secret {
        static EMPTY: std::sync::OnceLock<Secret> = std::sync::OnceLock::new();
        self.secret.as_ref().unwrap_or_else(|| EMPTY.get_or_init(Secret::default))
    }
}

/// A configuration problem, reported as one line that never contains a secret.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where to read the config file from: an explicit path, else `OAUTH_SHIM_CONFIG`, else the
/// default path.
pub fn config_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("OAUTH_SHIM_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("config/oauth-shim.toml"))
}

impl Config {
    /// Defaults < file < environment, then secrets resolved and everything validated.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.exists() {
            return Err(ConfigError(format!("config file {} does not exist", path.display())));
        }
        let (env, ignored) = env_overrides();
        let mut config = Self::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::file(path)).merge(env),
        )?;
        if !ignored.is_empty() {
            config.warnings.insert(
                0,
                format!(
                    "ignored environment variables that name no config key: {} (Kubernetes service links set such variables; enableServiceLinks: false turns them off)",
                    ignored.join(", ")
                ),
            );
        }
        Ok(config)
    }

    /// The file and environment merged over the defaults, neither validated nor with secrets
    /// resolved: what the file names (its `secret_file`s, say), for the reload watcher.
    pub fn read_unvalidated(path: &Path) -> Option<Self> {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(path))
            .merge(env_overrides().0)
            .extract()
            .ok()
    }

    /// Extract from an arbitrary figment (tests and `dev` build their own), then validate.
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            // figment's messages name keys and the offending value's kind, not secret values,
            // except for type errors on the value itself; keep only the first line and never
            // the value for the `secret` key.
            let mut msg = e.to_string();
            if msg.contains("secret") {
                msg = format!("invalid value for {}", e.path.join("."));
            }
            ConfigError(format!("invalid configuration: {msg}"))
        })?;
        config.validated()
    }

    /// Validate a config built in code (as `dev` does), resolving secret sources like a loaded one.
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        self.resolve_presets();
        self.resolve_secrets()?;
        self.admin.resolve_token()?;
        self.validate()?;
        if self.clients.is_empty() {
            self.warnings.push(
                "no [[clients]] configured: every legacy token call will be refused as invalid_client".into(),
            );
        }
        Ok(self)
    }

    /// Fill each provider's unset endpoints from its preset, and normalise its hosts.
    fn resolve_presets(&mut self) {
        for p in &mut self.providers {
            if let Some(preset) = p.preset {
                let [token, authorize, api] = preset.urls();
                p.token_url.get_or_insert_with(|| token.into());
                p.authorize_url.get_or_insert_with(|| authorize.into());
                p.api_base.get_or_insert_with(|| api.into());
            }
            for host in &mut p.hosts {
                *host = normalise_host(host);
            }
        }
    }

    /// The config as `check-config` prints it: loadable again as it is. A secret read from
    /// `secret_env` or `secret_file` is left out (the source is printed); an inline one prints
    /// as `[redacted]`, a placeholder that loads but must be replaced.
    pub fn printable(&self) -> Config {
        let mut out = self.clone();
        for c in &mut out.clients {
            if c.secret_env.is_some() || c.secret_file.is_some() {
                c.secret = None;
            }
        }
        out
    }

    fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        self.state.resolve_secrets()?;
        for client in &mut self.clients {
            let id = &client.id;
            let sources =
                [client.secret.is_some(), client.secret_env.is_some(), client.secret_file.is_some()];
            match sources.iter().filter(|s| **s).count() {
                0 => {
                    return Err(ConfigError(format!(
                        "client {id:?}: no secret configured (set one of secret_env, secret_file, secret)"
                    )));
                }
                1 => {}
                _ => {
                    return Err(ConfigError(format!(
                        "client {id:?}: set only one of secret, secret_env, secret_file"
                    )));
                }
            }
            if let Some(var) = &client.secret_env {
                let value = std::env::var(var).map_err(|_| {
                    ConfigError(format!("client {id:?}: environment variable {var} is not set"))
                })?;
                client.secret = Some(Secret::new(value));
            }
            if let Some(file) = &client.secret_file {
                let value = std::fs::read_to_string(file).map_err(|e| {
                    ConfigError(format!(
                        "client {id:?}: cannot read secret_file {}: {}",
                        file.display(),
                        e.kind()
                    ))
                })?;
                client.secret = Some(Secret::new(value.trim()));
            }
            if client.secret.as_ref().is_none_or(Secret::is_empty) {
                return Err(ConfigError(format!("client {id:?}: secret is empty")));
            }
        }
        Ok(())
    }

    /// A continuity client needs the `[state]` key set: the session store is always sealed, and
    /// a key is never generated (one written beside the data it protects protects nothing).
    fn check_continuity_keys(&self) -> Result<(), ConfigError> {
        if self.state.encryption_keys.is_some() {
            return Ok(());
        }
        match self.clients.iter().find(|c| c.continuity) {
            Some(c) => Err(ConfigError(format!(
                "client {:?}: continuity needs [state] encryption_key_env or encryption_key_file \
                 (the session store is always encrypted)",
                c.id
            ))),
            None => Ok(()),
        }
    }

    /// Whether any client uses token continuity.
    pub fn continuity_enabled(&self) -> bool {
        self.clients.iter().any(|c| c.continuity)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_log_level(&self.log.level)?;
        check_url("upstream.token_url", &self.upstream.token_url)?;
        check_url("upstream.authorize_url", &self.upstream.authorize_url)?;
        check_url("upstream.api_base", &self.upstream.api_base)?;
        self.upstream.extra_roots()?;
        self.state.validate()?;
        self.check_continuity_keys()?;
        let s = &self.server;
        for (key, value) in [
            ("server.max_connections", s.max_connections),
            ("admin.max_connections", self.admin.max_connections),
            ("server.max_uri_bytes", s.max_uri_bytes),
            ("server.http2_max_concurrent_streams", s.http2_max_concurrent_streams as usize),
            ("upstream.max_response_bytes", self.upstream.max_response_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{key} must be greater than 0")));
            }
        }
        if s.max_header_bytes < 8192 {
            return Err(ConfigError("server.max_header_bytes must be at least 8192".into()));
        }
        if self.upstream.max_response_header_bytes < 1024 {
            return Err(ConfigError("upstream.max_response_header_bytes must be at least 1024".into()));
        }
        for (key, value) in [
            ("server.header_read_timeout", s.header_read_timeout),
            ("server.idle_timeout", s.idle_timeout),
            ("server.body_read_timeout", s.body_read_timeout),
            ("upstream.connect_timeout", self.upstream.connect_timeout),
            ("upstream.request_timeout", self.upstream.request_timeout),
            ("upstream.body_stall_timeout", self.upstream.body_stall_timeout),
            ("reload.watch_interval", self.reload.watch_interval),
            ("continuity.sweep_interval", self.continuity.sweep_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError(format!("{key} must be greater than 0s")));
            }
        }
        if self.admin.enabled && self.admin.listen == s.listen && s.listen.port() != 0 {
            return Err(ConfigError("admin.listen must differ from server.listen".into()));
        }
        self.validate_providers()?;
        let mut seen = HashSet::new();
        for client in &self.clients {
            if client.id.is_empty() {
                return Err(ConfigError("a client has an empty id".into()));
            }
            let provider = client.provider_name();
            let encoding = if provider == DEFAULT_PROVIDER {
                self.upstream.basic_auth_encoding
            } else {
                match self.providers.iter().find(|p| p.name == provider) {
                    Some(p) => p.basic_auth_encoding,
                    None => {
                        return Err(ConfigError(format!(
                            "client {:?}: provider {provider:?} is not configured",
                            client.id
                        )));
                    }
                }
            };
            if encoding == BasicAuthEncoding::Raw && client.id.contains(':') {
                return Err(ConfigError(format!(
                    "client {:?}: an id containing ':' needs basic_auth_encoding = \"form-urlencoded\"",
                    client.id
                )));
            }
            if !seen.insert((provider, client.id.as_str())) {
                return Err(ConfigError(if provider == DEFAULT_PROVIDER {
                    format!("client {:?} is configured twice", client.id)
                } else {
                    format!("client {:?} is configured twice for provider {provider:?}", client.id)
                }));
            }
            if client.continuity && client.provider_name() != DEFAULT_PROVIDER {
                return Err(ConfigError(format!(
                    "client {:?}: continuity is available to clients of the default provider ([upstream]) only",
                    client.id
                )));
            }
            if client.continuity && client.mode == ClientMode::Passthrough {
                return Err(ConfigError(format!(
                    "client {:?}: continuity needs mode = \"rewrite\" (a passthrough client's tokens are the upstream's)",
                    client.id
                )));
            }
            if client.continuity && client.continuity_lifetime < Duration::from_secs(1) {
                return Err(ConfigError(format!(
                    "client {:?}: continuity_lifetime must be at least 1s",
                    client.id
                )));
            }
            if let Some(uri) = &client.redirect_uri {
                parse_redirect(&client.id, "redirect_uri", uri)?;
            }
            for uri in &client.redirect_uri_allow {
                parse_redirect(&client.id, "redirect_uri_allow", uri)?;
            }
        }
        Ok(())
    }

    /// Names unique (and not the default's), hosts unique across providers, URLs usable, the
    /// token path not one oauth-shim answers itself, lookups well formed.
    fn validate_providers(&self) -> Result<(), ConfigError> {
        check_token_path("upstream.token_url", &self.upstream.token_url)?;
        if let Some(lookup) = &self.upstream.legacy_fields {
            check_lookup("upstream.legacy_fields", lookup)?;
        }
        let mut names = HashSet::new();
        let mut hosts = HashSet::new();
        for p in &self.providers {
            let name = &p.name;
            let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if name.is_empty() || !name.chars().all(ok_char) {
                return Err(ConfigError(format!(
                    "provider {name:?}: a name is required, made of letters, digits, '-', '_' and '.'"
                )));
            }
            if name == DEFAULT_PROVIDER {
                return Err(ConfigError(format!(
                    "provider {name:?}: the name is reserved for the [upstream] provider"
                )));
            }
            if !names.insert(name.as_str()) {
                return Err(ConfigError(format!("provider {name:?} is configured twice")));
            }
            if p.hosts.is_empty() {
                return Err(ConfigError(format!(
                    "provider {name:?}: hosts is empty, so no request can select it"
                )));
            }
            for host in &p.hosts {
                if host.is_empty() || host.contains(|c: char| c == '/' || c == ':' || c.is_whitespace()) {
                    return Err(ConfigError(format!(
                        "provider {name:?}: host {host:?} must be a host name without scheme or port"
                    )));
                }
                if !hosts.insert(host.as_str()) {
                    return Err(ConfigError(format!("host {host:?} is listed by more than one provider")));
                }
            }
            for (key, url) in ["token_url", "authorize_url", "api_base"].into_iter().zip(p.urls()) {
                if url.is_empty() {
                    return Err(ConfigError(format!(
                        "provider {name:?}: {key} is required (or set a preset)"
                    )));
                }
                check_url(&format!("providers.{name}.{key}"), url)?;
            }
            check_token_path(&format!("providers.{name}.token_url"), p.urls()[0])?;
            if let Some(lookup) = &p.legacy_fields {
                check_lookup(&format!("providers.{name}.legacy_fields"), lookup)?;
            }
        }
        Ok(())
    }

    /// The configured client of the default provider with exactly this id (byte for byte).
    pub fn client(&self, id: &str) -> Option<&ClientConfig> {
        self.client_in(DEFAULT_PROVIDER, id)
    }

    /// The configured client of `provider` with exactly this id (byte for byte).
    pub fn client_in(&self, provider: &str, id: &str) -> Option<&ClientConfig> {
        self.clients.iter().find(|c| c.id == id && c.provider_name() == provider)
    }

    /// Every provider's name, the default's first.
    pub fn provider_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(DEFAULT_PROVIDER).chain(self.providers.iter().map(|p| p.name.as_str()))
    }
}

/// A `Host` as providers match it: lowercase, without a trailing dot.
pub fn normalise_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Token calls on these paths are oauth-shim's own legacy routes, so a provider's token URL
/// must not use them.
fn check_token_path(key: &str, url: &str) -> Result<(), ConfigError> {
    let path = Url::parse(url).map(|u| u.path().to_owned()).unwrap_or_default();
    if path == "/oauth/access_token" || path == "/oauth/authorize" {
        return Err(ConfigError(format!("{key} {url:?}: the path {path} is oauth-shim's own legacy route")));
    }
    Ok(())
}

fn check_lookup(key: &str, lookup: &LegacyFieldsConfig) -> Result<(), ConfigError> {
    check_url(&format!("{key}.url"), &lookup.url)?;
    let pointers = lookup.pointers();
    if pointers.iter().all(Option::is_none) {
        return Err(ConfigError(format!("{key}: name at least one field and its JSON pointer")));
    }
    for pointer in pointers.into_iter().flatten() {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(ConfigError(format!(
                "{key}: {pointer:?} is not an RFC 6901 JSON pointer (it starts with '/')"
            )));
        }
    }
    if lookup.cache_max_entries == 0 {
        return Err(ConfigError(format!("{key}.cache_max_entries must be greater than 0")));
    }
    Ok(())
}

/// The environment provider (`OAUTH_SHIM_<SECTION>__<KEY>`, values parsed as figment reads
/// them: `[a, b]` is a list, `{k = v}` a table), without the variables that name no config key,
/// and those variables' names. A variable counts as naming a key when the defaults with it
/// alone merged on top extract without an unknown-field error; so every key the config types
/// know is accepted, whatever table it sits in.
pub fn env_overrides() -> (Env, Vec<String>) {
    let env = || Env::prefixed("OAUTH_SHIM_").ignore(&["config"]).split("__");
    let mut unknown: Vec<String> = Vec::new();
    for (key, value) in env().iter() {
        let probe = Figment::from(Serialized::defaults(Config::default()))
            .merge(Serialized::default(key.as_str(), value.parse::<figment::value::Value>().ok()));
        if let Err(e) = probe.extract::<Config>()
            && e.into_iter().any(|e| matches!(e.kind, figment::error::Kind::UnknownField(..)))
        {
            unknown.push(key.as_str().to_owned());
        }
    }
    unknown.sort();
    unknown.dedup();
    let names =
        unknown.iter().map(|k| format!("OAUTH_SHIM_{}", k.replace('.', "__").to_ascii_uppercase())).collect();
    let keep = unknown.clone();
    (env().filter(move |k| !keep.iter().any(|u| u.as_str() == k)), names)
}

/// `log.level` must be a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or
/// comma-separated `target=level` directives. A bare word such as `verbose` would otherwise be
/// read as a target name and switch every other log line off.
fn check_log_level(level: &str) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bad = |why: &str| {
        ConfigError(format!(
            "log.level {level:?} {why}: use one of error, warn, info, debug, trace, off, or target=level directives"
        ))
    };
    let mut any = false;
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        any = true;
        let lvl = directive.rsplit_once('=').map_or(directive, |(_, l)| l).trim();
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(lvl)) {
            return Err(bad(&format!("names no level ({directive:?})")));
        }
    }
    if !any {
        return Err(bad("is empty"));
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| bad(&format!("is not a filter ({e})")))
}

fn parse_redirect(id: &str, key: &str, uri: &str) -> Result<(), ConfigError> {
    Url::parse(uri)
        .map(|_| ())
        .map_err(|e| ConfigError(format!("client {id:?}: {key} {uri:?} is not a URL: {e}")))
}

/// Upstream URLs must be http(s); plain http only to a loopback address.
fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError(format!("{key} {value:?} is not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => {
            Err(ConfigError(format!("{key} {value:?} uses plain http to a non-loopback host; use https")))
        }
        other => Err(ConfigError(format!("{key} {value:?} has unsupported scheme {other:?}"))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in_jail(jail: &Jail) -> Result<Config, ConfigError> {
        Config::load(&jail.directory().join("shim.toml"))
    }

    #[test]
    fn file_then_env_override() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "shim.toml",
                r#"
                [upstream]
                token_url = "http://127.0.0.1:9/oauth/v2/token"
                connect_timeout = "500ms"
                [[clients]]
                id = "k1"
                secret_env = "K1_SECRET"
                "#,
            )?;
            jail.set_env("K1_SECRET", "s3cret");
            jail.set_env("OAUTH_SHIM_UPSTREAM__REQUEST_TIMEOUT", "3s");
            jail.set_env("OAUTH_SHIM_CONFIG", "ignored-here");
            let c = load_in_jail(jail).expect("valid");
            assert_eq!(c.upstream.token_url, "http://127.0.0.1:9/oauth/v2/token");
            assert_eq!(c.upstream.connect_timeout, Duration::from_millis(500));
            assert_eq!(c.upstream.request_timeout, Duration::from_secs(3));
            assert_eq!(c.clients[0].secret().expose(), "s3cret");
            assert_eq!(c.clients[0].mode, ClientMode::Rewrite);
            Ok(())
        });
    }

    fn expect_error(toml: &str, needle: &str) {
        Jail::expect_with(|jail| {
            jail.create_file("shim.toml", toml)?;
            jail.set_env("EMPTY_SECRET", "");
            let err = load_in_jail(jail).expect_err("must be invalid").to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
            assert!(!err.contains("hunter2"), "secret leaked: {err}");
            Ok(())
        });
    }

    #[test]
    fn invalid_configs_fail_closed_naming_the_client() {
        expect_error("[[clients]]\nid = \"a\"\n", "client \"a\": no secret");
        expect_error("[[clients]]\nid = \"a\"\nsecret = \"\"\n", "client \"a\": secret is empty");
        expect_error("[[clients]]\nid = \"a\"\nsecret_env = \"EMPTY_SECRET\"\n", "secret is empty");
        expect_error("[[clients]]\nid = \"a\"\nsecret_env = \"NOPE_NOT_SET\"\n", "NOPE_NOT_SET is not set");
        expect_error(
            "[[clients]]\nid = \"a\"\nsecret = \"hunter2\"\n[[clients]]\nid = \"a\"\nsecret = \"hunter2\"\n",
            "client \"a\" is configured twice",
        );
        expect_error("[upstream]\ntoken_url = \"not a url\"\n", "upstream.token_url");
        expect_error("[upstream]\napi_base = \"http://example.com\"\n", "plain http");
        expect_error("[[clients]]\nid = \"a\"\nsecret = 5\n", "invalid");
        expect_error("[[clients]]\nid = \"a\"\nsecret = \"hunter2\"\nmode = \"bogus\"\n", "invalid");
        expect_error("[server]\nlisten_typo = 1\n", "listen_typo");
    }

    #[test]
    fn state_backend_redis_is_validated() {
        const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        Jail::expect_with(|jail| {
            jail.create_file("state.key", &format!("{KEY}\n"))?;
            jail.set_env("REDIS_PW", "hunter2");
            let base = "[state]\nbackend = \"redis\"\nencryption_key_file = \"state.key\"\n";
            let cases = [
                ("", "state.url is required"),
                ("url = \"http://127.0.0.1\"\n", "redis:// or rediss://"),
                ("url = \"redis://:hunter2@127.0.0.1\"\n", "must not contain a password"),
                ("url = \"redis://127.0.0.1\"\ncommand_timeout = \"0s\"\n", "state.command_timeout"),
                ("url = \"redis://127.0.0.1\"\nca_file = \"state.key\"\n", "needs a rediss:// url"),
                ("url = \"rediss://127.0.0.1\"\nca_file = \"state.key\"\n", "no PEM certificate"),
                ("url = \"redis://127.0.0.1\"\npassword_env = \"NOPE\"\n", "NOPE is not set"),
            ];
            for (extra, needle) in cases {
                jail.create_file("shim.toml", &format!("{base}{extra}"))?;
                let err = load_in_jail(jail).expect_err(needle).to_string();
                assert!(err.contains(needle), "{err:?} should contain {needle:?}");
                assert!(!err.contains("hunter2"), "{err}");
            }
            jail.create_file("shim.toml", "[state]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1\"\n")?;
            let err = load_in_jail(jail).expect_err("no key").to_string();
            assert!(err.contains("encryption_key_env or state.encryption_key_file"), "{err}");
            jail.create_file("bad.key", "hunter2-not-a-key")?;
            jail.create_file("shim.toml", "[state]\nencryption_key_file = \"bad.key\"\n")?;
            let err = load_in_jail(jail).expect_err("bad key").to_string();
            assert!(err.contains("key 1 is not 32 bytes"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");

            jail.create_file(
                "shim.toml",
                &format!("{base}url = \"redis://127.0.0.1:6390/2\"\npassword_env = \"REDIS_PW\"\n"),
            )?;
            jail.set_env("OAUTH_SHIM_STATE__KEY_PREFIX", "team-a:");
            let c = load_in_jail(jail).expect("valid");
            assert_eq!(c.state.backend, StateBackend::Redis);
            assert_eq!(c.state.password.as_ref().unwrap().expose(), "hunter2");
            assert_eq!(c.state.key_prefix, "team-a:");
            assert_eq!(c.state.key_set().unwrap().unwrap().len(), 1);
            assert!(!format!("{c:?}").contains("hunter2"));
            assert!(!format!("{c:?}").contains(KEY));
            Ok(())
        });
    }

    #[test]
    fn secret_file_is_trimmed() {
        Jail::expect_with(|jail| {
            jail.create_file("secret.txt", "from-file\n")?;
            jail.create_file("shim.toml", "[[clients]]\nid = \"f\"\nsecret_file = \"secret.txt\"\n")?;
            let c = load_in_jail(jail).expect("valid");
            assert_eq!(c.clients[0].secret().expose(), "from-file");
            Ok(())
        });
    }

    #[test]
    fn env_vars_naming_no_key_are_ignored_with_one_warning() {
        Jail::expect_with(|jail| {
            jail.create_file("shim.toml", "[[clients]]\nid = \"a\"\nsecret = \"x\"\n")?;
            // What Kubernetes service links inject for a Service named oauth-shim.
            jail.set_env("OAUTH_SHIM_PORT", "tcp://10.96.0.12:8080");
            jail.set_env("OAUTH_SHIM_PORT_8080_TCP_ADDR", "10.96.0.12");
            jail.set_env("OAUTH_SHIM_SERVICE_HOST", "10.96.0.12");
            jail.set_env("OAUTH_SHIM_SERVER__MAX_CONNECTIONS", "7");
            let c = load_in_jail(jail).expect("service-link variables are not fatal");
            assert_eq!(c.server.max_connections, 7, "known keys still apply");
            assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
            let w = &c.warnings[0];
            for name in ["OAUTH_SHIM_PORT", "OAUTH_SHIM_PORT_8080_TCP_ADDR", "OAUTH_SHIM_SERVICE_HOST"] {
                assert!(w.contains(name), "{w}");
            }
            assert!(!w.contains("10.96.0.12"), "values are not repeated: {w}");
            assert!(!w.contains("MAX_CONNECTIONS"), "{w}");
            Ok(())
        });
    }

    #[test]
    fn a_typo_in_the_file_stays_fatal_with_env_noise_around() {
        Jail::expect_with(|jail| {
            jail.create_file("shim.toml", "[server]\nmax_conections = 5\n")?;
            jail.set_env("OAUTH_SHIM_SERVICE_HOST", "10.96.0.12");
            let err = load_in_jail(jail).expect_err("file typo").to_string();
            assert!(err.contains("max_conections"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn lists_can_be_set_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.create_file("shim.toml", "[[clients]]\nid = \"file\"\nsecret = \"x\"\n")?;
            jail.set_env("K_SECRET", "from-env");
            jail.set_env(
                "OAUTH_SHIM_CLIENTS",
                r#"[{id = "env-a", secret_env = "K_SECRET", mode = "deny"}, {id = "env-b", secret_env = "K_SECRET", redirect_uri_allow = ["https://a.example/cb", "https://b.example/cb"]}]"#,
            );
            let c = load_in_jail(jail).expect("valid");
            let ids: Vec<_> = c.clients.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(ids, ["env-a", "env-b"], "the environment's list replaces the file's");
            assert_eq!(c.clients[0].mode, ClientMode::Deny);
            assert_eq!(c.clients[1].redirect_uri_allow, ["https://a.example/cb", "https://b.example/cb"]);
            assert_eq!(c.clients[1].secret().expose(), "from-env");
            assert!(c.warnings.is_empty(), "{:?}", c.warnings);
            Ok(())
        });
    }

    #[test]
    fn log_level_must_name_a_level() {
        for bad in ["verbose", "", "oauth_shim", "info,hyper", "warn,oauth_shim=loud"] {
            let toml = format!("[log]\nlevel = {bad:?}\n");
            expect_error(&toml, "log.level");
        }
        for good in ["info", "WARN", "off", "info,hyper=warn", "oauth_shim::access=debug,warn"] {
            Jail::expect_with(|jail| {
                jail.create_file("shim.toml", &format!("[log]\nlevel = {good:?}\n"))?;
                load_in_jail(jail).unwrap_or_else(|e| panic!("{good}: {e}"));
                Ok(())
            });
        }
    }

    #[test]
    fn zero_clients_is_a_warning() {
        Jail::expect_with(|jail| {
            jail.create_file("shim.toml", "")?;
            let c = load_in_jail(jail).expect("valid");
            assert!(c.warnings.iter().any(|w| w.contains("no [[clients]]")), "{:?}", c.warnings);
            Ok(())
        });
    }

    #[test]
    fn printed_config_loads_again() {
        Jail::expect_with(|jail| {
            jail.create_file("secret.txt", "file-secret\n")?;
            jail.set_env("E_SECRET", "env-secret");
            jail.create_file(
                "shim.toml",
                "[[clients]]\nid = \"env\"\nsecret_env = \"E_SECRET\"\n\
                 [[clients]]\nid = \"file\"\nsecret_file = \"secret.txt\"\n\
                 [[clients]]\nid = \"inline\"\nsecret = \"hunter2\"\n",
            )?;
            let c = load_in_jail(jail).expect("valid");
            let printed = toml::to_string_pretty(&c.printable()).unwrap();
            assert!(
                !printed.contains("hunter2")
                    && !printed.contains("env-secret")
                    && !printed.contains("file-secret")
            );
            jail.create_file("shim.toml", &printed)?;
            let again = load_in_jail(jail).expect("printed config loads");
            assert_eq!(again.clients[0].secret().expose(), "env-secret");
            assert_eq!(again.clients[1].secret().expose(), "file-secret");
            assert_eq!(again.clients.len(), 3);
            Ok(())
        });
    }
}
