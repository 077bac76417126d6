//! Providers: the named sets of upstream endpoints one oauth-shim fronts
//! (docs/protocol.md#providers). `[provider]` is the default provider; `[[providers]]` add more,
//! each selected by the request's `Host`. Each has its own clients, upstream pool, refresh-cache
//! scope, metrics label and migration-report rows. Built once per config version, as part of
//! [`crate::snapshot::Snapshot`].

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use http::{HeaderValue, Uri};

use super::base::Base;
use super::clients::build_client;
use crate::config::{
    ClientAuth, ClientConfig, Config, ConfigError, DEFAULT_PROVIDER, LegacyFieldsConfig, WhenUnavailable,
};
use crate::lookup::Lookup;
use crate::oauth::{BasicAuthEncoding, basic_auth_header_with};
use crate::ops::metrics::Fnv;
use crate::refresh::Scope;
use crate::upstream::Upstream;

/// One provider as the request path uses it.
pub struct Provider {
    /// `default` for `[provider]`, else the `[[providers]]` name (also its metrics label).
    pub name: Arc<str>,
    pub token_url: Uri,
    /// The token URL's path: a `POST` there is a v2 token call (normalised when it needs it).
    pub token_path: String,
    /// The token URL's scheme and host, for v2 token calls forwarded unchanged.
    pub token_base: Base,
    pub authorize_url: String,
    pub api_base: Base,
    pub client_auth: ClientAuth,
    pub encoding: BasicAuthEncoding,
    /// What its refreshes do while no Redis master answers (resolved from config).
    pub when_unavailable: WhenUnavailable,
    /// The legacy-fields lookup, if configured.
    pub lookup: Option<Arc<Lookup>>,
    /// This provider's upstream connections for pass-through.
    pub api_client: Upstream,
    /// Its connections for token calls (legacy and v2) and legacy-fields lookups only: a token
    /// call never goes out on a connection that carried another client's API call.
    pub token_client: Upstream,
    /// Client id -> (its config, the `Authorization` header sent upstream on its behalf).
    /// FNV: a read-only map of configured ids, where SipHash's setup dominated the lookup.
    clients: HashMap<String, (ClientConfig, HeaderValue), BuildHasherDefault<Fnv>>,
}

impl Provider {
    /// The configured client of this provider with exactly this id (byte for byte), with the
    /// Basic header oauth-shim sends upstream on its behalf.
    pub fn client(&self, id: &str) -> Option<(&ClientConfig, &HeaderValue)> {
        self.clients.get(id).map(|(c, h)| (c, h))
    }

    /// The refresh-cache scope of `client_id`'s refresh tokens at this provider, for both token
    /// routes.
    pub(crate) fn refresh_scope<'a>(&'a self, client_id: &'a str) -> Scope<'a> {
        Scope::new(&self.name, client_id).when_unavailable(self.when_unavailable)
    }
}

/// The endpoints of one provider as configured, whichever table they came from.
struct Endpoints<'a> {
    name: &'a str,
    urls: [&'a str; 3],
    client_auth: ClientAuth,
    encoding: BasicAuthEncoding,
    legacy_fields: Option<&'a LegacyFieldsConfig>,
    when_unavailable: WhenUnavailable,
}

fn endpoints(config: &Config) -> Vec<Endpoints<'_>> {
    let u = &config.provider;
    let mut out = vec![Endpoints {
        name: DEFAULT_PROVIDER,
        urls: u.urls(),
        client_auth: u.client_auth,
        encoding: u.basic_auth_encoding,
        legacy_fields: u.legacy_fields.as_ref(),
        when_unavailable: config.when_unavailable(u),
    }];
    out.extend(config.providers.iter().map(|p| Endpoints {
        name: &p.name,
        urls: p.urls(),
        client_auth: p.client_auth,
        encoding: p.basic_auth_encoding,
        legacy_fields: p.legacy_fields.as_ref(),
        when_unavailable: config.when_unavailable(p),
    }));
    out
}

