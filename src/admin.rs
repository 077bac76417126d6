//! The admin listener, separate from the proxy port so no API path can collide with it:
//! `GET /healthz` (process up) and `GET /readyz` (config loaded, not draining;
//! "degraded" in the body while shared state is unavailable).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::app::App;
use crate::body::{self, Body};

/// Serve the admin port until the process ends. It keeps answering while the proxy drains, so
/// `/readyz` can report the drain.
pub async fn serve(listener: TcpListener, app: App, mut shutdown: watch::Receiver<bool>) {
    let mut watching = true;
    let slots = Arc::new(Semaphore::new(app.runtime().config.admin.max_connections));
    loop {
        // A free slot first: over the limit, connections wait in the kernel's accept queue.
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            changed = shutdown.changed(), if watching => {
                watching = false;
                if changed.is_ok() {
                    app.set_draining();
                }
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(&app, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            // Probes reconnect; an admin connection never outlives a minute.
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
            drop(permit);
        });
    }
}

pub async fn handle<B>(app: &App, req: Request<B>) -> Response<Body> {
    if let Some(resp) = crate::ops::admin_route(app, &req) {
        return resp;
    }
    if let Some(resp) = crate::ops::sessions::route(app, &req).await {
        return resp;
    }
    let (status, text) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => (StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if app.is_draining() => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        // Redis being down does not make a replica unready: it serves from in-process state
        // (README, "Shared service"), and taking every replica out of the load balancer would
        // turn a Redis outage into a full one.
        (&Method::GET, "/readyz") if app.shared().redis.as_ref().is_some_and(|r| !r.is_up()) => {
            (StatusCode::OK, "ready, degraded: redis unavailable, refreshes use in-process state\n")
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
