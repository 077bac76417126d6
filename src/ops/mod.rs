//! Operating oauth-shim: metrics, the migration report, hot reload, and the admin routes that
//! expose them (`GET /metrics`, `GET /migration`, `GET|POST /reload`). The request path feeds
//! it through [`Ops`], held in the app's shared state; [`admin_route`] is called by the admin
//! listener.

pub mod cli;
pub mod metrics;
pub mod migration;
pub mod reload;
pub mod sessions;

use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};

use crate::app::{App, Runtime};
use crate::body::{self, Body};
use metrics::Metrics;
use migration::{Call, Feature, Migration};
use reload::{ReloadError, ReloadState};

/// Operational state shared by every request; survives config reloads.
#[derive(Default)]
pub struct Ops {
    pub metrics: Metrics,
    pub migration: Migration,
    pub reload: ReloadState,
}

/// The metrics label for a client: its id if configured now, else `unknown`; `none` when the
/// request named no client.
pub fn client_label<'a>(rt: &'a Runtime, client: Option<&'a str>) -> &'a str {
    match client {
        None => "none",
        Some(id) => rt.config.client(id).map_or("unknown", |c| c.id.as_str()),
    }
}

impl Ops {
    /// Record a legacy `/oauth/authorize` call from its query string.
    pub fn record_authorize(&self, rt: &Runtime, query: Option<&str>) {
        let (mut client_id, mut response_type, mut redirect_uri) = (None, false, false);
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if v.is_empty() {
                continue;
            }
            match &*k {
                "client_id" if client_id.is_none() => client_id = Some(v.into_owned()),
                "response_type" => response_type = true,
                "redirect_uri" => redirect_uri = true,
                _ => {}
            }
        }
        let Some(id) = client_id else { return };
        let call = Call::default()
            .with(Feature::AuthorizeWithoutResponseType, !response_type)
            .with(Feature::MissingRedirectUri, !redirect_uri);
        self.migration.record(&id, rt.config.client(&id).is_some(), call);
    }

    /// Record a pass-through request to `/oauth/v2/*`, attributed to the client its
    /// `Authorization: Basic` header names (only the id is decoded). Returns the client id for
    /// the access log: the configured id, `unknown`, or `None` when no client was named.
    pub fn record_v2_native(&self, rt: &Runtime, headers: &HeaderMap) -> Option<String> {
        let call = Call::default().with(Feature::V2Native, true);
        match basic_client_id(headers) {
            Some(id) => {
                let configured = rt.config.client(&id).is_some();
                self.migration.record(&id, configured, call);
                Some(if configured { id } else { "unknown".into() })
            }
            None => {
                self.migration.record_unattributed_v2();
                None
            }
        }
    }
}

/// The client id of an `Authorization: Basic` header (RFC 6749 §2.3.1: form-urlencoded before
/// base64). The secret half is never decoded into a string.
fn basic_client_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let b64 = value.strip_prefix(b"Basic ").or_else(|| value.strip_prefix(b"basic "))?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim_ascii()).ok()?;
    let colon = raw.iter().position(|b| *b == b':')?;
    // Form-decoding: `+` is a space, then percent-escapes.
    let plus_decoded = std::str::from_utf8(&raw[..colon]).ok()?.replace('+', " ");
    let id = percent_encoding::percent_decode_str(&plus_decoded).decode_utf8().ok()?.into_owned();
    (!id.is_empty()).then_some(id)
}

/// Whether a request to a protected admin route (`/reload`, `/migration`) may proceed: always
/// when no `[admin]` token is configured, else only with `Authorization: Bearer <token>`.
fn authorized<B>(app: &App, req: &Request<B>) -> bool {
    let rt = app.runtime();
    let Some(token) = &rt.config.admin.token else { return true };
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .and_then(|t| std::str::from_utf8(t).ok())
        .is_some_and(|t| token.ct_eq(t.trim()))
}

/// The answer to an admin request without the admin token.
fn unauthorized() -> Response<Body> {
    let mut resp = respond(
        StatusCode::UNAUTHORIZED,
        "application/json",
        Bytes::from_static(b"{\"error\":\"this admin route needs Authorization: Bearer <admin token>\"}\n"),
    );
    resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// The admin listener's operational routes; `None` for paths it does not own.
pub fn admin_route<B>(app: &App, req: &Request<B>) -> Option<Response<Body>> {
    let ops = &app.shared().ops;
    let method = req.method();
    let path = req.uri().path();
    if matches!(path, "/reload" | "/migration") && !authorized(app, req) {
        return Some(unauthorized());
    }
    Some(match path {
        "/metrics" if method == Method::GET => {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = metrics::Format::from_accept(accept);
            let state = app.shared().redis.as_ref().map(|r| r.stats());
            let text = ops.metrics.render(app.shared().refresh.stats(), state, format);
            respond(StatusCode::OK, format.content_type(), text.into())
        }
        "/migration" if method == Method::GET => {
            let rt = app.runtime();
            let mut report = ops.migration.report(&rt.config);
            report.reload = serde_json::to_value(ops.reload.status()).ok();
            json(StatusCode::OK, &report)
        }
        "/reload" if method == Method::GET => json(StatusCode::OK, &ops.reload.status()),
        "/reload" if method == Method::POST => match reload::reload(app, "admin") {
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

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = respond(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"method not allowed\n"),
    );
    resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_client_id_decodes_only_the_id() {
        let mut h = HeaderMap::new();
        let enc = base64::engine::general_purpose::STANDARD.encode("my%20client:s%3Acret");
        h.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&format!("Basic {enc}")).unwrap());
        assert_eq!(basic_client_id(&h).as_deref(), Some("my client"));
        h.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(basic_client_id(&h), None);
        h.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(basic_client_id(&h), None);
    }
}
