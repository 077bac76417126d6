//! `/oauth/access_token`: read the legacy call, decide by the client's mode, rewrite it to a v2
//! token call (refreshes through the flight both token routes share, `routes::refresh`), and
//! answer in the legacy shape (docs/protocol.md#the-legacy-token-call).

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, PRAGMA};
use http::{Method, Request, Response, StatusCode};

use super::summary::Summary;
use crate::app_state::State;
use crate::body::{self, Body};
use crate::config::{ClientAuth, ClientMode};
use crate::continuity::minted;
use crate::error::ShimError;
use crate::legacy::{self, Grant, V2Request};
use crate::oauth::V2Token;
use crate::oauth::token_call;
use crate::provider::Provider;
use crate::refresh::Proof;
use crate::routes::forward;
use crate::routes::refresh::{self, Refresh};
use crate::snapshot::Snapshot;

/// Read a v2 token call's body as the legacy route reads its own: at most `max` bytes (refused
/// from a declared `Content-Length` before any of it is read), all of it within `deadline`.
pub(crate) async fn read_body(
    parts: &http::request::Parts,
    body: Body,
    max: usize,
    deadline: std::time::Duration,
) -> Result<bytes::Bytes, ShimError> {
    refuse_declared_over(&parts.headers, max)?;
    let read = crate::body::read_limited(body, max);
    match tokio::time::timeout(deadline, read).await {
        Ok(read) => read.map_err(read_failed),
        Err(_) => Err(ShimError::invalid_request("the request body did not arrive in time")
            .status(StatusCode::REQUEST_TIMEOUT)
            .closing()),
    }
}

/// The error of a request body that could not be read whole.
fn read_failed(e: crate::body::ReadError) -> ShimError {
    match e {
        crate::body::ReadError::TooLarge => too_large(),
        crate::body::ReadError::Body => {
            ShimError::invalid_request("the request body could not be read").closing()
        }
    }
}

