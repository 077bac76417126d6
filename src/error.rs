//! The one error type of the request path and its one conversion to an HTTP response.
//!
//! Every failure, ours or the upstream's, becomes a body both kinds of client understand:
//! `{"error":…,"error_description":…,"int_err_code":…,"msg":…}` (RFC 6749 §5.2 plus the legacy
//! GoTo fields). Descriptions are fixed strings written here or by the caller of a constructor;
//! they never carry an upstream body, a token or a secret.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

use crate::body::{self, Body};

/// RFC 6749 §5.2 error codes (plus §4.1.2.1 `server_error`/`temporarily_unavailable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    AccessDenied,
    ServerError,
    TemporarilyUnavailable,
    /// RFC 6750 §3.1: an API call's bearer token is invalid, expired or revoked.
    InvalidToken,
}

impl ErrorCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::InvalidToken => "invalid_token",
        }
    }

    /// The legacy `int_err_code`: the RFC code, except for a bad API token, which legacy APIs
    /// called `InvalidToken`.
    pub(crate) fn legacy_str(self) -> &'static str {
        match self {
            Self::InvalidToken => "InvalidToken",
            other => other.as_str(),
        }
    }

    /// Parse a code an upstream sent; unknown codes are `None`.
    pub(crate) fn from_rfc(code: &str) -> Option<Self> {
        Some(match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "access_denied" => Self::AccessDenied,
            "server_error" => Self::ServerError,
            "temporarily_unavailable" => Self::TemporarilyUnavailable,
            "invalid_token" => Self::InvalidToken,
            _ => return None,
        })
    }

    /// A fixed description for an upstream error of this code (upstream text is never echoed).
    pub(crate) fn upstream_description(self) -> &'static str {
        match self {
            Self::InvalidRequest => "the upstream rejected the request as malformed",
            Self::InvalidClient => "the upstream rejected the client credentials",
            Self::InvalidGrant => {
                "the grant (code, refresh token or password) is invalid, expired or revoked"
            }
            Self::UnauthorizedClient => "the client is not allowed to use this grant type upstream",
            Self::UnsupportedGrantType => "the upstream does not support this grant type",
            Self::InvalidScope => "the requested scope is invalid",
            Self::AccessDenied => "access denied by the upstream",
            Self::ServerError => "the upstream failed",
            Self::TemporarilyUnavailable => "the upstream is temporarily unavailable",
            Self::InvalidToken => "the upstream refused the access token",
        }
    }
}

/// Which side caused the error; decides log level and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The caller sent something we refuse (4xx).
    Downstream,
    /// The upstream refused, failed, timed out or answered garbage.
    Upstream,
    /// A bug or resource problem of ours (500).
    Internal,
}

