//! The root `Config` and its loading: built-in defaults < TOML file < `OAUTH_SHIM_` environment,
//! then secrets resolved and one validation pass; read once at start-up and on reload.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::oauth::Secret;

use super::clients::{ClientConfig, ContinuityConfig, DEFAULT_PROVIDER};
use super::error::ConfigError;
use super::migration::MigrationConfig;
use super::sections::{LegacyConfig, LogConfig, RefreshCacheConfig, ReloadConfig};
use super::server::{AdminConfig, ServerConfig};
use super::state::{StateConfig, WhenUnavailable};
use super::upstream::{Preset, ProviderConfig, UpstreamConfig, normalise_host};

/// The whole configuration. Field names are the public interface (the TOML keys).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    /// The default provider: it serves every request whose `Host` no `[[providers]]` entry lists.
    pub provider: ProviderConfig,
    pub upstream: UpstreamConfig,
    pub legacy: LegacyConfig,
    pub refresh_cache: RefreshCacheConfig,
    pub state: StateConfig,
    pub log: LogConfig,
    pub reload: ReloadConfig,
    pub continuity: ContinuityConfig,
    pub migration: MigrationConfig,
    /// Providers besides the default one (`[provider]`), selected by the request's `Host`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderConfig>,
    pub clients: Vec<ClientConfig>,
    /// What loading noticed that is worth a warning but not fatal (environment variables under
    /// `OAUTH_SHIM_` that name no key, no clients configured). `check-config` prints them to
    /// stderr; `serve` and reloads log them once.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// A [`Config`] that passed [`Config::validated`] (loading validates too): what a runtime is
/// built from. Read it through `Deref`; to change it, take it apart with
/// [`ValidConfig::into_inner`] and validate the result again.
#[derive(Debug, Clone)]
pub struct ValidConfig(Config);

impl ValidConfig {
    /// The config, to change and validate again.
    pub fn into_inner(self) -> Config {
        self.0
    }
}

impl std::ops::Deref for ValidConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.0
    }
}

/// Where to read the config file from: an explicit path, else `OAUTH_SHIM_CONFIG`, else the
/// default path.
pub(crate) fn config_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("OAUTH_SHIM_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("config/oauth-shim.toml"))
}

impl Config {
    /// Defaults < file < environment, then secrets resolved and everything validated.
    pub fn load(path: &Path) -> Result<ValidConfig, ConfigError> {
        if !path.exists() {
            return Err(ConfigError(format!("config file {} does not exist", path.display())));
        }
        let (env, ignored) = env_overrides();
        let ValidConfig(mut config) = Self::from_figment(
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
        Ok(ValidConfig(config))
    }

    /// The file and environment merged over the defaults, neither validated nor with secrets
    /// resolved: what the file names (its `secret_file`s, say), for the reload watcher.
    pub(crate) fn read_unvalidated(path: &Path) -> Option<Self> {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(path))
            .merge(env_overrides().0)
            .extract()
            .ok()
    }

    /// Extract from an arbitrary figment (tests and `dev` build their own), then validate.
    pub fn from_figment(figment: Figment) -> Result<ValidConfig, ConfigError> {
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
    pub fn validated(mut self) -> Result<ValidConfig, ConfigError> {
        self.move_provider_keys()?;
        self.resolve_presets();
        self.resolve_secrets()?;
        self.admin.resolve_token()?;
        self.admin.resolve_hosts()?;
        self.validate()?;
        if let Some(warning) = self.admin.exposure_warning() {
            self.warnings.push(warning);
        }
        if self.clients.is_empty() {
            self.warnings.push(
                "no [[clients]] configured: every legacy token call will be refused as invalid_client".into(),
            );
        }
        // Validating a config again (a test's, changed after loading) warns once per problem.
        let mut seen = std::collections::HashSet::new();
        self.warnings.retain(|w| seen.insert(w.clone()));
        Ok(ValidConfig(self))
    }

    /// What `provider`'s refreshes do while no Redis master answers: its own
    /// `when_unavailable`, else `[state] when_unavailable`, else what its `preset` says (GoTo's
    /// refresh tokens do not rotate), else `refuse`: a provider configured by URLs alone is
    /// assumed to rotate its refresh tokens.
    pub fn when_unavailable(&self, provider: &ProviderConfig) -> WhenUnavailable {
        provider
            .when_unavailable
            .or(self.state.when_unavailable)
            .or(provider.preset.map(Preset::when_unavailable))
            .unwrap_or(WhenUnavailable::Refuse)
    }

    /// Fill each provider's unset endpoints from its preset (the default provider's is `goto`
    /// unless set), and normalise its hosts.
    fn resolve_presets(&mut self) {
        let default = std::iter::once((&mut self.provider, Some(Preset::Goto)));
        for (p, fallback) in default.chain(self.providers.iter_mut().map(|p| (p, None))) {
            if let Some(preset) = p.preset.or(fallback) {
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
    pub(crate) fn printable(&self) -> Config {
        let mut out = self.clone();
        for c in &mut out.clients {
            if c.secret_env.is_some() || c.secret_file.is_some() {
                c.secret = None;
            }
        }
        out
    }

    pub(super) fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
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
    pub(super) fn check_continuity_keys(&self) -> Result<(), ConfigError> {
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
    pub(crate) fn continuity_enabled(&self) -> bool {
        self.clients.iter().any(|c| c.continuity)
    }
}

impl Config {
    /// The configured client of the default provider with exactly this id (byte for byte).
    pub fn client(&self, id: &str) -> Option<&ClientConfig> {
        self.client_in(DEFAULT_PROVIDER, id)
    }

    /// The configured client of `provider` with exactly this id (byte for byte).
    pub(crate) fn client_in(&self, provider: &str, id: &str) -> Option<&ClientConfig> {
        self.clients.iter().find(|c| c.id == id && c.provider_name() == provider)
    }
}

/// The environment provider (`OAUTH_SHIM_<SECTION>__<KEY>`, values parsed as figment reads
/// them: `[a, b]` is a list, `{k = v}` a table), without the variables that name no config key,
/// and those variables' names. A variable counts as naming a key when the defaults with it
/// alone merged on top extract without an unknown-field error; so every key the config types
/// know is accepted, whatever table it sits in.
pub(crate) fn env_overrides() -> (Env, Vec<String>) {
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
