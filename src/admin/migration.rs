//! `GET /migration`: the migration report, fleet-wide whichever replica answers, as JSON (the
//! default), as the text table (`Accept: text/plain` or `format=text`), or as the page
//! (`Accept: text/html`, `format=html`, or `GET /ui`: [`super::page`]), narrowed by the query
//! (`since=30d`, `client`, `provider`, `verdict`).

use http::header::ACCEPT;
use http::{Method, Request, Response};

use super::routes::{json, method_not_allowed, text};
use crate::app::App;
use crate::body::Body;
use crate::error::ShimError;
use crate::ops::migration::{Query, table};

/// What the reader gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Text,
    Html,
}

fn format<B>(req: &Request<B>) -> Format {
    if req.uri().path() == "/ui" {
        return Format::Html;
    }
    let query = req.uri().query().unwrap_or_default();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == "format" {
            return match &*v {
                "text" => Format::Text,
                "html" => Format::Html,
                _ => Format::Json,
            };
        }
    }
    // The first of the types named wins: a browser names text/html first, curl names none.
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let first = ["text/html", "text/plain", "application/json"]
        .into_iter()
        .filter_map(|t| accept.find(t).map(|at| (at, t)))
        .min();
    match first {
        Some((_, "text/html")) => Format::Html,
        Some((_, "text/plain")) => Format::Text,
        _ => Format::Json,
    }
}

/// The route for `/migration` and `/ui`; `None` for other paths.
pub(super) async fn route<B>(app: &App, req: &Request<B>) -> Option<Result<Response<Body>, ShimError>> {
    if !matches!(req.uri().path(), "/migration" | "/ui") {
        return None;
    }
    if req.method() != Method::GET {
        return Some(Ok(method_not_allowed("GET")));
    }
    Some(answer(app, req).await)
}

async fn answer<B>(app: &App, req: &Request<B>) -> Result<Response<Body>, ShimError> {
    let query = Query::parse(req.uri().query()).map_err(ShimError::invalid_request)?;
    let snapshot = app.snapshot();
    let ops = &app.state().ops;
    let mut report = ops.migration.report(&snapshot.config, &query).await;
    Ok(match format(req) {
        Format::Text => text(table(&report)),
        Format::Html => super::page::respond(&report, &snapshot.config, &query),
        Format::Json => {
            report.reload = serde_json::to_value(ops.reload.status()).ok();
            json(http::StatusCode::OK, &report)
        }
    })
}
