//! The exposition text of a `GET /metrics` scrape: the process's registry, plus the figures
//! read at scrape time (refresh cache, shared state, process), in OpenMetrics as
//! `prometheus-client` writes it or rewritten into Prometheus' classic text format.

use std::collections::HashSet;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::redis::{RedisStats, Refusal};
use crate::refresh::RefreshStats;

/// The exposition format a scrape asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`, Prometheus' classic text format.
    Prometheus,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, else the classic text format.
    pub(crate) fn from_accept(accept: Option<&str>) -> Self {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// `registry` in `format`, followed by the refresh cache's counters, the shared state's (Redis
/// backend only) and the process metrics, all read now.
pub(super) fn exposition(
    registry: &Registry,
    refresh: RefreshStats,
    state: Option<RedisStats>,
    format: Format,
) -> String {
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
        shared.register("outages", "Redis outages seen (each logged once)", ConstCounter::new(state.outages));
        shared.register(
            "ack_failures",
            "Writes (a flight's lock, its answer) fewer than replicas_ack Redis replicas acknowledged in time",
            ConstCounter::new(state.ack_failures),
        );
        shared.register(
            "failovers",
            "Redis failovers followed: a new master named by the sentinels, or new masters serving a cluster's slots",
            ConstCounter::new(state.failovers),
        );
        shared.register(
            "master_waits",
            "Refreshes that waited for a Redis master to answer again (within failover_wait)",
            ConstCounter::new(state.master_waits),
        );
        #[expect(clippy::cast_precision_loss, reason = "microseconds far below 2^52")]
        let waited = state.master_wait_micros as f64 / 1e6;
        shared.register(
            "master_wait_seconds",
            "Time refreshes spent waiting for a Redis master to answer again (within failover_wait)",
            ConstCounter::new(waited),
        );
        let refusals = Family::<[(&'static str, &'static str); 1], Counter>::default();
        for reason in Refusal::ALL {
            refusals.get_or_create(&[("reason", reason.as_str())]).inc_by(state.refusals[reason as usize]);
        }
        shared.register(
            "refusals",
            "Refreshes refused (503) because no Redis master answered within failover_wait, by reason",
            refusals,
        );
        let up = Gauge::<i64>::default();
        up.set(i64::from(state.up));
        shared.register("redis_up", "1 while Redis is used, 0 while this replica falls back", up);
    }
    let mut out = String::with_capacity(8192);
    // Writing to a String cannot fail.
    let _ = encode_registry(&mut out, registry);
    let _ = encode_registry(&mut out, &scrape);
    let _ = encode_registry(&mut out, &shared);
    let _ = encode_registry(&mut out, &super::process::registry());
    let _ = encode_eof(&mut out);
    match format {
        Format::OpenMetrics => out,
        Format::Prometheus => to_prometheus_text(&out),
    }
}

/// OpenMetrics text as the classic 0.0.4 format reads it: a counter family's `# HELP` and
/// `# TYPE` carry the sample name (`_total`), and `# UNIT` and `# EOF` go. Samples are the same.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> =
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
