//! What a route reports about the request it served, for the access line and the metrics the
//! app writes once the answer is ready.

use http::StatusCode;

/// What the per-request log line reports besides method, status and latency.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// A configured client's id, or `unknown` when the request named one that is not
    /// configured (a metrics label: never a caller's unchecked id).
    pub client: Option<String>,
    pub upstream_status: Option<StatusCode>,
    pub detail: Option<&'static str>,
    /// Set by handlers that time their own upstream call (token calls); otherwise a request
    /// that reached the upstream is timed as a whole (pass-through: until response headers).
    pub upstream_latency: Option<std::time::Duration>,
}
