//! The auto-approving authorization endpoints, the user endpoint and the toy G2W/G2M API.

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use serde_json::json;

use super::state::{Core, lock, mint_code};
use super::token::parse_params;
use super::wire::{Resp, bearer, injected, invalid_token, json_response, response};

// ---------------------------------------------------------------------------------------------
// Authorization endpoint and toy API

pub(super) fn authorize(shared: &Core, parts: &http::request::Parts) -> Resp {
    let fail = |status: StatusCode, error: &str, description: &str| {
        let body = json!({"error": error, "error_description": description});
        json_response(status, body.to_string())
    };
    if parts.method != Method::GET {
        return fail(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "use GET");
    }
    let params = match parse_params(parts.uri.query().unwrap_or_default().as_bytes()) {
        Ok(params) => params,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e.error, &e.description),
    };
    let param = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    if param("response_type") != Some("code") {
        let d = "response_type must be code";
        return fail(StatusCode::BAD_REQUEST, "unsupported_response_type", d);
    }
    let client_id = param("client_id").unwrap_or_default();
    if !shared.config.clients.iter().any(|c| c.id == client_id) {
        return fail(StatusCode::BAD_REQUEST, "invalid_request", "unknown client_id");
    }
    let redirect = match param("redirect_uri").map(url::Url::parse) {
        None => None,
        Some(Ok(url)) if url.fragment().is_none() => Some(url),
        Some(_) => {
            let d = "redirect_uri must be an absolute URI without fragment";
            return fail(StatusCode::BAD_REQUEST, "invalid_request", d);
        }
    };
    let code = mint_code(shared, client_id, param("redirect_uri"));
    let state = param("state");
    let Some(mut url) = redirect else {
        let mut body = serde_json::Map::new();
        body.insert("code".into(), code.into());
        if let Some(state) = state {
            body.insert("state".into(), state.into());
        }
        return json_response(StatusCode::OK, serde_json::Value::Object(body).to_string());
    };
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("code", &code);
        if let Some(state) = state {
            query.append_pair("state", state);
        }
    }
    match HeaderValue::from_str(url.as_str()) {
        Ok(location) => {
            let mut resp = response(StatusCode::FOUND, "text/plain", "");
            resp.headers_mut().insert(header::LOCATION, location);
            resp
        }
        Err(_) => fail(StatusCode::BAD_REQUEST, "invalid_request", "bad redirect_uri"),
    }
}

/// The user endpoint: the legacy fields for a valid bearer token, in GoTo's admin API's names.
pub(super) async fn me(shared: &Core, headers: &HeaderMap) -> std::io::Result<Resp> {
    let fault = lock(&shared.me_fault).clone();
    if let Some(answer) = injected(fault).await {
        return answer;
    }
    if !bearer(headers).is_some_and(|t| lock(&shared.grants).access_valid(t)) {
        return Ok(invalid_token());
    }
    let body = json!({
        "key": "18889842069694200",
        "accountKey": "3792882212321659654",
        "email": "jk@example.com",
        "firstName": "Jon",
        "lastName": "Karmak",
        "locale": "en_US",
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// Any path under `/G2W/` or `/G2M/`: needs a valid bearer token.
pub(super) fn api(shared: &Core, headers: &HeaderMap) -> Resp {
    if bearer(headers).is_some_and(|t| lock(&shared.grants).access_valid(t)) {
        let body = json!([{"webinarKey": "1235813", "subject": "Stand-in webinar"}]);
        return json_response(StatusCode::OK, body.to_string());
    }
    invalid_token()
}
