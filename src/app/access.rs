//! What the app records of every request once it is answered: the access line (one JSON line,
//! `oauth_shim::access`), the request metrics, and the `X-Request-Id` on the answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, Uri};

use super::front_door::Route;
use super::rescue::rescue;
use crate::app_state::State;
use crate::body::Body;
use crate::error::ShimError;
use crate::ops::metrics::GaugeGuard;
use crate::routes::Summary;
use crate::snapshot::Snapshot;

/// What a request's log line and metrics need once it has been answered; holds the in-flight
/// gauge up until then.
pub(super) struct Done {
    pub(super) started: Instant,
    pub(super) state: Arc<State>,
    pub(super) snapshot: Arc<Snapshot>,
    /// The index of the provider the request selected.
    pub(super) provider: usize,
    pub(super) method: http::Method,
    pub(super) request_id: HeaderValue,
    pub(super) access: Option<Box<Access>>,
    pub(super) _in_flight: GaugeGuard,
}

/// The subject of the client certificate a TLS connection's client presented and the
/// listener verified; the server puts it on each request of that connection.
#[derive(Clone)]
pub(crate) struct ClientCert(Arc<str>);

impl ClientCert {
    pub(crate) fn new(subject: String) -> Self {
        Self(subject.into())
    }
}

/// What the access line records of the request beyond method and id.
pub(super) struct Access {
    uri: Uri,
    peer: SocketAddr,
    client_cert: Option<ClientCert>,
    user_agent: Option<HeaderValue>,
    /// The declared `Content-Length`, when there is one.
    bytes_in: Option<u64>,
}

impl Access {
    pub(super) fn of<B>(req: &Request<B>, peer: SocketAddr) -> Self {
        let h = req.headers();
        Self {
            uri: req.uri().clone(),
            peer,
            client_cert: req.extensions().get::<ClientCert>().cloned(),
            user_agent: h.get(http::header::USER_AGENT).cloned(),
            bytes_in: h
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        }
    }
}

impl Done {
    /// Count and log the request, and hand on its answer; a route's error goes through the
    /// rescue first.
    pub(super) fn finish(
        self,
        route: Route,
        mut summary: Summary,
        answer: Result<Response<Body>, ShimError>,
    ) -> Response<Body> {
        let ops = &self.state.ops;
        let mut resp = match answer {
            Ok(resp) => resp,
            Err(e) => rescue(e, route, ops, &mut summary),
        };
        let snapshot = &self.snapshot;
        let status = resp.status();
        let elapsed = self.started.elapsed();
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let client = summary.client.take();
        let provider = snapshot.provider(self.provider);
        let client_label = crate::ops::client_label(client.as_deref());
        let result = summary.detail.unwrap_or(if status.as_u16() < 400 { "ok" } else { "error" });
        ops.metrics.request(route.as_str(), &provider.name, client_label, result, status.as_u16());
        ops.metrics.request_duration(route.index(), status.as_u16(), elapsed);
        match (summary.upstream_latency, summary.upstream_status) {
            (Some(took), _) => ops.metrics.upstream_latency("token", took),
            (None, Some(_)) => ops.metrics.upstream_latency("pass", elapsed),
            (None, None) => {}
        }
        // One line per request. Query strings are never logged (they carry codes and tokens);
        // of the headers, only the user agent and the request id.
        if let Some(access) = self.access {
            let ua = access.user_agent.as_ref().and_then(|v| v.to_str().ok());
            tracing::info!(
                target: "oauth_shim::access",
                request_id = self.request_id.to_str().unwrap_or("-"),
                method = %self.method,
                path = access.uri.path(),
                route = route.as_str(),
                provider = &*provider.name,
                client = client.as_deref().unwrap_or("-"),
                status = status.as_u16(),
                upstream_status = summary.upstream_status.map(|s| s.as_u16()),
                detail = summary.detail,
                latency_ms = (latency_ms * 1000.0).round() / 1000.0,
                bytes_in = access.bytes_in,
                bytes_out = http_body::Body::size_hint(resp.body()).exact(),
                peer = %access.peer,
                client_cert = access.client_cert.as_ref().map(|c| &*c.0),
                user_agent = ua,
                "request"
            );
        }
        resp.headers_mut().insert(crate::request_id::X_REQUEST_ID.clone(), self.request_id);
        resp
    }
}
