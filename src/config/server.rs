//! `[server]` and `[admin]`: the proxy and admin listeners, their limits and timeouts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::oauth::Secret;

use super::error::ConfigError;
use super::tls::TlsConfig;

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
    /// An HTTP/1.1 keep-alive connection with no request in flight for this long gives back its
    /// read and write buffers until the client sends again (it is *parked*: only its socket
    /// waits). `0s` parks it as soon as it is idle.
    #[serde(with = "humantime_serde")]
    pub park_after: Duration,
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
    /// `[server.tls]`: serve TLS (1.2 and 1.3, ALPN `h2` and `http/1.1`) instead of plaintext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
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
    /// `X-Forwarded-Proto` is always the scheme the client spoke (`https` with `[server.tls]`).
    Replace,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            park_after: Duration::from_millis(100),
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(25),
            worker_threads: 0,
            body_read_timeout: Duration::from_secs(5),
            http2_max_concurrent_streams: 100,
            x_forwarded_for: ForwardedFor::Append,
            tls: None,
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
    /// Name of an environment variable holding a bearer token that `/reload`, `/migration` and
    /// `/sessions` then require (`Authorization: Bearer <token>`). `/healthz`, `/readyz` and
    /// `/metrics` stay open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// The same token read from a file (surrounding whitespace trimmed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The resolved token, when `token_env` or `token_file` is set.
    #[serde(skip)]
    pub token: Option<Secret>,
    /// Host names (no port) the admin listener answers to besides its own address and
    /// `localhost`: the names operators and scrapers use for it (DNS names, a NAT's address).
    /// Any other `Host` gets 421 (DNS rebinding). Lowercased, a trailing dot dropped.
    pub allowed_hosts: Vec<String>,
    /// With the listener bound beyond loopback, `/migration`, `/reload` and `/sessions` need
    /// the admin token; without one they answer 403. `true` opens them without a token anyway
    /// (warned about at start and on every reload).
    pub allow_unauthenticated_remote: bool,
    /// `[admin.tls]`: serve the admin listener over TLS (HTTP/1.1) instead of plaintext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

impl ServerConfig {
    /// `worker_threads` with `0` resolved to the CPUs available to this process (its affinity
    /// mask and cgroup quota).
    pub(crate) fn resolved_worker_threads(&self) -> usize {
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
            allowed_hosts: Vec::new(),
            allow_unauthenticated_remote: false,
            tls: None,
        }
    }
}

impl AdminConfig {
    /// `allowed_hosts` lowercased and without a trailing dot; each must be a host name or an
    /// IP address (IPv6 in brackets), without scheme, port or path.
    pub(super) fn resolve_hosts(&mut self) -> Result<(), ConfigError> {
        for host in &mut self.allowed_hosts {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            let literal = name.strip_prefix('[').and_then(|n| n.strip_suffix(']'));
            let ok = match literal {
                Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
                None => {
                    !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
                }
            };
            if !ok {
                return Err(ConfigError(format!(
                    "admin.allowed_hosts: {host:?} must be a host name or IP address, without scheme, port or path"
                )));
            }
            *host = name;
        }
        Ok(())
    }

    /// The warning for an admin listener reachable beyond loopback, if it is one.
    pub(super) fn exposure_warning(&self) -> Option<String> {
        if !self.enabled || self.listen.ip().to_canonical().is_loopback() || self.token.is_some() {
            return None;
        }
        let listen = self.listen;
        Some(if self.allow_unauthenticated_remote {
            format!(
                "admin.allow_unauthenticated_remote = true: /migration, /reload and /sessions on {listen} answer anyone who can reach the port, without a token; set admin.token_env or admin.token_file"
            )
        } else {
            format!(
                "admin.listen {listen} is beyond loopback and no admin token is set: /migration, /reload and /sessions answer 403 until admin.token_env or admin.token_file names one (/healthz, /readyz and /metrics stay open)"
            )
        })
    }

    /// Read the admin token from `token_env` or `token_file`, if one is named. Used at load and
    /// by the admin client commands (`reload`, `report`, `healthcheck`).
    pub(crate) fn resolve_token(&mut self) -> Result<(), ConfigError> {
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
