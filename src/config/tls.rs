//! `[server.tls]` and `[admin.tls]`: the certificate pair a listener serves, the client CA it
//! may require, and the limits on handshakes. The files themselves are read by `crate::tls`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf.
    pub key_file: PathBuf,
    /// PEM CA certificates client certificates are verified against; set to ask clients for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: whether a client must present a certificate (`required`) or may
    /// (`optional`; one it presents must still verify).
    pub client_auth: ClientCertPolicy,
    /// A new connection must finish its TLS handshake within this time, or it is closed.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// TLS handshakes in progress at once; further new connections wait their turn.
    pub max_handshakes: usize,
}

/// Whether a client certificate is required when `client_ca_file` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertPolicy {
    #[default]
    Required,
    Optional,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: None,
            client_auth: ClientCertPolicy::Required,
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 256,
        }
    }
}

impl TlsConfig {
    /// Both files named, sane limits. `section` is `server.tls` or `admin.tls`.
    pub(super) fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self.cert_file.as_os_str().is_empty() || self.key_file.as_os_str().is_empty() {
            return Err(ConfigError(format!("{section}: set both cert_file and key_file")));
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError(format!("{section}.handshake_timeout must be more than 0")));
        }
        if self.max_handshakes == 0 {
            return Err(ConfigError(format!("{section}.max_handshakes must be at least 1")));
        }
        Ok(())
    }
}
