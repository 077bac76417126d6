//! `GET /migration`: the migration report, fleet-wide whichever replica answers, as JSON (the
//! default), as the text table (`Accept: text/plain` or `format=text`), and narrowed by the
//! query (`since=30d`, `client`, `provider`, `verdict`).

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
}

fn format<B>(req: &Request<B>) -> Format {
    let query = req.uri().query().unwrap_or_default();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == "format" {
            return if v == "text" { Format::Text } else { Format::Json };
        }
    }
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if accept.contains("text/plain") && !accept.contains("application/json") {
        Format::Text
    } else {
        Format::Json
    }
}

/// The route for `/migration`; `None` for other paths.
pub(super) async fn route<B>(app: &App, req: &Request<B>) -> Option<Result<Response<Body>, ShimError>> {
    if req.uri().path() != "/migration" {
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
        Format::Json => {
            report.reload = serde_json::to_value(ops.reload.status()).ok();
            json(http::StatusCode::OK, &report)
        }
    })
}
