//! Typed configuration: built-in defaults < TOML file < `OAUTH_SHIM_` environment, validated once
//! at load. Everything on the request path reads a validated [`Config`]; nothing re-parses it.
//! This file only declares the parts and re-exports them, so `crate::config::X` stays the path.

mod clients;
mod error;
mod load;
mod migration;
mod sections;
mod server;
mod state;
mod tls;
mod upstream;
mod validate;

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests;
#[cfg(test)]
mod topology_tests;

pub use clients::ContinuityConfig;
pub(crate) use clients::DEFAULT_PROVIDER;
pub use clients::{ClientConfig, ClientMode};
pub use error::ConfigError;
pub use load::{Config, ValidConfig};
pub(crate) use load::{config_path, env_overrides};
pub use migration::MigrationConfig;
pub use sections::{LegacyConfig, LogConfig, LogFormat};
pub use sections::{RefreshCacheConfig, ReloadConfig};
pub use server::AdminConfig;
pub use server::ForwardedFor;
pub use server::ServerConfig;
pub use state::StateBackend;
pub use state::StateConfig;
pub use state::WhenUnavailable;
pub use tls::{ClientCertPolicy, TlsConfig};
pub use upstream::Preset;
pub use upstream::UpstreamConfig;
pub use upstream::{ClientAuth, LegacyFieldsConfig, ProviderConfig};
