//! Prometheus metrics served at the admin listener's `GET /metrics`: requests by route, client,
//! outcome and status class; request duration by route and status class; upstream call
//! duration; in-flight requests; open connections; refresh cache counters; shared-state
//! (Redis) fallbacks and outages; token-continuity sessions and refreshes; config reloads; build
//! info; the process's CPU, memory and file descriptors. Client labels are bounded: only
//! configured client ids appear, every other id folds into `unknown`.
//!
//! The text is OpenMetrics as `prometheus-client` writes it; [`Format::Prometheus`] rewrites it
//! into the classic 0.0.4 text format (a counter's family is named with its `_total`, no
//! `# UNIT`, no `# EOF`), so parsers of either format read every family with its type.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::refresh::RefreshStats;
use crate::state::redis::RedisStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    provider: String,
    client: String,
    outcome: &'static str,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    call: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    provider: String,
    result: &'static str,
}

/// One provider's legacy-fields lookup counters (see [`Metrics::lookup_counters`]).
#[derive(Clone)]
pub struct LookupCounters {
    pub ok: Counter,
    pub failed: Counter,
    pub cached: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    route: &'static str,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    target_os: &'static str,
    target_arch: &'static str,
    profile: &'static str,
}

fn latency_histogram() -> Histogram {
    // 5 ms .. ~10 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

fn request_histogram() -> Histogram {
    // 0.5 ms .. ~16 s: a cached refresh or a pass-through on a LAN answers in a millisecond.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The route labels of the request duration histogram, in the order of its handles (the order
/// of `app::Route`).
pub const ROUTES: [&str; 5] = ["token", "authorize", "pass", "rejected", "v2_token"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The exposition format a scrape asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`, Prometheus' classic text format.
    Prometheus,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, else the classic text format.
    pub fn from_accept(accept: Option<&str>) -> Self {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// FNV-1a: the handle caches below are keyed by short, bounded strings (configured client ids),
/// where SipHash's setup dominates the lookup.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A request counter's labels other than the client, all from fixed sets.
type Slot = (&'static str, &'static str, &'static str);

/// Request counter handles already resolved in `requests`, by client label, then by
/// (route, outcome, status class) and provider: a request increments its counter without building an owned
/// label set or hashing it into the family. Bounded like the labels themselves.
type RequestHandles = RwLock<HashMap<Box<str>, Vec<(Slot, Arc<str>, Counter)>, BuildHasherDefault<Fnv>>>;

/// The process's metrics. Cheap to clone (every metric is shared behind an `Arc`).
#[derive(Clone)]
pub struct Metrics {
    registry: std::sync::Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    request_handles: Arc<RequestHandles>,
    upstream: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    /// The `token` and `pass` histograms, resolved on first use.
    upstream_handles: Arc<[OnceLock<Histogram>; 2]>,
    /// Request duration by route and status class, handles resolved up front: a request
    /// observes without hashing a label set.
    durations: Arc<[[Histogram; 5]; ROUTES.len()]>,
    in_flight: Gauge,
    connections: Gauge,
    reloads: Family<ReloadLabels, Counter>,
    reload_ok: Gauge,
    reload_time: Gauge<f64, std::sync::atomic::AtomicU64>,
    generation: Gauge,
    lookups: Family<LookupLabels, Counter>,
    continuity_sessions: Gauge,
    continuity_refreshes: Family<TriggerLabels, Counter>,
    continuity_refresh_failures: Family<ReasonLabels, Counter>,
    continuity_rejected: Counter,
    continuity_store_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let upstream = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let in_flight = Gauge::default();
        let connections = Gauge::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let reload_ok = Gauge::default();
        let generation = Gauge::default();
        let lookups = Family::<LookupLabels, Counter>::default();
        let reload_time = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        reload_ok.set(1);
        generation.set(1);
        let continuity_sessions = Gauge::default();
        let continuity_refreshes = Family::<TriggerLabels, Counter>::default();
        let continuity_refresh_failures = Family::<ReasonLabels, Counter>::default();
        let continuity_rejected = Counter::default();
        let continuity_store_errors = Counter::default();
        reload_time.set(unix_now());
        let duration_family = Family::<DurationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            request_histogram as fn() -> Histogram,
        );
        let durations = Arc::new(ROUTES.map(|route| {
            CLASSES.map(|status_class| {
                duration_family.get_or_create(&DurationLabels { route, status_class }).clone()
            })
        }));
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                target_os: std::env::consts::OS,
                target_arch: std::env::consts::ARCH,
                profile: if cfg!(debug_assertions) { "debug" } else { "release" },
            })
            .set(1);
        let mut r = Registry::with_prefix("oauth_shim");
        r.register("build_info", "oauth-shim's version and build; the value is always 1", build);
        r.register(
            "request_duration_seconds",
            "Time from a request's arrival until its answer's head was ready, by route kind and status class",
            duration_family,
        );
        r.register(
            "requests",
            "Requests answered, by route kind, client (configured ids only), outcome and status class",
            requests.clone(),
        );
        r.register(
            "upstream_duration_seconds",
            "Time until the upstream answered: token calls (whole call) and pass-through (headers)",
            upstream.clone(),
        );
        r.register(
            "legacy_fields_lookups",
            "Legacy-fields lookups, by provider and result (ok, failed, cached)",
            lookups.clone(),
        );
        r.register("in_flight_requests", "Requests being handled now", in_flight.clone());
        r.register("open_connections", "Client connections open on the proxy port", connections.clone());
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
            registry: std::sync::Arc::new(r),
            requests,
            request_handles: Arc::default(),
            upstream,
            upstream_handles: Arc::default(),
            durations,
            in_flight,
            connections,
            reloads,
            reload_ok,
            reload_time,
            generation,
            lookups,
            continuity_sessions,
            continuity_refreshes,
            continuity_refresh_failures,
            continuity_rejected,
            continuity_store_errors,
        }
    }

    pub fn continuity_sessions(&self, n: u64) {
        self.continuity_sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn continuity_refresh(&self, trigger: &'static str) {
        self.continuity_refreshes.get_or_create(&TriggerLabels { trigger }).inc();
    }

    pub fn continuity_refresh_failure(&self, reason: &'static str) {
        self.continuity_refresh_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn continuity_store_error(&self) {
        self.continuity_store_errors.inc();
    }

    pub fn continuity_rejected(&self) {
        self.continuity_rejected.inc();
    }

    /// The legacy-fields lookup counters of `provider`.
    pub fn lookup_counters(&self, provider: &str) -> LookupCounters {
        let get =
            |result| self.lookups.get_or_create(&LookupLabels { provider: provider.into(), result }).clone();
        LookupCounters { ok: get("ok"), failed: get("failed"), cached: get("cached") }
    }

    /// Record how long a request took until its answer's head, by route (an index into
    /// [`ROUTES`]; one out of range is not recorded) and status.
    pub fn request_duration(&self, route: usize, status: u16, took: Duration) {
        if let Some(by_class) = self.durations.get(route) {
            by_class[status_class(status)].observe(took.as_secs_f64());
        }
    }

    /// Count one answered request. `client` must already be bounded (a configured id,
    /// `unknown` or `none`), and so must `provider` (a configured provider's name).
    pub fn request(
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
    pub fn upstream_latency(&self, call: &'static str, took: Duration) {
        let seconds = took.as_secs_f64();
        match self.upstream_slot(call) {
            Some(histogram) => histogram.observe(seconds),
            None => self.upstream.get_or_create(&UpstreamLabels { call }).observe(seconds),
        }
    }

    /// The histogram [`Metrics::upstream_latency`] records a call kind in, as a handle of its
    /// own (one `Arc`): what a detachable upstream call keeps instead of the whole `Metrics`.
    pub fn upstream_histogram(&self, call: &'static str) -> Histogram {
        match self.upstream_slot(call) {
            Some(histogram) => histogram.clone(),
            None => self.upstream.get_or_create(&UpstreamLabels { call }).clone(),
        }
    }

    /// The resolved handle for the two call kinds every request uses.
    fn upstream_slot(&self, call: &'static str) -> Option<&Histogram> {
        let slot = match call {
            "token" => &self.upstream_handles[0],
            "pass" => &self.upstream_handles[1],
            _ => return None,
        };
        Some(slot.get_or_init(|| self.upstream.get_or_create(&UpstreamLabels { call }).clone()))
    }

    /// Hold the returned guard while a request is handled.
    pub fn in_flight(&self) -> GaugeGuard {
        GaugeGuard::new(&self.in_flight)
    }

    /// Requests being handled now.
    pub fn in_flight_now(&self) -> i64 {
        self.in_flight.get()
    }

    /// Hold the returned guard while a client connection is open.
    pub fn connection_opened(&self) -> GaugeGuard {
        GaugeGuard::new(&self.connections)
    }

    pub fn reloaded(&self, ok: bool, generation: u64) {
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
    pub fn render(&self, refresh: RefreshStats, state: Option<RedisStats>, format: Format) -> String {
        let mut scrape = Registry::with_prefix("oauth_shim_refresh_cache");
        for (name, help, value) in [
            ("hits", "Refreshes answered from the cache", refresh.hits),
            ("misses", "Refreshes that started an upstream call", refresh.misses),
            ("coalesced", "Refreshes that waited on an upstream call already in flight", refresh.coalesced),
            ("upstream_errors", "Upstream refresh calls that failed", refresh.upstream_errors),
        ] {
            scrape.register(name, help, ConstCounter::new(value));
        }
        let mut shared = Registry::with_prefix("oauth_shim_state");
        if let Some(state) = state {
            shared.register(
                "fallback",
                "Refreshes served from in-process state because Redis was unavailable",
                ConstCounter::new(state.fallbacks),
            );
            shared.register(
                "outages",
                "Redis outages seen (each logged once)",
                ConstCounter::new(state.outages),
            );
            let up = Gauge::<i64>::default();
            up.set(i64::from(state.up));
            shared.register("redis_up", "1 while Redis is used, 0 while this replica falls back", up);
        }
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &scrape);
        let _ = encode_registry(&mut out, &shared);
        let _ = encode_registry(&mut out, &process::registry());
        let _ = encode_eof(&mut out);
        match format {
            Format::OpenMetrics => out,
            Format::Prometheus => to_prometheus_text(&out),
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// OpenMetrics text as the classic 0.0.4 format reads it: a counter family's `# HELP` and
/// `# TYPE` carry the sample name (`_total`), and `# UNIT` and `# EOF` go. Samples are the same.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The process's own metrics, the names Prometheus client libraries use: CPU seconds, resident
/// and virtual memory, open and maximum file descriptors, threads, start time. Read from
/// `/proc` by the `procfs` crate at scrape time; a figure that cannot be read is left out.
mod process {
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::registry::Registry;

    #[cfg(target_os = "linux")]
    pub fn registry() -> Registry {
        let mut r = Registry::with_prefix("process");
        let Ok(me) = procfs::process::Process::myself() else { return r };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu = (stat.utime + stat.stime) as f64 / ticks;
            r.register(
                "cpu_seconds",
                "Total user and system CPU time spent in seconds",
                ConstCounter::new(cpu),
            );
            let page = procfs::page_size();
            let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
            r.register("resident_memory_bytes", "Resident memory size in bytes", gauge(stat.rss * page));
            r.register("virtual_memory_bytes", "Virtual memory size in bytes", gauge(stat.vsize));
            r.register("threads", "Number of OS threads in the process", ConstGauge::new(stat.num_threads));
            if let Ok(boot) = procfs::boot_time_secs() {
                let start = boot as f64 + stat.starttime as f64 / ticks;
                r.register(
                    "start_time_seconds",
                    "Start time of the process since the Unix epoch in seconds",
                    ConstGauge::new(start),
                );
            }
        }
        if let Ok(n) = me.fd_count() {
            r.register("open_fds", "Number of open file descriptors", ConstGauge::new(n as i64));
        }
        if let Ok(limits) = me.limits()
            && let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            r.register(
                "max_fds",
                "Maximum number of open file descriptors",
                ConstGauge::new(i64::try_from(max).unwrap_or(i64::MAX)),
            );
        }
        r
    }

    #[cfg(not(target_os = "linux"))]
    pub fn registry() -> Registry {
        let _ = (ConstCounter::new(0u64), ConstGauge::new(0i64));
        Registry::default()
    }
}

/// The same provider name: by pointer for the runtime the handle was made under (the common
/// case, no compare of bytes), else by content (a provider kept across a reload).
fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

/// Increments a gauge now and decrements it when dropped.
pub struct GaugeGuard(Gauge);

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
