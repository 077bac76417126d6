//! The operator routes of the admin listener: `GET /metrics` (Prometheus text or OpenMetrics),
//! `GET /migration` (the migration report) and `GET|POST /reload`, with the admin token check
//! that guards `/migration`, `/reload` and `/sessions`.

use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::reload::{ReloadError, reload};
use crate::app::App;
use crate::body::{self, Body};
use crate::ops::metrics;

/// Whether a request to a protected admin route (`/reload`, `/migration`) may proceed: always
/// when no `[admin]` token is configured, else only with `Authorization: Bearer <token>`.
pub(super) fn authorized<B>(app: &App, req: &Request<B>) -> bool {
    let rt = app.runtime();
    let Some(token) = &rt.config.admin.token else { return true };
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .and_then(|t| std::str::from_utf8(t).ok())
        .is_some_and(|t| token.ct_eq(t.trim()))
}

/// The answer to an admin request without the admin token.
pub(super) fn unauthorized() -> Response<Body> {
    let mut resp = respond(
        StatusCode::UNAUTHORIZED,
        "application/json",
        Bytes::from_static(b"{\"error\":\"this admin route needs Authorization: Bearer <admin token>\"}\n"),
    );
    resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// The admin listener's operational routes; `None` for paths it does not own.
pub(super) fn route<B>(app: &App, req: &Request<B>) -> Option<Response<Body>> {
    let ops = &app.shared().ops;
    let method = req.method();
    let path = req.uri().path();
    if matches!(path, "/reload" | "/migration") && !authorized(app, req) {
        return Some(unauthorized());
    }
    Some(match path {
        "/metrics" if method == Method::GET => {
            let stats = app.shared().refresh.stats();
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = metrics::Format::from_accept(accept);
            let state = app.shared().redis.as_ref().map(|r| r.stats());
            let text = ops.metrics.render(stats, state, format);
            respond(StatusCode::OK, format.content_type(), text.into())
        }
        "/migration" if method == Method::GET => {
            let rt = app.runtime();
            let mut report = ops.migration.report(&rt.config);
            report.reload = serde_json::to_value(ops.reload.status()).ok();
            json(StatusCode::OK, &report)
        }
        "/reload" if method == Method::GET => json(StatusCode::OK, &ops.reload.status()),
        "/reload" if method == Method::POST => match reload(app, "admin") {
            Ok(status) => json(StatusCode::OK, &status),
            Err(ReloadError::Invalid(status)) => json(StatusCode::UNPROCESSABLE_ENTITY, &*status),
            Err(ReloadError::NoSource) => json(
                StatusCode::CONFLICT,
                &serde_json::json!({"error": "this process was not started from a config file; nothing to reload"}),
            ),
        },
        "/metrics" | "/migration" | "/reload" => {
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

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
