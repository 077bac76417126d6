//! The v2 token call, made through a provider's token client ([`Upstream`]): the request it
//! sends, the limits it runs under, and its answer, parsed into a [`V2Token`] for legacy
//! callers or kept as it came ([`RawAnswer`]) for v2 callers.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};

use super::secret::Secret;
use super::token::V2Token;
use crate::error::{ErrorCode, ErrorSource, ShimError};
use crate::request_id::X_REQUEST_ID;

use crate::upstream::Upstream;

/// What a token call produced, with the upstream status for logs and metrics.
pub(crate) struct TokenOutcome {
    pub upstream_status: Option<StatusCode>,
    pub result: Result<V2Token, ShimError>,
}

/// The limits of one token call: the whole call (connect to the end of the body) within
/// `request_timeout`, at most `max_response_bytes` of body. From `[upstream]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallLimits {
    pub request_timeout: Duration,
    pub(crate) max_response_bytes: usize,
}

/// Headers of the caller's request a token call carries upstream unchanged: the request id and
/// the W3C trace context, so the upstream's logs and traces line up with oauth-shim's.
#[derive(Debug, Clone, Default)]
pub struct TraceHeaders {
    pub request_id: Option<HeaderValue>,
    pub traceparent: Option<HeaderValue>,
    pub tracestate: Option<HeaderValue>,
}

static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

impl TraceHeaders {
    /// The three headers' first values, found in one walk over the (few) request headers
    /// rather than three hashed lookups. Inlined into both token routes.
    #[inline(always)]
    pub(crate) fn from_headers(h: &http::HeaderMap) -> Self {
        let mut out = Self::default();
        for (name, value) in h {
            let slot = if *name == X_REQUEST_ID {
                &mut out.request_id
            } else if *name == TRACEPARENT {
                &mut out.traceparent
            } else if *name == TRACESTATE {
                &mut out.tracestate
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        }
        out
    }

    #[inline(always)]
    fn apply(self, h: &mut http::HeaderMap) {
        for (name, value) in [
            (&X_REQUEST_ID, self.request_id),
            (&TRACEPARENT, self.traceparent),
            (&TRACESTATE, self.tracestate),
        ] {
            if let Some(v) = value {
                h.insert(name.clone(), v);
            }
        }
    }
}

/// POST the v2 form to the token URL with the client's Basic header. One attempt: nothing is
/// retried once the request may have reached the upstream. The whole call, body included, runs
/// under `cfg.request_timeout`. A call that gets no usable answer is logged here, once, at
/// warn, naming the upstream host and why.
pub(crate) async fn token_call(
    client: &Upstream,
    token_url: &Uri,
    auth: Option<HeaderValue>,
    form: &Secret,
    cfg: &CallLimits,
    trace: TraceHeaders,
) -> TokenOutcome {
    match tokio::time::timeout(
        cfg.request_timeout,
        call(client, token_url, auth, form, cfg.max_response_bytes, trace),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(_) => {
            upstream_failed(token_url, &crate::upstream::Cause::timeout());
            TokenOutcome { upstream_status: None, result: Err(ShimError::upstream_timeout()) }
        }
    }
}

/// The one log line of a token call that got no answer.
fn upstream_failed(url: &Uri, cause: &crate::upstream::Cause) {
    tracing::warn!(
        upstream = url.authority().map_or("-", |a| a.as_str()),
        call = "token",
        cause = cause.class,
        error = %cause.detail,
        "upstream call failed"
    );
}

async fn call(
    client: &Upstream,
    url: &Uri,
    auth: Option<HeaderValue>,
    form: &Secret,
    max: usize,
    trace: TraceHeaders,
) -> TokenOutcome {
    // The request and the answer's head are temporaries of their statements rather than named
    // locals: a named local stays in the future's state across every later wait even once it
    // has been moved, which made this future (and the refresh flight's box around it) larger
    // than glibc's fast allocation paths.
    let (status, retry_after, collect) = match client
        .request_full(token_request(url, auth, form, trace))
        .await
    {
        Ok(resp) => (
            resp.status(),
            resp.headers().get(RETRY_AFTER).cloned(),
            Limited::new(resp.into_body(), max).collect(),
        ),
        Err(e) => {
            upstream_failed(url, &crate::upstream::Cause::of(&*e));
            return TokenOutcome { upstream_status: None, result: Err(ShimError::upstream_unreachable()) };
        }
    };
    let body = match collect.await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            upstream_failed(url, &crate::upstream::Cause::of(&*e));
            return TokenOutcome {
                upstream_status: Some(status),
                result: Err(ShimError::upstream_garbage()),
            };
        }
    };
    let result = parse_answer(status, &body, retry_after);
    note_trouble(url, status, &result);
    TokenOutcome { upstream_status: Some(status), result }
}

/// What a token answer is to a legacy caller: the token of a 2xx, else the error the answer maps
/// to (never echoing the upstream's body).
pub(crate) fn parse_answer(
    status: StatusCode,
    body: &[u8],
    retry_after: Option<HeaderValue>,
) -> Result<V2Token, ShimError> {
    if status.is_success() { V2Token::parse(body) } else { Err(map_error(status, body, retry_after)) }
}

/// The one log line of an answer that is the upstream's own trouble (5xx, rate limit, an
/// unusable answer), not the caller's.
pub(crate) fn note_trouble(url: &Uri, status: StatusCode, result: &Result<V2Token, ShimError>) {
    if let Err(e) = result
        && (e.status.is_server_error() || e.status == StatusCode::TOO_MANY_REQUESTS)
    {
        tracing::warn!(
            upstream = url.authority().map_or("-", |a| a.as_str()),
            call = "token",
            upstream_status = status.as_u16(),
            error = %e,
            "upstream call failed"
        );
    }
}