impl ErrorSource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Downstream => "downstream",
            Self::Upstream => "upstream",
            Self::Internal => "internal",
        }
    }

    /// The side named by [`ErrorSource::as_str`].
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "downstream" => Self::Downstream,
            "upstream" => Self::Upstream,
            "internal" => Self::Internal,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ShimError {
    pub code: ErrorCode,
    pub status: StatusCode,
    pub source: ErrorSource,
    pub(crate) description: Cow<'static, str>,
    /// Add `WWW-Authenticate: Basic` (the caller authenticated with a Basic header).
    pub challenge: bool,
    /// Passed through from an upstream 429/503.
    pub(crate) retry_after: Option<HeaderValue>,
    /// Extra headers such as `Allow` for a 405.
    pub allow: Option<&'static str>,
    /// Close the (HTTP/1) connection after this answer: the request's body was not read to
    /// its end, so where the next request starts is unknown.
    pub close: bool,
    /// What caused it, for the log line the rescue writes (never sent to the caller): an
    /// upstream call's classified failure, a body read error.
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ShimError {
    pub fn new(
        code: ErrorCode,
        status: StatusCode,
        source: ErrorSource,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            code,
            status,
            source,
            description: description.into(),
            challenge: false,
            retry_after: None,
            allow: None,
            close: false,
            cause: None,
        }
    }

    /// Attach what caused this error (logged by the rescue, never answered).
    pub(crate) fn caused_by(mut self, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        self.cause = Some(Arc::from(cause.into()));
        self
    }

    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, StatusCode::BAD_REQUEST, ErrorSource::Downstream, description)
    }

    pub fn invalid_client(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidClient, StatusCode::UNAUTHORIZED, ErrorSource::Downstream, description)
    }

    pub fn unauthorized_client(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            ErrorCode::UnauthorizedClient,
            StatusCode::BAD_REQUEST,
            ErrorSource::Downstream,
            description,
        )
    }

    pub fn unsupported_grant_type(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            ErrorCode::UnsupportedGrantType,
            StatusCode::BAD_REQUEST,
            ErrorSource::Downstream,
            description,
        )
    }

    /// Mark the answer as the connection's last (see [`ShimError::close`]).
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// 401 for an API call whose bearer token is refused (with a `Bearer` challenge).
    pub fn invalid_token(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidToken, StatusCode::UNAUTHORIZED, ErrorSource::Downstream, description)
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub(crate) fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::invalid_request("method not allowed").status(StatusCode::METHOD_NOT_ALLOWED);
        e.allow = Some(allow);
        e
    }

    /// The upstream could not be reached (connect refused, reset, TLS failure).
    pub(crate) fn upstream_unreachable() -> Self {
        Self::new(
            ErrorCode::TemporarilyUnavailable,
            StatusCode::BAD_GATEWAY,
            ErrorSource::Upstream,
            "the upstream could not be reached",
        )
    }

    /// The upstream did not answer within the deadline.
    pub(crate) fn upstream_timeout() -> Self {
        Self::new(
            ErrorCode::TemporarilyUnavailable,
            StatusCode::GATEWAY_TIMEOUT,
            ErrorSource::Upstream,
            "the upstream did not answer in time",
        )
    }

    /// The upstream answered something we cannot use.
    pub(crate) fn upstream_garbage() -> Self {
        Self::new(
            ErrorCode::ServerError,
            StatusCode::BAD_GATEWAY,
            ErrorSource::Upstream,
            "the upstream answered with an unusable response",
        )
    }

    /// 503 for a call that needs the shared state (Redis) while no Redis master answers, and
    /// that its outage policy does not let go on without it (docs/deployment.md#when-redis-fails):
    /// nothing was sent upstream, so the caller retries after `Retry-After`.
    pub(crate) fn state_unavailable(description: &'static str) -> Self {
        let mut e = Self::new(
            ErrorCode::TemporarilyUnavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorSource::Internal,
            description,
        );
        e.retry_after = Some(HeaderValue::from_static("1"));
        e
    }

    pub(crate) fn internal() -> Self {
        Self::new(
            ErrorCode::ServerError,
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorSource::Internal,
            "internal error",
        )
    }

    /// JSON body in the dual RFC 6749 / legacy shape.
    pub(crate) fn body_bytes(&self) -> Vec<u8> {
        let (code, legacy) = (self.code.as_str(), self.code.legacy_str());
        let desc = serde_json::to_string(&*self.description).unwrap_or_else(|_| "\"\"".into());
        format!(r#"{{"error":"{code}","error_description":{desc},"int_err_code":"{legacy}","msg":{desc}}}"#)
            .into_bytes()
    }

    /// The response for this error. Called by the app's rescue only (`app::rescue`), which
    /// also logs the error once.
    pub(crate) fn into_response(self) -> Response<Body> {
        let mut resp = Response::new(body::full(self.body_bytes()));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        if self.code == ErrorCode::InvalidToken {
            h.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"oauth-shim\", error=\"invalid_token\""),
            );
        } else if self.challenge && self.status == StatusCode::UNAUTHORIZED {
            h.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"oauth-shim\""));
        }
        if let Some(v) = self.retry_after {
            h.insert(RETRY_AFTER, v);
        }
        if let Some(allow) = self.allow {
            h.insert(http::header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.close {
            // hyper closes an HTTP/1 connection after an answer that says so, and drops the
            // header from an HTTP/2 one (where it has no meaning).
            h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

impl std::fmt::Display for ShimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code.as_str(), self.status.as_u16(), self.description)
    }
}

impl std::error::Error for ShimError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|c| c as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_both_shapes() {
        let e = ShimError::invalid_request("missing \"code\"");
        let v: serde_json::Value = serde_json::from_slice(&e.body_bytes()).unwrap();
        assert_eq!(v["error"], "invalid_request");
        assert_eq!(v["int_err_code"], "invalid_request");
        assert_eq!(v["error_description"], "missing \"code\"");
        assert_eq!(v["msg"], "missing \"code\"");
    }

    #[test]
    fn codes_round_trip() {
        for c in [
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidClient,
            ErrorCode::InvalidGrant,
            ErrorCode::UnauthorizedClient,
            ErrorCode::UnsupportedGrantType,
            ErrorCode::InvalidScope,
            ErrorCode::AccessDenied,
            ErrorCode::ServerError,
            ErrorCode::TemporarilyUnavailable,
            ErrorCode::InvalidToken,
        ] {
            assert_eq!(ErrorCode::from_rfc(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::from_rfc("bogus"), None);
    }
}
