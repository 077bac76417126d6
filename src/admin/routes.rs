//! The operator routes of the admin listener: `GET /metrics` (Prometheus text or OpenMetrics)
//! and `GET|POST /reload`, and the admin listener's JSON and plain answers. The guard (`guard`) has run before any of them.

use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::reload::{ReloadError, reload};
use crate::app::App;
use crate::body::{self, Body};
use crate::error::ShimError;
use crate::ops::metrics;

/// The admin listener's operational routes; `None` for paths it does not own.
pub(super) fn route<B>(app: &App, req: &Request<B>) -> Option<Response<Body>> {
    let ops = &app.state().ops;
    let method = req.method();
    Some(match req.uri().path() {
        "/metrics" if method == Method::GET => {
            let stats = app.state().refresh.stats();
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = metrics::Format::from_accept(accept);
            let redis = app.state().redis.as_ref().map(|r| r.stats());
            let text = ops.metrics.render(stats, redis, format);
            respond(StatusCode::OK, format.content_type(), text.into())
        }
        "/reload" if method == Method::GET => json(StatusCode::OK, &ops.reload.status()),
        "/reload" if method == Method::POST => match reload(app, "admin") {
            Ok(status) => json(StatusCode::OK, &status),
            Err(ReloadError::Invalid(status)) => json(StatusCode::UNPROCESSABLE_ENTITY, &*status),
            Err(ReloadError::NoSource) => crate::app::rescue_admin(
                ShimError::invalid_request(
                    "this process was not started from a config file; nothing to reload",
                )
                .status(StatusCode::CONFLICT),
            ),
        },
        "/metrics" | "/reload" => {
            method_not_allowed(if req.uri().path() == "/reload" { "GET, POST" } else { "GET" })
        }
        _ => return None,
    })
}

pub(super) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = respond(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"method not allowed\n"),
    );
    resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

pub(super) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            respond(status, "application/json", bytes.into())
        }
        Err(_) => {
            respond(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", "internal error\n".into())
        }
    }
}

pub(super) fn text(body: String) -> Response<Body> {
    respond(StatusCode::OK, "text/plain; charset=utf-8", body.into())
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
