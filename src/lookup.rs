//! The legacy-fields lookup (docs/protocol.md#legacy-fields-lookup): when a provider's token answer
//! lacks `organizer_key`, `account_key`, `account_type`, `firstName`, `lastName` or `email` and the
//! provider names a lookup for them, the legacy token call `GET`s the configured URL with the new
//! access token as `Bearer` and takes each field from the answer by an RFC 6901 JSON pointer.
//!
//! Made only when a field it can fill is missing, at most once per access token (answers are
//! cached under an HMAC of the token, never the token, for the token's life), and within the
//! token call's deadline. A failure leaves the fields out: the token answer is still served,
//! and the failure is logged and counted.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{ACCEPT, AUTHORIZATION};
use http::{HeaderValue, Method, Request, Uri};
use moka::Expiry;
use moka::future::Cache;
use rand::RngCore;
use serde_json::Value;
use sha2::Sha256;

use crate::config::{ConfigError, LegacyFieldsConfig};
use crate::oauth::Secret;
use crate::oauth::{LEGACY_FIELDS, V2Token};
use crate::ops::metrics::LookupCounters;
use crate::upstream::Upstream;

/// How long a lookup answer is kept when the token states no lifetime.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

type Values = [Option<String>; LEGACY_FIELDS.len()];

/// One provider's lookup: its config, and the answers of recent tokens.
pub struct Lookup {
    config: LegacyFieldsConfig,
    url: Uri,
    /// HMAC-SHA256 under a per-process random key; the cache key of an access token.
    mac: Hmac<Sha256>,
    cache: Cache<[u8; 32], Arc<Found>>,
    /// Its counters in the metrics, attached by the app ([`Lookup::attach`]).
    counters: OnceLock<LookupCounters>,
}

/// The fields one lookup answer gave, and how long its token lives.
struct Found {
    values: Values,
    lifetime: Duration,
}

struct TokenLife;

impl Expiry<[u8; 32], Arc<Found>> for TokenLife {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        found: &Arc<Found>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(found.lifetime)
    }
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup").field("url", &self.config.url).finish_non_exhaustive()
    }
}

impl Lookup {
    pub fn new(config: &LegacyFieldsConfig) -> Result<Self, ConfigError> {
        let url: Uri = config
            .url
            .parse()
            .map_err(|_| ConfigError(format!("legacy_fields.url {:?} is not a valid URI", config.url)))?;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let cache = Cache::builder().max_capacity(config.cache_max_entries).expire_after(TokenLife).build();
        Ok(Self {
            config: config.clone(),
            url,
            mac: crate::crypto::keyed_mac(&secret),
            cache,
            counters: OnceLock::new(),
        })
    }

    /// Count this lookup's results in `counters` (the first counters attached stay).
    pub fn attach(&self, counters: impl FnOnce() -> LookupCounters) {
        self.counters.get_or_init(counters);
    }

    fn count(&self, result: impl Fn(&LookupCounters) -> &prometheus_client::metrics::counter::Counter) {
        if let Some(c) = self.counters.get() {
            result(c).inc();
        }
    }

    pub fn config(&self) -> &LegacyFieldsConfig {
        &self.config
    }

    /// Whether this answer lacks a field the lookup can fill.
    pub fn wants(&self, token: &V2Token) -> bool {
        token
            .missing_legacy_fields()
            .iter()
            .zip(self.config.pointers())
            .any(|(missing, p)| *missing && p.is_some())
    }

    fn key(&self, access_token: &Secret) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(access_token.expose().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// `token` with the fields it lacks filled from the lookup (cached, or fetched before
    /// `deadline`); `token` unchanged if the lookup fails.
    pub async fn fill(
        &self,
        client: &Upstream,
        token: &V2Token,
        deadline: tokio::time::Instant,
        max_bytes: usize,
        provider: &str,
    ) -> V2Token {
        let key = self.key(token.access_token());
        if let Some(found) = self.cache.get(&key).await {
            self.count(|c| &c.cached);
            return token.with_legacy_fields(&found.values);
        }
        let fetched =
            tokio::time::timeout_at(deadline, self.fetch(client, token.access_token(), max_bytes)).await;
        let why = match fetched {
            Ok(Ok(doc)) => {
                let values = self.extract(&doc);
                self.count(|c| &c.ok);
                let lifetime = token.lifetime().unwrap_or(DEFAULT_LIFETIME);
                if !lifetime.is_zero() {
                    self.cache.insert(key, Arc::new(Found { values: values.clone(), lifetime })).await;
                }
                return token.with_legacy_fields(&values);
            }
            Ok(Err(why)) => why,
            Err(_) => "no answer within the token call's deadline",
        };
        self.count(|c| &c.failed);
        tracing::warn!(provider, reason = why, "legacy fields lookup failed; answering without those fields");
        token.clone()
    }

    async fn fetch(
        &self,
        client: &Upstream,
        access_token: &Secret,
        max: usize,
    ) -> Result<Value, &'static str> {
        let mut req = Request::new(Bytes::new());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = self.url.clone();
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", access_token.expose()))
            .map_err(|_| "the access token cannot be sent in a header")?;
        bearer.set_sensitive(true);
        req.headers_mut().insert(AUTHORIZATION, bearer);
        req.headers_mut().insert(ACCEPT, HeaderValue::from_static("application/json"));
        let resp = client.request_full(req).await.map_err(|e| {
            tracing::debug!(error = %e, "legacy fields lookup could not reach the upstream");
            "the lookup URL could not be reached"
        })?;
        if !resp.status().is_success() {
            return Err("the lookup URL answered with an error status");
        }
        let buf = crate::body::read_limited(resp.into_body(), max).await.map_err(|e| match e {
            crate::body::ReadError::TooLarge => "the lookup answer is too large",
            crate::body::ReadError::Body => "the lookup answer could not be read",
        })?;
        serde_json::from_slice(&buf).map_err(|_| "the lookup answer is not JSON")
    }

    /// Each configured field's value: a string as it is, a number as its decimal text (legacy
    /// fields were strings); anything else, or nothing at the pointer, leaves the field out.
    fn extract(&self, doc: &Value) -> Values {
        self.config.pointers().map(|p| match doc.pointer(p?)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_by_rfc6901_pointer() {
        let cfg = LegacyFieldsConfig {
            url: "https://api.example.com/me".into(),
            organizer_key: Some("/key".into()),
            account_key: Some("/accounts/0/key".into()),
            first_name: Some("/name~1given".into()),
            email: Some("/missing".into()),
            account_type: Some("/flag".into()),
            ..Default::default()
        };
        let lookup = Lookup::new(&cfg).unwrap();
        let doc =
            serde_json::json!({"key": 1234, "accounts": [{"key": "ak"}], "name/given": "Jon", "flag": true});
        assert_eq!(
            lookup.extract(&doc),
            [Some("1234".into()), Some("ak".into()), None, Some("Jon".into()), None, None]
        );
    }
}
