//! The one validation pass over a loaded `Config`: URLs, limits, providers, clients and log
//! level; every error is one line naming the key and never a secret.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use url::Url;

use crate::oauth::BasicAuthEncoding;

use super::clients::ClientMode;
use super::clients::DEFAULT_PROVIDER;
use super::error::ConfigError;
use super::load::Config;
use super::upstream::{LegacyFieldsConfig, ProviderConfig};

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_log_level(&self.log.level)?;
        self.upstream.extra_roots()?;
        self.state.validate()?;
        self.check_continuity_keys()?;
        self.migration.validate()?;
        let s = &self.server;
        if let Some(tls) = &s.tls {
            tls.validate("server.tls")?;
        }
        if let Some(tls) = &self.admin.tls {
            tls.validate("admin.tls")?;
        }
        for (key, value) in [
            ("server.max_connections", s.max_connections),
            ("admin.max_connections", self.admin.max_connections),
            ("server.max_uri_bytes", s.max_uri_bytes),
            ("server.http2_max_concurrent_streams", s.http2_max_concurrent_streams as usize),
            ("upstream.max_response_bytes", self.upstream.max_response_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{key} must be greater than 0")));
            }
        }
        let c = &self.continuity;
        for (key, value) in [
            ("continuity.max_sessions", c.max_sessions),
            ("continuity.max_sessions_per_client", c.max_sessions_per_client),
            ("continuity.max_sessions_per_user", c.max_sessions_per_user),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{key} must be greater than 0")));
            }
        }
        if s.max_header_bytes < 8192 {
            return Err(ConfigError("server.max_header_bytes must be at least 8192".into()));
        }
        if self.upstream.max_response_header_bytes < 1024 {
            return Err(ConfigError("upstream.max_response_header_bytes must be at least 1024".into()));
        }
        for (key, value) in [
            ("server.header_read_timeout", s.header_read_timeout),
            ("server.idle_timeout", s.idle_timeout),
            ("server.body_read_timeout", s.body_read_timeout),
            ("upstream.connect_timeout", self.upstream.connect_timeout),
            ("upstream.request_timeout", self.upstream.request_timeout),
            ("upstream.body_stall_timeout", self.upstream.body_stall_timeout),
            ("reload.watch_interval", self.reload.watch_interval),
            ("continuity.sweep_interval", self.continuity.sweep_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError(format!("{key} must be greater than 0s")));
            }
        }
        let default_expires_in = self.legacy.default_expires_in.as_secs();
        if !(1..=crate::oauth::MAX_EXPIRES_IN).contains(&default_expires_in) {
            return Err(ConfigError(
                "legacy.default_expires_in must be between 1s and 10 years (3650days)".into(),
            ));
        }
        if self.admin.enabled && self.admin.listen == s.listen && s.listen.port() != 0 {
            return Err(ConfigError("admin.listen must differ from server.listen".into()));
        }
        self.validate_providers()?;
        let mut seen = HashSet::new();
        for client in &self.clients {
            if client.id.is_empty() {
                return Err(ConfigError("a client has an empty id".into()));
            }
            let provider = client.provider_name();
            let encoding = if provider == DEFAULT_PROVIDER {
                self.provider.basic_auth_encoding
            } else {
                match self.providers.iter().find(|p| p.name == provider) {
                    Some(p) => p.basic_auth_encoding,
                    None => {
                        return Err(ConfigError(format!(
                            "client {:?}: provider {provider:?} is not configured",
                            client.id
                        )));
                    }
                }
            };
            if encoding == BasicAuthEncoding::Raw && client.id.contains(':') {
                return Err(ConfigError(format!(
                    "client {:?}: an id containing ':' needs basic_auth_encoding = \"form-urlencoded\"",
                    client.id
                )));
            }
            if !seen.insert((provider, client.id.as_str())) {
                return Err(ConfigError(if provider == DEFAULT_PROVIDER {
                    format!("client {:?} is configured twice", client.id)
                } else {
                    format!("client {:?} is configured twice for provider {provider:?}", client.id)
                }));
            }
            if client.continuity && client.provider_name() != DEFAULT_PROVIDER {
                return Err(ConfigError(format!(
                    "client {:?}: continuity is available to clients of the default provider ([provider]) only",
                    client.id
                )));
            }
            if client.continuity && client.mode == ClientMode::Passthrough {
                return Err(ConfigError(format!(
                    "client {:?}: continuity needs mode = \"rewrite\" (a passthrough client's tokens are the upstream's)",
                    client.id
                )));
            }
            if client.continuity && client.continuity_lifetime < Duration::from_secs(1) {
                return Err(ConfigError(format!(
                    "client {:?}: continuity_lifetime must be at least 1s",
                    client.id
                )));
            }
            if let Some(uri) = &client.redirect_uri {
                parse_redirect(&client.id, "redirect_uri", uri)?;
            }
            for uri in &client.redirect_uri_allow {
                parse_redirect(&client.id, "redirect_uri_allow", uri)?;
            }
        }
        Ok(())
    }

    /// Names unique (and not the default's), hosts unique across providers, URLs usable, the
    /// token path not one oauth-shim answers itself, lookups well formed. The default provider
    /// takes no name and no hosts: it serves every host the others do not list.
    fn validate_providers(&self) -> Result<(), ConfigError> {
        let default = &self.provider;
        if !default.name.is_empty() {
            return Err(ConfigError(format!(
                "provider.name {:?}: the default provider is named {DEFAULT_PROVIDER:?}; only [[providers]] entries take a name",
                default.name
            )));
        }
        if !default.hosts.is_empty() {
            return Err(ConfigError(
                "provider.hosts: the default provider serves every host no [[providers]] entry lists; give hosts to a [[providers]] entry".into(),
            ));
        }
        check_endpoints("provider", DEFAULT_PROVIDER, default)?;
        let mut names = HashSet::new();
        let mut hosts = HashSet::new();
        for p in &self.providers {
            let name = &p.name;
            let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if name.is_empty() || !name.chars().all(ok_char) {
                return Err(ConfigError(format!(
                    "provider {name:?}: a name is required, made of letters, digits, '-', '_' and '.'"
                )));
            }
            if name == DEFAULT_PROVIDER {
                return Err(ConfigError(format!(
                    "provider {name:?}: the name is reserved for the default provider ([provider])"
                )));
            }
            if !names.insert(name.as_str()) {
                return Err(ConfigError(format!("provider {name:?} is configured twice")));
            }
            if p.hosts.is_empty() {
                return Err(ConfigError(format!(
                    "provider {name:?}: hosts is empty, so no request can select it"
                )));
            }
            for host in &p.hosts {
                if host.is_empty() || host.contains(|c: char| c == '/' || c == ':' || c.is_whitespace()) {
                    return Err(ConfigError(format!(
                        "provider {name:?}: host {host:?} must be a host name without scheme or port"
                    )));
                }
                if !hosts.insert(host.as_str()) {
                    return Err(ConfigError(format!("host {host:?} is listed by more than one provider")));
                }
            }
            check_endpoints(&format!("providers.{name}"), name, p)?;
        }
        Ok(())
    }
}

