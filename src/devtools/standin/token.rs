//! The token endpoints: client authentication (HTTP Basic or `client_secret_post`), and the
//! authorization-code, refresh (with rotation and reuse detection) and password grants.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header;
use http::{HeaderMap, Method, StatusCode};

use super::config::{StandinClient, StandinConfig};
use super::state::{Core, lock};
use super::wire::{
    IdentityTokenResponse, OAuthError, Resp, TokenResponse, injected, invalid_grant, invalid_request,
    json_response, oauth_error,
};

pub(super) async fn token_path(
    shared: &Core,
    parts: &http::request::Parts,
    body: &[u8],
    identity: bool,
) -> std::io::Result<Resp> {
    if !shared.config.token_delay.is_zero() {
        tokio::time::sleep(shared.config.token_delay).await;
    }
    let fault = lock(&shared.fault).clone();
    if let Some(answer) = injected(fault).await {
        return answer;
    }
    let json = token_grant(shared, parts, body).map(|t| {
        if identity {
            serde_json::to_string(&IdentityTokenResponse::from(&t))
        } else {
            serde_json::to_string(&t)
        }
    });
    Ok(match json {
        Ok(json) => match json {
            Ok(body) => json_response(StatusCode::OK, body),
            Err(e) => oauth_error(OAuthError::new("server_error", e.to_string())),
        },
        Err(e) => oauth_error(e),
    })
}

pub(super) fn token_grant(
    shared: &Core,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<TokenResponse, OAuthError> {
    if parts.method != Method::POST {
        let mut e = invalid_request("the token endpoint only accepts POST");
        e.status = StatusCode::METHOD_NOT_ALLOWED;
        return Err(e);
    }
    check_form_content_type(&parts.headers)?;
    let params = parse_params(body)?;
    let client = if shared.config.client_secret_post {
        authenticate_post(&shared.config, &parts.headers, &params)?
    } else {
        let client = authenticate(&shared.config, &parts.headers)?;
        if params.contains_key("client_id") || params.contains_key("client_secret") {
            return Err(invalid_request(
                "client credentials must not be sent in the body when HTTP Basic is used",
            ));
        }
        client
    };
    let param = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let required = |name: &str| param(name).ok_or_else(|| invalid_request(format!("missing {name}")));
    let config = &shared.config;
    let ttl = config.access_token_ttl;
    match required("grant_type")? {
        "authorization_code" => {
            let code = required("code")?;
            let mut state = lock(&shared.grants);
            let entry = state.codes.get_mut(code).filter(|c| c.client_id == client.id);
            let entry = entry.ok_or_else(|| invalid_grant("unknown authorization code"))?;
            if entry.used {
                return Err(invalid_grant("authorization code already used"));
            }
            if let Some(bound) = &entry.redirect_uri {
                let given = required("redirect_uri")?;
                if given != bound {
                    return Err(invalid_grant("redirect_uri does not match the authorization request"));
                }
            }
            entry.used = true;
            Ok(state.new_tokens(&client.id, ttl))
        }
        "refresh_token" => {
            let token = required("refresh_token")?;
            let mut state = lock(&shared.grants);
            let entry = state.refresh.get(token).filter(|r| r.client_id == client.id);
            let (grant, retired) =
                entry.map(|r| (r.grant, r.retired)).ok_or_else(|| invalid_grant("unknown refresh token"))?;
            if state.revoked.contains(&grant) {
                return Err(invalid_grant("refresh token has been revoked"));
            }
            if retired {
                state.revoked.insert(grant);
                return Err(invalid_grant("refresh token reused; grant revoked"));
            }
            let access = state.new_access(grant, ttl);
            let refresh = if config.rotate_refresh_tokens {
                if let Some(old) = state.refresh.get_mut(token) {
                    old.retired = true;
                }
                Some(state.new_refresh(&client.id, grant))
            } else if config.omit_refresh_token_on_refresh {
                None
            } else {
                Some(token.to_owned())
            };
            Ok(TokenResponse::new(access, refresh, ttl))
        }
        "password" => {
            if !client.allow_password_grant {
                let d = "client may not use the password grant";
                return Err(OAuthError::new("unauthorized_client", d));
            }
            let (username, password) = (required("username")?, required("password")?);
            if !config.users.iter().any(|(u, p)| u == username && p == password) {
                return Err(invalid_grant("invalid username or password"));
            }
            Ok(lock(&shared.grants).new_tokens(&client.id, ttl))
        }
        other => {
            Err(OAuthError::new("unsupported_grant_type", format!("grant_type {other:?} is not supported")))
        }
    }
}

pub(super) fn check_form_content_type(headers: &HeaderMap) -> Result<(), OAuthError> {
    let bad = || invalid_request("Content-Type must be application/x-www-form-urlencoded");
    let value = headers.get(header::CONTENT_TYPE).ok_or_else(bad)?;
    let value = value.to_str().map_err(|_| bad())?;
    let mut pieces = value.split(';').map(str::trim);
    let essence = pieces.next().unwrap_or_default();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(bad());
    }
    for param in pieces.filter(|p| !p.is_empty()) {
        let name = param.split('=').next().unwrap_or_default().trim();
        if !name.eq_ignore_ascii_case("charset") {
            return Err(bad());
        }
    }
    Ok(())
}