/// Serve a legacy token call.
pub(crate) async fn handle(
    state: &State,
    snapshot: &Arc<Snapshot>,
    provider_index: usize,
    req: Request<Body>,
    peer: SocketAddr,
    summary: &mut Summary,
) -> Result<Response<Body>, ShimError> {
    let (parts, body) = req.into_parts();
    if parts.method != Method::GET && parts.method != Method::POST {
        return Err(ShimError::method_not_allowed("GET, POST"));
    }
    let provider = snapshot.provider(provider_index);
    // Read here rather than through `read_body`: one state machine less on every token call.
    let max = snapshot.config.server.max_body_bytes;
    refuse_declared_over(&parts.headers, max)?;
    // The whole body within `body_read_timeout`: a client trickling bytes cannot hold the
    // connection (and this task) for longer. A bodiless call (a GET) needs no timer, and a body
    // that arrived with its head is read on the first poll, before the timer is registered.
    let bytes = if http_body::Body::is_end_stream(&body) {
        bytes::Bytes::new()
    } else {
        // Boxed: the timer and the read would otherwise size this whole future (which every
        // token call allocates), GETs included.
        let read = crate::body::read_limited(body, max);
        match Box::pin(tokio::time::timeout(snapshot.config.server.body_read_timeout, read)).await {
            Err(_) => {
                return Err(ShimError::invalid_request("the request body did not arrive in time")
                    .status(StatusCode::REQUEST_TIMEOUT)
                    .closing());
            }
            Ok(read) => read.map_err(read_failed)?,
        }
    };
    if parts.method == Method::GET && !bytes.is_empty() {
        return Err(ShimError::invalid_request("a GET token request must not carry a body"));
    }

    let trace = crate::oauth::TraceHeaders::from_headers(&parts.headers);
    let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let auth = parts.headers.get(http::header::AUTHORIZATION).map(HeaderValue::as_bytes);
    let (params, kind) = legacy::collect(parts.uri.query(), content_type, &bytes, auth)?;

    let basic = params.basic_auth;
    let challenge = |mut e: ShimError| {
        e.challenge = basic;
        e
    };
    let Some(client_id) = params.client_id.as_deref() else {
        return Err(challenge(ShimError::invalid_client("missing client_id")));
    };
    let configured = provider.client(client_id);
    record_usage(state, provider, client_id, configured.is_some(), &parts.method, kind, &params);
    let Some((client, auth)) = configured else {
        summary.client = Some("unknown".into());
        return Err(challenge(ShimError::invalid_client("unknown client_id")));
    };
    summary.client = Some(client.id.clone());

    match client.mode {
        ClientMode::Rewrite => {}
        ClientMode::Deny => {
            return Err(ShimError::unauthorized_client(
                "this client must migrate to the OAuth v2 API: legacy token calls are no longer accepted",
            ));
        }
        ClientMode::Passthrough => {
            // Forwarded as it came: a minted token anywhere in it must not go along.
            let auth = parts.headers.get_all(http::header::AUTHORIZATION);
            if auth.iter().any(|v| minted::contains(v.as_bytes()))
                || legacy::all_pairs(parts.uri.query(), kind, &bytes)?
                    .iter()
                    .any(|(_, v)| minted::starts(v.as_bytes()))
            {
                return Err(crate::continuity::invalid_token());
            }
            let req = Request::from_parts(parts, body::full(bytes));
            // Boxed, as is the other grants' upstream call below: this future is sized by its
            // largest branch, and every token request (and, through `App::handle`, every
            // request) would otherwise allocate and move that much.
            return Box::pin(forward::forward(provider, snapshot, req, peer, summary)).await;
        }
    }

    if let Some(sent) = &params.client_secret
        && !client.secret().ct_eq(sent.expose())
    {
        return Err(challenge(ShimError::invalid_client("client authentication failed")));
    }

    // A minted refresh token of a continuity client is answered from its session; a minted
    // token in any other parameter the v2 call would carry is refused, never sent upstream.
    let continuity_refresh = client.continuity
        && params.grant_type.as_deref() == Some("refresh_token")
        && params.refresh_token.as_ref().is_some_and(|t| t.expose().starts_with(minted::REFRESH_PREFIX));
    if carries_minted(&params, !continuity_refresh) {
        return Err(crate::continuity::invalid_token());
    }
    let mut v2 = legacy::to_v2(&params, client)?;
    let auth = match provider.client_auth {
        ClientAuth::ClientSecretBasic => Some(auth.clone()),
        ClientAuth::ClientSecretPost => {
            v2.form = legacy::with_client_credentials(&v2.form, &client.id, client.secret());
            None
        }
    };
    // A login that creates a continuity session takes its place under the session caps now,
    // before the upstream call: a login refused has not spent its code or password.
    let admission = if client.continuity && !continuity_refresh {
        let user = params.username.as_ref().filter(|_| v2.grant == Grant::Password);
        let continuity = state.continuity(snapshot)?;
        Some(Box::pin(continuity.admit(snapshot, client, user.map(crate::oauth::Secret::expose))).await?)
    } else {
        None
    };
    let legacy_cfg = &snapshot.config.legacy;
    // Not held while the upstream answers: the head shares hyper's read buffer, which hyper
    // can then reuse for the connection's next request instead of allocating another.
    drop((parts, bytes));

    if v2.grant == Grant::RefreshToken {
        let V2Request { form, refresh_token, .. } = v2;
        let sent = refresh_token.unwrap_or_default();
        if continuity_refresh {
            let continuity = state.continuity(snapshot)?;
            let json = Box::pin(continuity.legacy_refresh(snapshot, client, &sent, trace)).await?;
            summary.detail = Some("continuity");
            return Ok(success(json));
        }
        // The lookup (if any) runs within the token call's deadline, counted from here.
        let started = provider.lookup.is_some().then(std::time::Instant::now);
        let call = Refresh {
            provider_index,
            client_id: &client.id,
            refresh_token: &sent,
            form: &form,
            auth: &auth,
            trace: &trace,
            proof: Proof::Configured,
            legacy: true,
        };
        let served = match Box::pin(refresh::serve(state, snapshot, call)).await {
            Ok(served) => served,
            Err(e) => return Err(give_back(admission, refresh::legacy_error(e)).await),
        };
        summary.detail = Some(served.source.as_str());
        let mut token = served.value.token().clone();
        if let Some(started) = started {
            let cfg = &snapshot.config.upstream.call_limits();
            let deadline = tokio::time::Instant::from_std(started) + cfg.request_timeout;
            token = Box::pin(fill_legacy_fields(provider, token, deadline, cfg)).await;
        }
        if let Some(admission) = admission {
            let continuity = state.continuity(snapshot)?;
            return Ok(success(Box::pin(continuity.create(snapshot, client, &token, admission)).await?));
        }
        return Ok(success(render(state, provider, &token, served.age, Some(&sent), legacy_cfg)));
    }

    let started = std::time::Instant::now();
    let cfg = &snapshot.config.upstream.call_limits();
    let result =
        Box::pin(token_call(&provider.token_client, &provider.token_url, auth, &v2.form, cfg, trace)).await;
    summary.upstream_latency = Some(started.elapsed());
    summary.upstream_status = result.upstream_status;
    let mut token = match result.result {
        Ok(token) => token,
        Err(e) => return Err(give_back(admission, e).await),
    };
    if provider.lookup.is_some() {
        let deadline = tokio::time::Instant::from_std(started) + cfg.request_timeout;
        token = Box::pin(fill_legacy_fields(provider, token, deadline, cfg)).await;
    }
    if let Some(admission) = admission {
        let continuity = state.continuity(snapshot)?;
        return Ok(success(Box::pin(continuity.create(snapshot, client, &token, admission)).await?));
    }
    Ok(success(render(state, provider, &token, std::time::Duration::ZERO, None, legacy_cfg)))
}

