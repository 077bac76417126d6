//! `[state]`: where the refresh cache and single flight live (memory or Redis), and the Redis
//! password and encryption keys it reads.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::oauth::Secret;

use super::error::{ConfigError, read_secret_source};

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

/// What a refresh that no answer in Redis serves does while no Redis master answers
/// (docs/deployment.md#when-redis-fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenUnavailable {
    /// `503 temporarily_unavailable` with `Retry-After`; no refresh token is spent. Safe for
    /// every provider, and the only safe choice for one that rotates refresh tokens.
    Refuse,
    /// This replica's own single flight: replicas may each spend the token once. Only for
    /// providers whose refresh tokens stay the same until they expire.
    Local,
}

impl WhenUnavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refuse => "refuse",
            Self::Local => "local",
        }
    }
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
    /// Sentinel: the sentinels' `host:port`s. oauth-shim asks them for the master of
    /// `master_name` and follows its failovers; `url` then only gives the data nodes' scheme
    /// (`rediss://` for TLS), user name and database.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sentinels: Vec<String>,
    /// The master the sentinels monitor (Sentinel's `sentinel monitor <name> …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_name: Option<String>,
    /// Name of an environment variable holding the sentinels' password (they have their own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel_password_env: Option<String>,
    /// Path of a file holding the sentinels' password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel_password_file: Option<PathBuf>,
    /// Talk TLS to the sentinels (their certificates chain to `sentinel_ca_file`, else the
    /// public web roots).
    pub sentinel_tls: bool,
    /// PEM file of the CA certificates the sentinels' TLS certificates must chain to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel_ca_file: Option<PathBuf>,
    /// Cluster: some of the Redis Cluster's nodes, each `host:port` (or `redis://host:port`,
    /// `rediss://[user@]host:port` for TLS, all with one scheme); the rest are discovered. Not
    /// with `url` or `sentinels`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cluster_nodes: Vec<String>,
    /// How many replicas must acknowledge (`WAIT`) a flight's lock before its leader calls the
    /// upstream, and its answer before the lock is released (unset: 1 with `sentinels` or
    /// `cluster_nodes`, else 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas_ack: Option<u32>,
    /// The outage policy of every provider that sets none (unset: `refuse`, or `local` for a
    /// provider with a GoTo `preset`; see [`crate::config::Config::when_unavailable`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when_unavailable: Option<WhenUnavailable>,
    /// How long a refresh waits for Redis to answer again (a restart, a failover) before
    /// `when_unavailable` decides; never longer than the token call's deadline. An outage
    /// already older than this is decided at once.
    #[serde(with = "humantime_serde")]
    pub failover_wait: Duration,
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
    /// The resolved sentinel password, after load.
    #[serde(skip)]
    pub sentinel_password: Option<Secret>,
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
            sentinels: Vec::new(),
            master_name: None,
            sentinel_password_env: None,
            sentinel_password_file: None,
            sentinel_tls: false,
            sentinel_ca_file: None,
            cluster_nodes: Vec::new(),
            replicas_ack: None,
            when_unavailable: None,
            failover_wait: Duration::from_secs(2),
            ca_file: None,
            encryption_key_env: None,
            encryption_key_file: None,
            password: None,
            sentinel_password: None,
            encryption_keys: None,
        }
    }
}

impl StateConfig {
    /// The key set, if key material is configured. Validated at load, so a loaded config's
    /// material always parses.
    pub(crate) fn key_set(&self) -> Result<Option<crate::crypto::KeySet>, ConfigError> {
        let Some(material) = &self.encryption_keys else { return Ok(None) };
        crate::crypto::KeySet::parse(material.expose())
            .map(Some)
            .map_err(|e| ConfigError(format!("state encryption key: {e}")))
    }

    /// The CA certificates of `ca_file`, as PEM text, if set.
    pub(crate) fn ca_pem(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        read_ca("state.ca_file", self.ca_file.as_deref())
    }

    /// The replicas that must acknowledge a lock and an answer.
    pub(crate) fn replicas_ack(&self) -> u32 {
        self.replicas_ack.unwrap_or(u32::from(!self.sentinels.is_empty() || !self.cluster_nodes.is_empty()))
    }

    /// The cluster nodes as URLs (`host:port` becomes `redis://host:port`); validated at load.
    pub(crate) fn cluster_urls(&self) -> Vec<String> {
        self.cluster_nodes
            .iter()
            .map(|n| if n.contains("://") { n.clone() } else { format!("redis://{n}") })
            .collect()
    }

