//! The rescue: the one place an error becomes a response (a route's, or an admin route's through
//! [`rescue_admin`]). It classifies the error by
//! its source, logs it once with its cause, notes it for the access line and metrics, and
//! renders it (JSON in both the RFC 6749 and the legacy shape; an HTML page for a browser on
//! `/oauth/authorize`). Bodies carry fixed descriptions, never a cause, a token or a secret.

use http::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};

use super::front_door::Route;
use crate::body::{self, Body};
use crate::error::{ErrorCode, ErrorSource, ShimError};
use crate::ops::Ops;
use crate::routes::Summary;
use crate::routes::UpstreamFailure;

/// Turn `e` into the answer, logging it once.
pub(super) fn rescue(e: ShimError, route: Route, ops: &Ops, summary: &mut Summary) -> Response<Body> {
    log(&e, route, summary.client.as_deref().unwrap_or("-"));
    // A refusal at the front door is counted as `error`: the request never reached a route.
    if route != Route::Rejected {
        summary.detail = Some(e.code.as_str());
    }
    if route == Route::Continuity && e.code == ErrorCode::InvalidToken {
        summary.detail = Some("continuity_invalid_token");
        ops.metrics.continuity_rejected();
    }
    match route {
        Route::Authorize { page: true } => error_page(&e),
        _ => e.into_response(),
    }
}

/// Turn an admin route's error into its answer, logging it once: a failure on oauth-shim's
/// side at WARN, a caller's mistake at DEBUG. The admin listener keeps no access line or
/// request metrics, so there is nothing to note.
pub(crate) fn rescue_admin(e: ShimError) -> Response<Body> {
    let cause = e.cause.as_deref().map(tracing::field::display);
    if e.status.is_server_error() {
        tracing::warn!(error = %e, cause, "admin request failed");
    } else {
        tracing::debug!(error = %e, cause, "admin request refused");
    }
    e.into_response()
}

/// One log line per failed request, at a level by who is to act: an upstream that could not be
/// reached and a client whose configured secret the upstream refuses are the operator's
/// business (WARN); a caller's own mistake or an upstream verdict on its grant is not (DEBUG).
/// A failed token call is also logged where the upstream call is made, once for all the
/// requests that shared it.
fn log(e: &ShimError, route: Route, client: &str) {
    if let Some(failure) = e.cause.as_deref().and_then(|c| c.downcast_ref::<UpstreamFailure>()) {
        tracing::warn!(
            upstream = %failure.upstream,
            call = "pass",
            cause = failure.cause.class,
            error = %failure.cause.detail,
            "upstream call failed"
        );
        return;
    }
    let cause = e.cause.as_deref().map(tracing::field::display);
    match (route, e.source, e.code) {
        (Route::LegacyToken, ErrorSource::Upstream, ErrorCode::InvalidClient) => {
            tracing::warn!(client, error = %e, "the upstream refused this client's credentials; check its secret");
        }
        (Route::V2Token, ErrorSource::Upstream, _) => {
            tracing::warn!(client, error = %e, "v2 token call failed upstream");
        }
        _ => tracing::debug!(route = route.as_str(), client, error = %e, cause, "request refused"),
    }
}

/// A small HTML page for browsers; the text is ours, never the caller's input.
fn error_page(e: &ShimError) -> Response<Body> {
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Authorization error</title></head>\
         <body><h1>Authorization error</h1><p><code>{}</code>: {}</p></body></html>\n",
        e.code.as_str(),
        html_escape(&e.description)
    );
    let mut resp = Response::new(body::full(page));
    *resp.status_mut() = e.status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use http_body_util::BodyExt;

    use super::*;

    fn answer(e: ShimError, route: Route) -> (Response<Body>, Summary) {
        let mut summary = Summary::default();
        let resp = rescue(e, route, &Ops::default(), &mut summary);
        (resp, summary)
    }

    async fn text(resp: Response<Body>) -> String {
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_browser_on_authorize_gets_a_page_and_everyone_else_json() {
        let e = || ShimError::invalid_request("missing <client_id>");
        let (resp, summary) = answer(e(), Route::Authorize { page: true });
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(summary.detail, Some("invalid_request"));
        assert!(text(resp).await.contains("missing &lt;client_id&gt;"));
        for route in [Route::Authorize { page: false }, Route::LegacyToken, Route::PassThrough] {
            let (resp, _) = answer(e(), route);
            assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
            assert!(text(resp).await.contains(r#""error":"invalid_request""#));
        }
    }

    #[test]
    fn the_access_line_detail_follows_the_route() {
        let (_, summary) = answer(ShimError::invalid_request("x"), Route::Rejected);
        assert_eq!(summary.detail, None, "a front-door refusal is counted as a plain error");
        let (resp, summary) = answer(crate::continuity::invalid_token(), Route::Continuity);
        assert_eq!(summary.detail, Some("continuity_invalid_token"));
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let (_, summary) = answer(crate::continuity::invalid_token(), Route::PassThrough);
        assert_eq!(summary.detail, Some("invalid_token"));
    }

    #[test]
    fn an_upstream_failure_cause_names_the_upstream_and_never_reaches_the_body() {
        let failure =
            UpstreamFailure { upstream: "api.example.com".into(), cause: crate::upstream::Cause::timeout() };
        let e = ShimError::upstream_timeout().caused_by(failure);
        let cause = e.cause.as_deref().and_then(|c| c.downcast_ref::<UpstreamFailure>()).unwrap();
        assert_eq!(cause.upstream, "api.example.com");
        assert!(!String::from_utf8(e.body_bytes()).unwrap().contains("api.example.com"));
    }
}