/// A provider's URLs usable, its token path not one oauth-shim answers itself, its lookup well
/// formed; `prefix` is its table's key (`provider` or `providers.<name>`).
fn check_endpoints(prefix: &str, name: &str, p: &ProviderConfig) -> Result<(), ConfigError> {
    for (key, url) in ["token_url", "authorize_url", "api_base"].into_iter().zip(p.urls()) {
        if url.is_empty() {
            return Err(ConfigError(format!("provider {name:?}: {key} is required (or set a preset)")));
        }
        check_url(&format!("{prefix}.{key}"), url)?;
    }
    check_token_path(&format!("{prefix}.token_url"), p.urls()[0])?;
    if let Some(lookup) = &p.legacy_fields {
        check_lookup(&format!("{prefix}.legacy_fields"), lookup)?;
    }
    Ok(())
}

impl Config {
    /// Move the default provider's keys set under `[upstream]` (deprecated) into `[provider]`,
    /// with a warning naming them. A URL or lookup set in both tables is an error.
    pub(super) fn move_provider_keys(&mut self) -> Result<(), ConfigError> {
        let (upstream, provider) = (&mut self.upstream, &mut self.provider);
        let mut moved = Vec::new();
        for (key, old, new) in [
            ("token_url", &mut upstream.token_url, &mut provider.token_url),
            ("authorize_url", &mut upstream.authorize_url, &mut provider.authorize_url),
            ("api_base", &mut upstream.api_base, &mut provider.api_base),
        ] {
            let Some(value) = old.take() else { continue };
            check_url(&format!("upstream.{key}"), &value)?;
            if new.is_some() {
                return Err(ConfigError(format!(
                    "upstream.{key} and provider.{key} are both set: keep provider.{key} (the default provider's keys belong in [provider])"
                )));
            }
            *new = Some(value);
            moved.push(key);
        }
        if let Some(lookup) = upstream.legacy_fields.take() {
            if provider.legacy_fields.is_some() {
                return Err(ConfigError(
                    "upstream.legacy_fields and provider.legacy_fields are both set: keep provider.legacy_fields".into(),
                ));
            }
            provider.legacy_fields = Some(lookup);
            moved.push("legacy_fields");
        }
        if let Some(encoding) = upstream.basic_auth_encoding.take() {
            provider.basic_auth_encoding = encoding;
            moved.push("basic_auth_encoding");
        }
        if let Some(auth) = upstream.client_auth.take() {
            provider.client_auth = auth;
            moved.push("client_auth");
        }
        if !moved.is_empty() {
            self.warnings.push(format!(
                "[upstream] {} {} deprecated: the default provider's keys belong in [provider] (the same keys as a [[providers]] entry); move them there",
                moved.join(", "),
                if moved.len() == 1 { "is" } else { "are" }
            ));
        }
        Ok(())
    }
}

