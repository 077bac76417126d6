//! The histograms the request path observes: request duration by route and status class, and
//! upstream call duration by call kind. Their handles are resolved ahead (request durations at
//! start, the `token` and `pass` upstream calls on first use), so a request observes without
//! building or hashing a label set.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::labels::{CLASSES, DurationLabels, ROUTES, UpstreamLabels, status_class};

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Upstream call buckets: 5 ms .. ~10 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// Request buckets: 0.5 ms .. ~16 s; a cached refresh or a pass-through on a LAN answers in a
/// millisecond.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Request duration by route and status class, every handle resolved up front.
#[derive(Clone)]
pub(super) struct RequestDurations(Arc<[[Histogram; CLASSES.len()]; ROUTES.len()]>);

impl RequestDurations {
    /// Register the `request_duration_seconds` family in `r` and resolve its handles.
    pub(super) fn registered(r: &mut Registry) -> Self {
        let family = HistogramFamily::<DurationLabels>::new_with_constructor(request_histogram);
        let handles = ROUTES.map(|route| {
            CLASSES.map(|status_class| family.get_or_create(&DurationLabels { route, status_class }).clone())
        });
        r.register(
            "request_duration_seconds",
            "Time from a request's arrival until its answer's head was ready, by route kind and status class",
            family,
        );
        Self(Arc::new(handles))
    }

    /// Record one request; a `route` out of range of [`ROUTES`] is not recorded.
    pub(super) fn observe(&self, route: usize, status: u16, took: Duration) {
        if let Some(by_class) = self.0.get(route) {
            by_class[status_class(status)].observe(took.as_secs_f64());
        }
    }
}

/// Upstream call duration by call kind.
#[derive(Clone)]
pub(super) struct UpstreamDurations {
    family: HistogramFamily<UpstreamLabels>,
    /// The `token` and `pass` histograms, resolved on first use.
    handles: Arc<[OnceLock<Histogram>; 2]>,
}

impl UpstreamDurations {
    /// Register the `upstream_duration_seconds` family in `r`.
    pub(super) fn registered(r: &mut Registry) -> Self {
        let family = HistogramFamily::<UpstreamLabels>::new_with_constructor(latency_histogram);
        r.register(
            "upstream_duration_seconds",
            "Time until the upstream answered: token calls (whole call) and pass-through (headers)",
            family.clone(),
        );
        Self { family, handles: Arc::default() }
    }

    pub(super) fn observe(&self, call: &'static str, took: Duration) {
        let seconds = took.as_secs_f64();
        match self.slot(call) {
            Some(histogram) => histogram.observe(seconds),
            None => self.family.get_or_create(&UpstreamLabels { call }).observe(seconds),
        }
    }

    /// The histogram of `call` as a handle of its own (one `Arc`).
    pub(super) fn histogram(&self, call: &'static str) -> Histogram {
        match self.slot(call) {
            Some(histogram) => histogram.clone(),
            None => self.family.get_or_create(&UpstreamLabels { call }).clone(),
        }
    }

    /// The resolved handle for the two call kinds every request uses.
    fn slot(&self, call: &'static str) -> Option<&Histogram> {
        let slot = match call {
            "token" => &self.handles[0],
            "pass" => &self.handles[1],
            _ => return None,
        };
        Some(slot.get_or_init(|| self.family.get_or_create(&UpstreamLabels { call }).clone()))
    }
}
