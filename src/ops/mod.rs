//! What operators see of the request path: metrics, the migration report, the reload status,
//! and the log setup ([`telemetry`]). The request path feeds them through [`Ops`], held in the
//! shared state; the admin listener (`crate::admin`) exposes them.

pub(crate) mod metrics;
pub mod migration;
pub(crate) mod reload;
pub mod telemetry;

use metrics::Metrics;
use migration::Migration;
use reload::ReloadState;

/// Operational state shared by every request; survives config reloads.
#[derive(Default)]
pub struct Ops {
    pub metrics: Metrics,
    pub migration: Migration,
    pub reload: ReloadState,
}

/// The metrics label for a request's client: as its handler noted it (a configured client's
/// id, or `unknown`: handlers never note an id they did not find configured), `none` when the
/// request named no client.
pub(crate) fn client_label(client: Option<&str>) -> &str {
    client.unwrap_or("none")
}