/// Token calls on these paths are oauth-shim's own legacy routes, so a provider's token URL
/// must not use them.
fn check_token_path(key: &str, url: &str) -> Result<(), ConfigError> {
    let path = Url::parse(url).map(|u| u.path().to_owned()).unwrap_or_default();
    if path == "/oauth/access_token" || path == "/oauth/authorize" {
        return Err(ConfigError(format!("{key} {url:?}: the path {path} is oauth-shim's own legacy route")));
    }
    Ok(())
}

fn check_lookup(key: &str, lookup: &LegacyFieldsConfig) -> Result<(), ConfigError> {
    check_url(&format!("{key}.url"), &lookup.url)?;
    let pointers = lookup.pointers();
    if pointers.iter().all(Option::is_none) {
        return Err(ConfigError(format!("{key}: name at least one field and its JSON pointer")));
    }
    for pointer in pointers.into_iter().flatten() {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(ConfigError(format!(
                "{key}: {pointer:?} is not an RFC 6901 JSON pointer (it starts with '/')"
            )));
        }
    }
    if lookup.cache_max_entries == 0 {
        return Err(ConfigError(format!("{key}.cache_max_entries must be greater than 0")));
    }
    Ok(())
}

/// `log.level` must be a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or
/// comma-separated `target=level` directives. A bare word such as `verbose` would otherwise be
/// read as a target name and switch every other log line off.
fn check_log_level(level: &str) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bad = |why: &str| {
        ConfigError(format!(
            "log.level {level:?} {why}: use one of error, warn, info, debug, trace, off, or target=level directives"
        ))
    };
    let mut any = false;
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        any = true;
        let lvl = directive.rsplit_once('=').map_or(directive, |(_, l)| l).trim();
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(lvl)) {
            return Err(bad(&format!("names no level ({directive:?})")));
        }
    }
    if !any {
        return Err(bad("is empty"));
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| bad(&format!("is not a filter ({e})")))
}

fn parse_redirect(id: &str, key: &str, uri: &str) -> Result<(), ConfigError> {
    Url::parse(uri)
        .map(|_| ())
        .map_err(|e| ConfigError(format!("client {id:?}: {key} {uri:?} is not a URL: {e}")))
}

/// Upstream URLs must be http(s); plain http only to a loopback address.
pub(super) fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError(format!("{key} {value:?} is not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => {
            Err(ConfigError(format!("{key} {value:?} uses plain http to a non-loopback host; use https")))
        }
        other => Err(ConfigError(format!("{key} {value:?} has unsupported scheme {other:?}"))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}
