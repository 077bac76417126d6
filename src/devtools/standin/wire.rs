//! What the stand-in answers: JSON responses, the v2 success bodies (with and without the legacy
//! fields), RFC 6749 errors and injected faults.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use serde_json::json;

use super::config::Fault;

pub(super) type Resp = Response<Full<Bytes>>;

pub(super) fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(super) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    response(status, "application/json", body)
}

/// Success body, in GoTo's v2 field order.
#[derive(Serialize)]
pub(super) struct TokenResponse {
    pub(super) access_token: String,
    pub(super) token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) refresh_token: Option<String>,
    pub(super) expires_in: u64,
    pub(super) account_key: &'static str,
    pub(super) account_type: &'static str,
    pub(super) email: &'static str,
    #[serde(rename = "firstName")]
    pub(super) first_name: &'static str,
    #[serde(rename = "lastName")]
    pub(super) last_name: &'static str,
    pub(super) organizer_key: &'static str,
    pub(super) version: &'static str,
}

impl TokenResponse {
    pub(super) fn new(access_token: String, refresh_token: Option<String>, expires_in: u64) -> Self {
        TokenResponse {
            access_token,
            token_type: "Bearer",
            refresh_token,
            expires_in,
            account_key: "3792882212321659654",
            account_type: "",
            email: "jk@example.com",
            first_name: "Jon",
            last_name: "Karmak",
            organizer_key: "18889842069694200",
            version: "3",
        }
    }
}

/// The identity host's success body: no legacy fields, plus `scope` and `principal`.
#[derive(Serialize)]
pub(super) struct IdentityTokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    expires_in: u64,
    scope: &'static str,
    principal: &'static str,
}

impl<'a> From<&'a TokenResponse> for IdentityTokenResponse<'a> {
    fn from(t: &'a TokenResponse) -> Self {
        IdentityTokenResponse {
            access_token: &t.access_token,
            token_type: t.token_type,
            refresh_token: t.refresh_token.as_deref(),
            expires_in: t.expires_in,
            scope: "collab: identity:",
            principal: t.email,
        }
    }
}

/// RFC 6749 §5.2 error.
#[derive(Debug)]
pub(super) struct OAuthError {
    pub(super) status: StatusCode,
    pub(super) error: &'static str,
    pub(super) description: String,
}

impl OAuthError {
    pub(super) fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        };
        let description = description.into();
        OAuthError { status, error, description }
    }

    pub(super) fn too_large() -> Self {
        let mut e = invalid_request("request body too large");
        e.status = StatusCode::PAYLOAD_TOO_LARGE;
        e
    }
}

pub(super) fn invalid_request(description: impl Into<String>) -> OAuthError {
    OAuthError::new("invalid_request", description)
}

pub(super) fn invalid_grant(description: impl Into<String>) -> OAuthError {
    OAuthError::new("invalid_grant", description)
}

pub(super) fn oauth_error(e: OAuthError) -> Resp {
    let body = json!({"error": e.error, "error_description": e.description});
    let mut resp = json_response(e.status, body.to_string());
    if e.status == StatusCode::UNAUTHORIZED {
        let challenge = HeaderValue::from_static("Basic realm=\"standin\"");
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    } else if e.status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    resp
}

/// Answer an injected fault; `None` when there is none (or it was only a delay).
pub(super) async fn injected(fault: Option<Fault>) -> Option<std::io::Result<Resp>> {
    match fault {
        Some(Fault::Status(code, body)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let is_json = serde_json::from_str::<serde_json::Value>(&body).is_ok();
            let content_type = if is_json { "application/json" } else { "text/plain" };
            return Some(Ok(response(status, content_type, body)));
        }
        Some(Fault::Garbage) => {
            return Some(Ok(response(StatusCode::OK, "text/html", "<html>oops</html>")));
        }
        Some(Fault::Close) => {
            let kind = std::io::ErrorKind::ConnectionAborted;
            return Some(Err(std::io::Error::new(kind, "standin fault: close connection")));
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    None
}

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

pub(super) fn invalid_token() -> Resp {
    let body = json!({"int_err_code": "InvalidToken", "msg": "Invalid token passed"});
    let mut resp = json_response(StatusCode::UNAUTHORIZED, body.to_string());
    let challenge = HeaderValue::from_static("Bearer realm=\"standin\"");
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    resp
}