/// The v2 token request: the form, POSTed with the client's Basic header (none when the
/// credentials travel in the form). Always inlined: small, and its two callers (the legacy
/// and the v2 token call) would otherwise each pay a call for it.
#[inline(always)]
fn token_request(url: &Uri, auth: Option<HeaderValue>, form: &Secret, trace: TraceHeaders) -> Request<Bytes> {
    let mut req = Request::new(Bytes::copy_from_slice(form.expose().as_bytes()));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = url.clone();
    let h = req.headers_mut();
    if let Some(auth) = auth {
        h.insert(AUTHORIZATION, auth);
    }
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    h.insert(ACCEPT, HeaderValue::from_static("application/json"));
    trace.apply(h);
    req
}

/// An upstream token answer kept as it came, for v2 callers (docs/protocol.md#v2-token-calls: not
/// mapped).
#[derive(Clone)]
pub struct RawAnswer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub(crate) retry_after: Option<HeaderValue>,
    pub body: Bytes,
}

/// Shows the status only: the body holds tokens.
impl std::fmt::Debug for RawAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAnswer").field("status", &self.status).finish_non_exhaustive()
    }
}

/// POST `form` to the token URL (with `auth` when the credentials go in the Basic header) and
/// keep the answer, whatever its status, as it came. Only a failure to get an answer (no
/// connection, no answer within `cfg.request_timeout`, an unreadable or oversized body) is an
/// error.
pub(crate) async fn raw_token_call(
    client: &Upstream,
    token_url: &Uri,
    auth: Option<HeaderValue>,
    form: &Secret,
    cfg: &CallLimits,
    trace: TraceHeaders,
) -> Result<RawAnswer, ShimError> {
    let call = async {
        let resp = client.request_full(token_request(token_url, auth, form, trace)).await.map_err(|e| {
            upstream_failed(token_url, &crate::upstream::Cause::of(&*e));
            ShimError::upstream_unreachable()
        })?;
        let status = resp.status();
        let content_type = resp.headers().get(CONTENT_TYPE).cloned();
        let retry_after = resp.headers().get(RETRY_AFTER).cloned();
        // Read frame by frame rather than by `Limited::collect`, which the legacy token call
        // then keeps inlined as its one user; copied, so an answer kept in the refresh cache
        // holds its own bytes and not the connection's read buffer.
        let mut body = resp.into_body();
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            let frame = frame.map_err(|e| {
                upstream_failed(token_url, &crate::upstream::Cause::of(&*e));
                ShimError::upstream_garbage()
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > cfg.max_response_bytes {
                    return Err(ShimError::upstream_garbage());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(RawAnswer { status, content_type, retry_after, body: buf.freeze() })
    };
    tokio::time::timeout(cfg.request_timeout, call).await.unwrap_or_else(|_| {
        upstream_failed(token_url, &crate::upstream::Cause::timeout());
        Err(ShimError::upstream_timeout())
    })
}

/// Map a non-2xx upstream answer. Only the RFC 6749 error code is taken from the body; its
/// description is never echoed.
fn map_error(status: StatusCode, body: &[u8], retry_after: Option<HeaderValue>) -> ShimError {
    #[derive(serde::Deserialize)]
    struct RfcError {
        error: String,
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        let mut e = ShimError::new(
            ErrorCode::TemporarilyUnavailable,
            if status == StatusCode::TOO_MANY_REQUESTS { status } else { StatusCode::BAD_GATEWAY },
            ErrorSource::Upstream,
            if status == StatusCode::TOO_MANY_REQUESTS {
                "the upstream rate limit was reached; retry later"
            } else {
                "the upstream is temporarily unavailable"
            },
        );
        e.retry_after = retry_after;
        return e;
    }
    if status.is_server_error() {
        return ShimError::new(
            ErrorCode::ServerError,
            StatusCode::BAD_GATEWAY,
            ErrorSource::Upstream,
            "the upstream failed",
        );
    }
    if status.is_client_error() {
        let code = serde_json::from_slice::<RfcError>(body).ok().and_then(|e| ErrorCode::from_rfc(&e.error));
        let code = match (code, status) {
            (Some(c), _) => c,
            (None, StatusCode::UNAUTHORIZED) => ErrorCode::InvalidClient,
            (None, _) => return ShimError::upstream_garbage(),
        };
        let http_status = match code {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::ServerError | ErrorCode::TemporarilyUnavailable => StatusCode::BAD_GATEWAY,
            _ => StatusCode::BAD_REQUEST,
        };
        return ShimError::new(code, http_status, ErrorSource::Upstream, code.upstream_description());
    }
    ShimError::upstream_garbage()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_upstream_errors_without_echoing() {
        let e = map_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"leak-me"}"#,
            None,
        );
        assert_eq!((e.code, e.status), (ErrorCode::InvalidGrant, StatusCode::BAD_REQUEST));
        assert!(!String::from_utf8(e.body_bytes()).unwrap().contains("leak-me"));
        let e = map_error(StatusCode::UNAUTHORIZED, b"", None);
        assert_eq!((e.code, e.status), (ErrorCode::InvalidClient, StatusCode::UNAUTHORIZED));
        let e = map_error(StatusCode::INTERNAL_SERVER_ERROR, b"stack trace", None);
        assert_eq!((e.code, e.status), (ErrorCode::ServerError, StatusCode::BAD_GATEWAY));
        let e = map_error(StatusCode::BAD_REQUEST, b"<html>", None);
        assert_eq!((e.code, e.status), (ErrorCode::ServerError, StatusCode::BAD_GATEWAY));
        let e = map_error(StatusCode::TOO_MANY_REQUESTS, b"", Some(HeaderValue::from_static("3")));
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after.unwrap(), "3");
    }
}
