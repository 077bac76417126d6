//! The small sections: `[legacy]`, `[refresh_cache]`, `[log]` and `[reload]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LegacyConfig {
    pub platform: String,
    pub version: String,
    /// Keep `token_type`, `scope`, `principal` and other v2-only fields in legacy answers.
    pub keep_extra_fields: bool,
    /// The `expires_in` of a legacy answer whose upstream answer states none (whole seconds).
    #[serde(with = "humantime_serde")]
    pub default_expires_in: Duration,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        Self {
            platform: "GLOBAL".into(),
            version: "2".into(),
            keep_extra_fields: false,
            default_expires_in: Duration::from_secs(3600),
        }
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