/// Parses a form body or query string; a repeated parameter is an error (RFC 6749 §3.1).
pub(super) fn parse_params(input: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut params = HashMap::new();
    for (name, value) in form_urlencoded::parse(input) {
        if params.insert(name.to_string(), value.into_owned()).is_some() {
            return Err(invalid_request(format!("parameter {name} repeated")));
        }
    }
    Ok(params)
}

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`.
pub(super) fn authenticate<'a>(
    config: &'a StandinConfig,
    headers: &HeaderMap,
) -> Result<&'a StandinClient, OAuthError> {
    let bad = |d: &str| OAuthError::new("invalid_client", d);
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or_else(|| bad("client authentication required (HTTP Basic)"))?;
    if values.next().is_some() {
        return Err(bad("more than one Authorization header"));
    }
    let value = value.to_str().map_err(|_| bad("malformed Authorization header"))?;
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad("client authentication must use HTTP Basic"));
    }
    let decoded = BASE64
        .decode(credentials.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| bad("malformed Basic credentials"))?;
    let (id, secret) = decoded
        .split_once(':')
        .and_then(|(id, secret)| Some((form_decode(id)?, form_decode(secret)?)))
        .ok_or_else(|| bad("malformed Basic credentials"))?;
    config
        .clients
        .iter()
        .find(|c| c.id == id && c.secret == secret)
        .ok_or_else(|| bad("unknown client or wrong secret"))
}

/// `client_secret_post`: the credentials in the form, and no `Authorization` header.
pub(super) fn authenticate_post<'a>(
    config: &'a StandinConfig,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<&'a StandinClient, OAuthError> {
    let bad = |d: &str| OAuthError::new("invalid_client", d);
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(bad("client authentication must use client_secret_post, not a header"));
    }
    let (Some(id), Some(secret)) = (params.get("client_id"), params.get("client_secret")) else {
        return Err(bad("client_id and client_secret are required in the form"));
    };
    config
        .clients
        .iter()
        .find(|c| c.id == *id && c.secret == *secret)
        .ok_or_else(|| bad("unknown client or wrong secret"))
}

/// Strict `application/x-www-form-urlencoded` decoding of one value; `None` on malformed input
/// or on raw characters (space, `:`, `&`, `=`, non-ASCII, ...) that an encoder must have escaped.
pub(super) fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            // Anything an encoder would have escaped means the value was not urlencoded.
            b if b.is_ascii_alphanumeric() || b"-._~*!'()".contains(&b) => out.push(b),
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}