/// Build every provider of `config`, the default first. A provider that `previous` also had
/// (same name) keeps its pool, and its lookup cache when the lookup is configured the same.
pub(crate) fn build(config: &Config, previous: Option<&[Provider]>) -> Result<Vec<Provider>, ConfigError> {
    endpoints(config)
        .into_iter()
        .map(|e| {
            let old = previous.and_then(|ps| ps.iter().find(|p| *p.name == *e.name));
            let bad = |key: &str| ConfigError(format!("provider {:?}: {key} is not a valid URI", e.name));
            let [token, authorize, api] = e.urls;
            let token_url: Uri = token.parse().map_err(|_| bad("token_url"))?;
            let token_base = match (token_url.scheme_str(), token_url.authority()) {
                (Some(scheme), Some(authority)) => Base::parse(&format!("{scheme}://{authority}")),
                _ => None,
            }
            .ok_or_else(|| bad("token_url"))?;
            let api_base = Base::parse(api).ok_or_else(|| bad("api_base"))?;
            let lookup = match e.legacy_fields {
                None => None,
                Some(cfg) => match old.and_then(|p| p.lookup.as_ref()).filter(|l| l.config() == cfg) {
                    Some(kept) => Some(Arc::clone(kept)),
                    None => Some(Arc::new(Lookup::new(cfg)?)),
                },
            };
            let clients = config
                .clients
                .iter()
                .filter(|c| c.provider_name() == e.name)
                .map(|c| {
                    let auth = basic_auth_header_with(&c.id, c.secret(), e.encoding);
                    (c.id.clone(), (c.clone(), auth))
                })
                .collect();
            Ok(Provider {
                name: Arc::from(e.name),
                token_path: token_url.path().to_owned(),
                token_url,
                token_base,
                authorize_url: authorize.to_owned(),
                api_base,
                client_auth: e.client_auth,
                encoding: e.encoding,
                when_unavailable: e.when_unavailable,
                lookup,
                api_client: old.map_or_else(|| build_client(&config.upstream), |p| p.api_client.clone()),
                token_client: old.map_or_else(|| build_client(&config.upstream), |p| p.token_client.clone()),
                clients,
            })
        })
        .collect()
}

/// `Host` (lowercase, no trailing dot) -> provider index, for every provider but the default.
pub(crate) fn host_table(config: &Config) -> Vec<(String, usize)> {
    config
        .providers
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.hosts.iter().map(move |h| (h.clone(), i + 1)))
        .collect()
}

/// The index of the provider a request's host selects (as `app::host` read it: the target's
/// authority or the `Host` header), port and trailing dot ignored, case-insensitive; 0, the
/// default, when no provider lists it.
pub(crate) fn select(hosts: &[(String, usize)], host: Option<&[u8]>) -> usize {
    let Some(host) = host.filter(|_| !hosts.is_empty()) else { return 0 };
    let host = host_name(host);
    hosts.iter().find(|(h, _)| h.as_bytes().eq_ignore_ascii_case(host)).map_or(0, |(_, i)| *i)
}

/// `host[:port]` or `[v6]:port` without the port and without a trailing dot.
pub(crate) fn host_name(host: &[u8]) -> &[u8] {
    let mut name = match host.first() {
        Some(b'[') => host.iter().position(|&b| b == b']').map_or(host, |end| &host[..=end]),
        _ => host.split(|&b| b == b':').next().unwrap_or(host),
    };
    while let Some(shorter) = name.strip_suffix(b".") {
        name = shorter;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_by_host_ignoring_port_and_case() {
        let hosts = vec![("authentication.logmeininc.com".to_owned(), 1), ("[::1]".to_owned(), 2)];
        assert_eq!(select(&hosts, Some(b"authentication.logmeininc.com")), 1);
        assert_eq!(select(&hosts, Some(b"Authentication.LogMeInInc.com:8443")), 1);
        assert_eq!(select(&hosts, Some(b"authentication.logmeininc.com.")), 1);
        assert_eq!(select(&hosts, Some(b"[::1]:8080")), 2);
        assert_eq!(select(&hosts, Some(b"api.getgo.com")), 0);
        assert_eq!(select(&hosts, None), 0);
        assert_eq!(select(&[], Some(b"authentication.logmeininc.com")), 0);
    }
}