/// The legacy answer of `token` (see [`V2Token::render_legacy`]), counting an answer that gets
/// `legacy.default_expires_in` because the upstream stated no lifetime.
fn render(
    state: &State,
    provider: &Provider,
    token: &V2Token,
    age: std::time::Duration,
    sent_refresh_token: Option<&crate::oauth::Secret>,
    legacy_cfg: &crate::config::LegacyConfig,
) -> Vec<u8> {
    if token.lifetime().is_none() {
        state.ops.metrics.legacy_expires_in_defaulted(&provider.name);
    }
    token.render_legacy(age, sent_refresh_token, legacy_cfg)
}

/// A failed login's error, once the place it took under the session caps is given back.
async fn give_back(admission: Option<crate::continuity::Admission>, e: ShimError) -> ShimError {
    if let Some(admission) = admission {
        Box::pin(admission.give_back()).await;
    }
    e
}

/// Whether a parameter the v2 call is built from starts with a minted token (the refresh
/// token only when `refresh` is set).
fn carries_minted(params: &legacy::LegacyParams, refresh: bool) -> bool {
    let secrets = [&params.code, &params.username, &params.password, &params.code_verifier];
    let texts = [&params.redirect_uri, &params.scope];
    let minted = |v: &str| minted::starts(v.as_bytes());
    (refresh && params.refresh_token.as_ref().is_some_and(|t| minted(t.expose())))
        || secrets.iter().any(|s| s.as_ref().is_some_and(|s| minted(s.expose())))
        || texts.iter().any(|t| t.as_deref().is_some_and(minted))
}

/// The provider's legacy-fields lookup, when it has one and the answer lacks a field it fills.
async fn fill_legacy_fields(
    provider: &Provider,
    token: V2Token,
    deadline: tokio::time::Instant,
    cfg: &crate::oauth::CallLimits,
) -> V2Token {
    match &provider.lookup {
        Some(lookup) if lookup.wants(&token) => {
            lookup
                .fill(&provider.token_client, &token, deadline, cfg.max_response_bytes, &provider.name)
                .await
        }
        _ => token,
    }
}

/// Feed the migration report: how this client sent its call, and which legacy features it used.
fn record_usage(
    state: &State,
    provider: &Provider,
    client_id: &str,
    configured: bool,
    method: &Method,
    kind: legacy::BodyKind,
    params: &legacy::LegacyParams,
) {
    use crate::ops::migration::{Call, Feature};
    let call = Call::default()
        .with(Feature::TokenGet, method == Method::GET)
        .with(Feature::TokenJson, kind == legacy::BodyKind::Json)
        .with(Feature::TokenForm, kind == legacy::BodyKind::Form)
        .with(Feature::PasswordGrant, params.grant_type.as_deref() == Some("password"))
        .with(Feature::ClientSecretSent, params.client_secret.is_some());
    state.ops.migration.record(&provider.name, client_id, configured, call);
}

/// Refuse a body whose declared `Content-Length` is unreadable (400) or over `max` (413),
/// before any of it is read.
#[inline]
fn refuse_declared_over(headers: &http::HeaderMap, max: usize) -> Result<(), ShimError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()))
        .map(|n| n.ok_or_else(|| ShimError::invalid_request("invalid Content-Length")));
    if let Some(n) = declared.transpose()?
        && n > max as u64
    {
        return Err(too_large());
    }
    Ok(())
}

pub(crate) fn too_large() -> ShimError {
    ShimError::invalid_request("request body too large").status(StatusCode::PAYLOAD_TOO_LARGE).closing()
}

/// A legacy success answer with the headers RFC 6749 §5.1 and legacy clients expect.
fn success(json: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(body::full(json));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}
