//! `[upstream]` (how oauth-shim talks to any provider's upstream), the one shape of a provider
//! (`[provider]`, the default, and each `[[providers]]` entry) and its `legacy_fields` lookup:
//! where token, authorize and API calls go.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::oauth::{BasicAuthEncoding, CallLimits};

use super::error::ConfigError;
use super::state::WhenUnavailable;

/// Connection settings shared by every provider's upstream calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
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
    // The default provider's keys as `[upstream]` used to hold them, still accepted there
    // (deprecated: `[provider]` holds them). Moved into `[provider]` at load, with a warning, so
    // nothing reads them here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) token_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) authorize_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) api_base: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) basic_auth_encoding: Option<BasicAuthEncoding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) client_auth: Option<ClientAuth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) legacy_fields: Option<LegacyFieldsConfig>,
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

/// Built-in endpoint sets for a provider's `preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// GoTo's v2 endpoints on api.getgo.com (the default provider's defaults).
    Goto,
    /// GoTo's identity host, authentication.logmeininc.com; the API stays on api.getgo.com.
    GotoIdentity,
}

impl Preset {
    /// The outage policy a provider with this preset defaults to: GoTo documents that its
    /// refresh tokens stay the same until they expire (docs/deployment.md#when-redis-fails), so
    /// a refresh made twice spends nothing.
    pub(crate) fn when_unavailable(self) -> WhenUnavailable {
        match self {
            Self::Goto | Self::GotoIdentity => WhenUnavailable::Local,
        }
    }

    /// (token_url, authorize_url, api_base).
    pub(crate) fn urls(self) -> [&'static str; 3] {
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

/// An OAuth provider: the default one (`[provider]`, which serves every `Host` no other provider
/// lists) and each of `[[providers]]` have this shape. Only a `[[providers]]` entry sets `name`
/// and `hosts`. Connection settings (timeouts, pool sizes, CA file) come from `[upstream]`; each
/// provider still gets pools of its own.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    /// Fills `token_url`, `authorize_url` and `api_base` where they are not set (the default
    /// provider's preset is `goto` unless set).
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
    /// What its refreshes do while no Redis master answers (unset: `[state] when_unavailable`,
    /// else as its `preset` says).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when_unavailable: Option<WhenUnavailable>,
}

impl ProviderConfig {
    /// The endpoints, filled by the preset at load (empty only before validation).
    pub(crate) fn urls(&self) -> [&str; 3] {
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
    pub(crate) fn pointers(&self) -> [Option<&str>; 6] {
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
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_response_bytes: 256 * 1024,
            max_response_header_bytes: 64 * 1024,
            body_stall_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
            ca_file: None,
            token_url: None,
            authorize_url: None,
            api_base: None,
            basic_auth_encoding: None,
            client_auth: None,
            legacy_fields: None,
        }
    }
}

/// A `Host` as providers match it: lowercase, without a trailing dot.
pub(crate) fn normalise_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl UpstreamConfig {
    /// The limits of a token call under this `[upstream]`.
    pub(crate) fn call_limits(&self) -> CallLimits {
        CallLimits { request_timeout: self.request_timeout, max_response_bytes: self.max_response_bytes }
    }
}
