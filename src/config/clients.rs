//! `[[clients]]` and `[continuity]`: the legacy clients oauth-shim knows and how the token path
//! looks them up.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::oauth::Secret;

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
    /// The provider this client belongs to (a `[[providers]]` name); default: `[provider]`'s.
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
pub(crate) const DEFAULT_CONTINUITY_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

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
    /// (`temporarily_unavailable`) before its upstream call.
    pub max_sessions: u64,
    /// Most sessions of one client; a token call of the client that would create one more is
    /// refused (`429 temporarily_unavailable`) before its upstream call.
    pub max_sessions_per_client: u64,
    /// Most sessions one user (the password grant's `user_id`, compared case-insensitively)
    /// holds with one client; refused as `max_sessions_per_client` is.
    pub max_sessions_per_user: u64,
}

impl Default for ContinuityConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/oauth-shim"),
            sweep_interval: Duration::from_secs(600),
            refresh_margin: Duration::from_secs(300),
            max_sessions: 1_000_000,
            max_sessions_per_client: 250_000,
            max_sessions_per_user: 1_000,
        }
    }
}

impl ClientConfig {
    /// The name of the provider this client belongs to.
    pub(crate) fn provider_name(&self) -> &str {
        self.provider.as_deref().unwrap_or(DEFAULT_PROVIDER)
    }

    /// The resolved secret. Present on every client of a validated config.
    pub fn secret(&self) -> &Secret {
        static EMPTY: std::sync::OnceLock<Secret> = std::sync::OnceLock::new();
        self.secret.as_ref().unwrap_or_else(|| EMPTY.get_or_init(Secret::default))
    }
}

/// The name of the default provider (`[provider]`); clients without `provider` belong to it.
pub(crate) const DEFAULT_PROVIDER: &str = "default";
