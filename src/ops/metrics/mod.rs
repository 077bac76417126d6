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
//!
//! [`registry`] holds the families and the recorders the request path calls, keyed by the label
//! sets in [`labels`]; [`histograms`] the durations with their handles resolved ahead; [`render`]
//! writes a scrape, with the process figures of [`process`]; [`fnv`] is the hasher of the
//! handle caches.

mod fnv;
mod histograms;
mod labels;
mod process;
mod registry;
mod render;

pub(crate) use fnv::Fnv;
#[cfg(test)]
pub(crate) use labels::ROUTES;
pub(crate) use registry::GaugeGuard;
pub(crate) use registry::{LookupCounters, Metrics};
pub(crate) use render::Format;