    /// The Cluster key: not with `url` or `sentinels`; each node a `host:port` or a URL without
    /// password, path or query, all with one scheme.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        if self.cluster_nodes.is_empty() {
            return Ok(());
        }
        if self.url.is_some() || !self.sentinels.is_empty() {
            return Err(ConfigError(
                "state.cluster_nodes is not used with state.url or state.sentinels".into(),
            ));
        }
        let mut schemes = std::collections::BTreeSet::new();
        for (i, node) in self.cluster_urls().iter().enumerate() {
            // The node is not echoed: it may carry a user name.
            let bad =
                || ConfigError(format!("state.cluster_nodes[{i}] is not host:port or redis[s]://host:port"));
            let parsed = Url::parse(node).map_err(|_| bad())?;
            if parsed.password().is_some() {
                return Err(ConfigError(format!(
                    "state.cluster_nodes[{i}] must not contain a password; use state.password_env or state.password_file"
                )));
            }
            let plain = matches!(parsed.scheme(), "redis" | "rediss")
                && parsed.host_str().is_some_and(|h| !h.is_empty())
                && parsed.port().is_some()
                && matches!(parsed.path(), "" | "/")
                && parsed.query().is_none();
            if !plain {
                return Err(bad());
            }
            schemes.insert(parsed.scheme().to_owned());
        }
        if schemes.len() > 1 {
            return Err(ConfigError("state.cluster_nodes mixes redis:// and rediss://".into()));
        }
        if self.ca_file.is_some() && !schemes.contains("rediss") {
            return Err(ConfigError("state.ca_file needs rediss:// cluster nodes".into()));
        }
        self.ca_pem()?;
        Ok(())
    }

    /// The CA certificates of `sentinel_ca_file`, as PEM text, if set.
    pub(crate) fn sentinel_ca_pem(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        read_ca("state.sentinel_ca_file", self.sentinel_ca_file.as_deref())
    }

    pub(super) fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        self.password = read_secret_source(
            "state.password",
            self.password_env.as_deref(),
            self.password_file.as_deref(),
        )?;
        self.sentinel_password = read_secret_source(
            "state.sentinel_password",
            self.sentinel_password_env.as_deref(),
            self.sentinel_password_file.as_deref(),
        )?;
        self.encryption_keys = read_secret_source(
            "state.encryption_key",
            self.encryption_key_env.as_deref(),
            self.encryption_key_file.as_deref(),
        )?;
        Ok(())
    }

    /// The Sentinel keys: all or none, each sentinel a `host:port`.
    fn validate_sentinels(&self) -> Result<(), ConfigError> {
        if self.sentinels.is_empty() {
            let set = self.master_name.is_some()
                || self.sentinel_password.is_some()
                || self.sentinel_tls
                || self.sentinel_ca_file.is_some();
            if set {
                return Err(ConfigError(
                    "state.master_name and state.sentinel_* need state.sentinels".into(),
                ));
            }
            return Ok(());
        }
        if self.master_name.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError("state.sentinels needs state.master_name".into()));
        }
        for s in &self.sentinels {
            let ok = s
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(ConfigError(format!("state.sentinels: {s:?} is not host:port")));
            }
        }
        if self.sentinel_ca_file.is_some() && !self.sentinel_tls {
            return Err(ConfigError("state.sentinel_ca_file needs state.sentinel_tls = true".into()));
        }
        self.sentinel_ca_pem()?;
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.key_set()?;
        if self.backend == StateBackend::Memory {
            return Ok(());
        }
        self.validate_sentinels()?;
        self.validate_cluster()?;
        if self.replicas_ack() > 16 {
            return Err(ConfigError("state.replicas_ack must be at most 16".into()));
        }
        if self.key_prefix.contains(['{', '}']) {
            // A brace would move the hash tag that keeps a lock and its answer in one slot.
            return Err(ConfigError("state.key_prefix must not contain { or }".into()));
        }
        if !self.cluster_nodes.is_empty() {
            return self.validate_common();
        }
        let url = match (&self.url, self.sentinels.is_empty()) {
            (Some(url), _) => url.as_str(),
            // With sentinels the data nodes' address comes from them.
            (None, false) => "redis://sentinel-master",
            (None, true) => {
                return Err(ConfigError(
                    "state.url is required with state.backend = \"redis\" (or state.sentinels, state.cluster_nodes)".into(),
                ));
            }
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
        redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| ConfigError(format!("state.url is not a usable Redis URL: {}", e.category())))?;
        if self.ca_file.is_some() && parsed.scheme() != "rediss" {
            return Err(ConfigError("state.ca_file needs a rediss:// url".into()));
        }
        self.validate_common()
    }

    /// What every topology needs: the key material, a readable CA, non-zero timeouts.
    fn validate_common(&self) -> Result<(), ConfigError> {
        if self.encryption_keys.is_none() {
            return Err(ConfigError(
                "state.backend = \"redis\" needs state.encryption_key_env or state.encryption_key_file"
                    .into(),
            ));
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

/// The PEM certificates of the file at `path` (config key `key`), if set.
fn read_ca(key: &str, path: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, ConfigError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let Some(path) = path else { return Ok(None) };
    let bad = |why: String| ConfigError(format!("{key} {}: {why}", path.display()));

    let pem = std::fs::read(path).map_err(|e| bad(e.kind().to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("contains no PEM certificate".into()));
    }
    Ok(Some(pem))
}
