//! The admin listener's entry: the guard, then `GET /healthz` (process up) and `GET /readyz`
//! (config loaded, not draining; "degraded" in the body while shared state is unavailable),
//! after the operator and session routes.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::guard::Arrival;
use crate::app::App;
use crate::body::{self, Body};

pub(crate) async fn handle<B>(app: &App, req: Request<B>, at: Arrival) -> Response<Body> {
    if let Err(refused) = super::guard::check(app, &req, at) {
        return refused.response();
    }
    if let Some(resp) = super::routes::route(app, &req) {
        return resp;
    }
    if let Some(answer) = super::migration::route(app, &req).await {
        return answer.unwrap_or_else(crate::app::rescue_admin);
    }
    if let Some(answer) = super::sessions::route(app, &req).await {
        return answer.unwrap_or_else(crate::app::rescue_admin);
    }
    let (status, text) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => (StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if app.is_draining() => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        // Redis being down does not make a replica unready: it still serves pass-through,
        // cached answers and what `when_unavailable` allows (docs/deployment.md#when-redis-fails),
        // and taking every replica out of the load balancer would turn a Redis outage into a
        // full one.
        (&Method::GET, "/readyz") if let Some(redis) = &app.state().redis => {
            let (topology, master) = redis.topology();
            let master = match (topology, master.as_deref()) {
                ("cluster", Some(masters)) => format!("masters {masters}"),
                (_, master) => format!("master {}", master.unwrap_or("unknown")),
            };
            let text = if redis.is_up() {
                format!("ready\nredis: {topology}, {master}\n")
            } else {
                format!(
                    "ready, degraded: redis unavailable, refreshes follow when_unavailable (refused, or in-process)\nredis: {topology}, {master}\n"
                )
            };
            return text_response(StatusCode::OK, Bytes::from(text));
        }
        (&Method::GET, "/readyz") => (StatusCode::OK, "ready\n"),
        (_, "/healthz" | "/readyz") => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    text_response(status, Bytes::from_static(text.as_bytes()))
}

fn text_response(status: StatusCode, text: Bytes) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}
