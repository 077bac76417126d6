//! The process's metrics registry and the recorders the request path calls: requests by route,
//! provider, client, outcome and status class; the request and upstream durations; in-flight
//! requests and open connections; legacy-fields lookups; token-continuity sessions and
//! refreshes; config reloads; build info. The admin listener renders it ([`Metrics::render`]).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::fnv::Fnv;
use super::histograms::{RequestDurations, UpstreamDurations};
use super::labels::{
    BuildLabels, CLASSES, CapLabels, ListenerLabels, LookupLabels, ProviderLabels, ReasonLabels,
    ReloadLabels, RequestLabels, TriggerLabels, status_class,
};
use super::render::{Format, exposition};
use crate::redis::RedisStats;
use crate::refresh::RefreshStats;

/// One provider's legacy-fields lookup counters (see [`Metrics::lookup_counters`]).
#[derive(Clone)]
pub struct LookupCounters {
    pub ok: Counter,
    pub failed: Counter,
    pub cached: Counter,
}

/// A request counter's labels other than the client, all from fixed sets.
type Slot = (&'static str, &'static str, &'static str);

/// Request counter handles already resolved in `requests`, by client label, then by
/// (route, outcome, status class) and provider: a request increments its counter without
/// building an owned label set or hashing it into the family. Bounded like the labels themselves.
type RequestHandles = RwLock<HashMap<Box<str>, Vec<(Slot, Arc<str>, Counter)>, BuildHasherDefault<Fnv>>>;

/// The process's metrics. Cheap to clone (every metric is shared behind an `Arc`).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    request_handles: Arc<RequestHandles>,
    upstream: UpstreamDurations,
    durations: RequestDurations,
    in_flight: Gauge,
    connections: Gauge,
    parked: Gauge,
    reloads: Family<ReloadLabels, Counter>,
    reload_ok: Gauge,
    reload_time: Gauge<f64, AtomicU64>,
    generation: Gauge,
    lookups: Family<LookupLabels, Counter>,
    expires_defaulted: Family<ProviderLabels, Counter>,
    continuity_sessions: Gauge,
    continuity_refreshes: Family<TriggerLabels, Counter>,
    continuity_refresh_failures: Family<ReasonLabels, Counter>,
    continuity_rejected: Counter,
    continuity_store_errors: Counter,
    continuity_refused_logins: Family<CapLabels, Counter>,
    tls_not_after: Family<ListenerLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let in_flight = Gauge::default();
        let connections = Gauge::default();
        let parked = Gauge::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let reload_ok = Gauge::default();
        let generation = Gauge::default();
        let lookups = Family::<LookupLabels, Counter>::default();
        let expires_defaulted = Family::<ProviderLabels, Counter>::default();
        let reload_time = Gauge::<f64, AtomicU64>::default();
        reload_ok.set(1);
        generation.set(1);
        let continuity_sessions = Gauge::default();
        let continuity_refreshes = Family::<TriggerLabels, Counter>::default();
        let continuity_refresh_failures = Family::<ReasonLabels, Counter>::default();
        let continuity_rejected = Counter::default();
        let continuity_store_errors = Counter::default();
        let continuity_refused_logins = Family::<CapLabels, Counter>::default();
        reload_time.set(unix_now());
        let tls_not_after = Family::<ListenerLabels, Gauge>::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                target_os: std::env::consts::OS,
                target_arch: std::env::consts::ARCH,
                profile: if cfg!(debug_assertions) { "debug" } else { "release" },
            })
            .set(1);
        // The families appear in a scrape in the order they are registered here.
        let mut r = Registry::with_prefix("oauth_shim");
        r.register("build_info", "oauth-shim's version and build; the value is always 1", build);
        let durations = RequestDurations::registered(&mut r);
        r.register(
            "requests",
            "Requests answered, by route kind, client (configured ids only), outcome and status class",
            requests.clone(),
        );
        let upstream = UpstreamDurations::registered(&mut r);
        r.register(
            "legacy_fields_lookups",
            "Legacy-fields lookups, by provider and result (ok, failed, cached)",
            lookups.clone(),
        );
        r.register(
            "legacy_expires_in_defaulted",
            "Legacy answers given legacy.default_expires_in because the upstream stated no expires_in, by provider",
            expires_defaulted.clone(),
        );
        r.register("in_flight_requests", "Requests being handled now", in_flight.clone());
        r.register("open_connections", "Client connections open on the proxy port", connections.clone());
        r.register(
            "parked_connections",
            "Idle HTTP/1.1 client connections parked without buffers (server.park_after)",
            parked.clone(),
        );
        r.register("config_reloads", "Config reload attempts, by result", reloads.clone());
        r.register(
            "config_last_reload_success",
            "1 if the last config reload succeeded (or none was tried), 0 if it failed",
            reload_ok.clone(),
        );
        r.register(
            "config_generation",
            "Config version in force: 1 at start, +1 per applied reload",
            generation.clone(),
        );
        r.register(
            "config_last_reload_success_timestamp_seconds",
            "When the config in force was loaded (start or the last applied reload), Unix time",
            reload_time.clone(),
        );
        r.register(
            "tls_cert_not_after_seconds",
            "When the certificate a TLS listener serves to new handshakes expires, Unix time, by listener (proxy, admin)",
            tls_not_after.clone(),
        );
        r.register(
            "continuity_sessions",
            "Live token-continuity sessions in the store (as of the last write or sweep)",
            continuity_sessions.clone(),
        );
        r.register(
            "continuity_refreshes",
            "Upstream refreshes made for continuity sessions: background (token still valid), inline (expired) or retry (after a 401)",
            continuity_refreshes.clone(),
        );
        r.register(
            "continuity_refresh_failures",
            "Failed continuity refreshes: invalid_grant (the session ended) or upstream",
            continuity_refresh_failures.clone(),
        );
        r.register(
            "continuity_refused_logins",
            "Token calls of continuity clients refused before the upstream call by a session cap: all, client or user",
            continuity_refused_logins.clone(),
        );
        r.register(
            "continuity_rejected_tokens",
            "API calls refused because their minted token was unknown, revoked or expired",
            continuity_rejected.clone(),
        );
        r.register(
            "continuity_store_errors",
            "Continuity requests the session store (file or Redis) failed; answered temporarily_unavailable",
            continuity_store_errors.clone(),
        );
        Self {
            registry: Arc::new(r),
            requests,
            request_handles: Arc::default(),
            upstream,
            durations,
            in_flight,
            connections,
            parked,
            reloads,
            reload_ok,
            reload_time,
            generation,
            lookups,
            expires_defaulted,
            continuity_sessions,
            continuity_refreshes,
            continuity_refresh_failures,
            continuity_rejected,
            continuity_store_errors,
            continuity_refused_logins,
            tls_not_after,
        }
    }

    pub(crate) fn continuity_sessions(&self, n: u64) {
        self.continuity_sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn continuity_refresh(&self, trigger: &'static str) {
        self.continuity_refreshes.get_or_create(&TriggerLabels { trigger }).inc();
    }

    pub(crate) fn continuity_refresh_failure(&self, reason: &'static str) {
        self.continuity_refresh_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub(crate) fn continuity_store_error(&self) {
        self.continuity_store_errors.inc();
    }

    /// A login refused by the session cap `cap` (`all`, `client` or `user`).
    pub(crate) fn continuity_refused_login(&self, cap: &'static str) {
        self.continuity_refused_logins.get_or_create(&CapLabels { cap }).inc();
    }

    pub(crate) fn continuity_rejected(&self) {
        self.continuity_rejected.inc();
    }

    /// The legacy-fields lookup counters of `provider`.
    pub(crate) fn lookup_counters(&self, provider: &str) -> LookupCounters {
        let get =
            |result| self.lookups.get_or_create(&LookupLabels { provider: provider.into(), result }).clone();
        LookupCounters { ok: get("ok"), failed: get("failed"), cached: get("cached") }
    }

    /// Count a legacy answer of `provider` given `legacy.default_expires_in`.
    pub(crate) fn legacy_expires_in_defaulted(&self, provider: &str) {
        self.expires_defaulted.get_or_create(&ProviderLabels { provider: provider.into() }).inc();
    }

    /// Record how long a request took until its answer's head, by route (an index into
    /// [`ROUTES`](super::labels::ROUTES); one out of range is not recorded) and status.
    pub(crate) fn request_duration(&self, route: usize, status: u16, took: Duration) {
        self.durations.observe(route, status, took);
    }

    /// Count one answered request. `client` must already be bounded (a configured id,
    /// `unknown` or `none`), and so must `provider` (a configured provider's name).
    pub(crate) fn request(
        &self,
        route: &'static str,
        provider: &Arc<str>,
        client: &str,
        outcome: &'static str,
        status: u16,
    ) {
        let status_class = CLASSES[status_class(status)];
        let slot = (route, outcome, status_class);
        {
            let map = self.request_handles.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, _, counter)) =
                map.get(client).and_then(|h| h.iter().find(|(s, p, _)| *s == slot && same(p, provider)))
            {
                counter.inc();
                return;
            }
        }
        let mut map = self.request_handles.write().unwrap_or_else(PoisonError::into_inner);
        let handles = map.entry(client.into()).or_default();
        if let Some((_, _, counter)) = handles.iter().find(|(s, p, _)| *s == slot && same(p, provider)) {
            counter.inc();
            return;
        }
        let labels = RequestLabels {
            route,
            provider: provider.to_string(),
            client: client.to_owned(),
            outcome,
            status_class,
        };
        let counter = self.requests.get_or_create(&labels).clone();
        counter.inc();
        handles.push((slot, Arc::clone(provider), counter));
    }

    /// Record how long an upstream call took; `call` is `token` or `pass`.
    pub(crate) fn upstream_latency(&self, call: &'static str, took: Duration) {
        self.upstream.observe(call, took);
    }

    /// The histogram [`Metrics::upstream_latency`] records a call kind in, as a handle of its
    /// own (one `Arc`): what a detachable upstream call keeps instead of the whole `Metrics`.
    pub(crate) fn upstream_histogram(&self, call: &'static str) -> Histogram {
        self.upstream.histogram(call)
    }

    /// Hold the returned guard while a request is handled.
    pub(crate) fn in_flight(&self) -> GaugeGuard {
        GaugeGuard::new(&self.in_flight)
    }

    /// Requests being handled now.
    pub fn in_flight_now(&self) -> i64 {
        self.in_flight.get()
    }

    /// Hold the returned guard while a client connection is open.
    pub(crate) fn connection_opened(&self) -> GaugeGuard {
        GaugeGuard::new(&self.connections)
    }

    /// The end of validity of the certificate `listener` (`proxy`, `admin`) now serves.
    pub(crate) fn tls_cert(&self, listener: &'static str, not_after: i64) {
        self.tls_not_after.get_or_create(&ListenerLabels { listener }).set(not_after);
    }

    /// Client connections parked now.
    pub fn parked_now(&self) -> i64 {
        self.parked.get()
    }

    /// Hold the returned guard while a client connection is parked.
    pub(crate) fn connection_parked(&self) -> GaugeGuard {
        GaugeGuard::new(&self.parked)
    }

    pub(crate) fn reloaded(&self, ok: bool, generation: u64) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
        self.reload_ok.set(i64::from(ok));
        self.generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
        if ok {
            self.reload_time.set(unix_now());
        }
    }

    /// The exposition text in `format`, with the refresh cache's counters, the shared state's
    /// (Redis backend only) and the process metrics read at scrape time.
    pub(crate) fn render(&self, refresh: RefreshStats, state: Option<RedisStats>, format: Format) -> String {
        exposition(&self.registry, refresh, state, format)
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The same provider name: by pointer for the runtime the handle was made under (the common
/// case, no compare of bytes), else by content (a provider kept across a reload).
fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

/// Increments a gauge now and decrements it when dropped.
pub(crate) struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
