//! Typed configuration: built-in defaults < TOML file < `OAUTH_SHIM_` environment, validated once
//! at load. Everything on the request path reads a validated [`Config`]; nothing re-parses it.
//! This file only declares the parts and re-exports them, so `crate::config::X` stays the path.

mod clients;
mod error;
mod load;
mod sections;
mod server;
mod state;
mod upstream;
mod validate;

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests;

pub use clients::{
    ClientConfig, ClientMode, ContinuityConfig, DEFAULT_CONTINUITY_LIFETIME, DEFAULT_PROVIDER,
};
pub use error::ConfigError;
pub use load::{Config, config_path, env_overrides};
pub use sections::{LegacyConfig, LogConfig, LogFormat, RefreshCacheConfig, ReloadConfig};
pub use server::{AdminConfig, ForwardedFor, ServerConfig};
pub use state::{StateBackend, StateConfig};
pub use upstream::{ClientAuth, LegacyFieldsConfig, Preset, ProviderConfig, UpstreamConfig, normalise_host};
