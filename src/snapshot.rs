//! The config in force and what is derived from it once (the [`Snapshot`]): providers
//! (endpoints, clients, pools) and the `Host` table that selects them. Swapped as a whole on
//! reload, so a request sees one consistent version.

use std::sync::Arc;

use http::HeaderValue;

use crate::config::{ClientConfig, Config, ConfigError, ValidConfig};
use crate::crypto::KeySet;
use crate::provider::{self, Provider};
use crate::tls::{ALPN_ADMIN, ALPN_PROXY, Tls};

/// A validated config plus what is derived from it once (parsed URIs, providers and their
/// clients), swapped as a whole on reload so a request sees one consistent version.
pub struct Snapshot {
    pub config: Config,
    /// Every provider, the default (`[provider]`) first.
    pub providers: Vec<Provider>,
    /// `Host` -> provider index, for the providers other than the default.
    hosts: Vec<(String, usize)>,
    /// Some client uses token continuity: pass-through requests are checked for a minted token.
    pub continuity: bool,
    /// The `[state]` key set, parsed once per config.
    pub(crate) state_keys: Option<Arc<KeySet>>,
    /// The proxy and admin listeners' TLS (`[server.tls]`, `[admin.tls]`), their files read and
    /// checked: new handshakes use the one of the snapshot in force.
    pub server_tls: Option<Arc<Tls>>,
    pub admin_tls: Option<Arc<Tls>>,
}

impl Snapshot {
    /// A snapshot with new upstream pools.
    pub fn new(config: ValidConfig) -> Result<Self, ConfigError> {
        let config = config.into_inner();
        let providers = provider::build(&config, None)?;
        Self::assemble(config, providers)
    }

    /// A snapshot for a reloaded config: providers that `old` had keep their upstream pools
    /// (and lookup caches).
    pub fn reloaded(config: ValidConfig, old: &Snapshot) -> Result<Self, ConfigError> {
        let config = config.into_inner();
        let providers = provider::build(&config, Some(&old.providers))?;
        Self::assemble(config, providers)
    }

    fn assemble(config: Config, providers: Vec<Provider>) -> Result<Self, ConfigError> {
        let continuity = config.continuity_enabled();
        let state_keys = config.state.key_set()?.map(Arc::new);
        let server_tls =
            config.server.tls.as_ref().map(|t| Tls::load(t, "server.tls", ALPN_PROXY)).transpose()?;
        let admin_tls = match &config.admin.tls {
            Some(t) if config.admin.enabled => Some(Tls::load(t, "admin.tls", ALPN_ADMIN)?),
            _ => None,
        };
        Ok(Self {
            hosts: provider::host_table(&config),
            config,
            providers,
            continuity,
            state_keys,
            server_tls: server_tls.map(Arc::new),
            admin_tls: admin_tls.map(Arc::new),
        })
    }

    /// The configured client of the default provider with exactly this id (byte for byte),
    /// with the `Authorization` header oauth-shim sends upstream on its behalf. (Token
    /// continuity serves the default provider's clients only.)
    pub fn client(&self, id: &str) -> Option<(&ClientConfig, &HeaderValue)> {
        self.default_provider().client(id)
    }

    /// The default provider (`[provider]`).
    pub fn default_provider(&self) -> &Provider {
        &self.providers[0]
    }

    /// The provider at `index` (as [`Snapshot::select`] returned it for this snapshot).
    pub fn provider(&self, index: usize) -> &Provider {
        self.providers.get(index).unwrap_or(&self.providers[0])
    }

    /// The index of the provider a request's host (`app::host::read`) selects.
    pub(crate) fn select(&self, host: Option<&[u8]>) -> usize {
        provider::select(&self.hosts, host)
    }
}
