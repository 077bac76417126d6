//! API calls with a minted access token: authenticated against the session store before
//! anything reaches the upstream, then forwarded as [`super::forward`] does, with the session's
//! current v2 token in `Authorization`. A bodiless request refused with 401 is retried once
//! after a refresh (a request whose body has been streamed cannot be replayed).

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{AUTHORIZATION, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as _;

use super::summary::Summary;
use crate::app_state::State;
use crate::body::Body;
use crate::error::ShimError;
use crate::oauth::Secret;
use crate::routes::forward;
use crate::snapshot::Snapshot;

/// Forward an API call that carries a minted access token.
pub(crate) async fn forward(
    state: &State,
    snapshot: &Arc<Snapshot>,
    req: Request<Body>,
    peer: SocketAddr,
    summary: &mut Summary,
) -> Result<Response<Body>, ShimError> {
    let continuity = state.continuity(snapshot)?;
    let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes).unwrap_or_default();
    let token = crate::continuity::minted::bearer(header).ok_or_else(crate::continuity::invalid_token)?;
    let session = continuity.authenticate(snapshot, token).await?;
    summary.client = Some(session.client_id.clone());
    state.ops.migration.record(
        crate::config::DEFAULT_PROVIDER,
        &session.client_id,
        true,
        crate::ops::migration::Call::default().with(crate::ops::migration::Feature::Continuity, true),
    );
    // A refresh this request waits for carries its id and trace context upstream.
    let trace = crate::oauth::TraceHeaders::from_headers(req.headers());
    let session = continuity
        .ensure_fresh(&snapshot.default_provider().token_client, snapshot, session, trace.clone())
        .await?;

    let (mut parts, body) = req.into_parts();
    // Only a request without a body can be sent twice.
    let replay = body
        .is_end_stream()
        .then(|| (parts.method.clone(), parts.uri.clone(), parts.version, parts.headers.clone()));
    parts.headers.insert(AUTHORIZATION, bearer(&session.v2_access)?);
    let api_base = &snapshot.default_provider().api_base;
    let sent = forward::start(snapshot.default_provider(), snapshot, Request::from_parts(parts, body), peer)
        .await
        .map_err(|r| r.at(api_base))?;
    summary.detail = Some("continuity");
    let Some((method, uri, version, mut headers)) = replay else { return Ok(sent.record(summary)) };
    if sent.upstream_status != Some(StatusCode::UNAUTHORIZED) {
        return Ok(sent.record(summary));
    }
    let fresh = match continuity
        .refresh_after_401(&snapshot.default_provider().token_client, snapshot, &session, trace)
        .await
    {
        Ok(fresh) if fresh.v2_access != session.v2_access => fresh,
        // No newer token to try: the upstream's 401 stands.
        Ok(_) => return Ok(sent.record(summary)),
        Err(e) => return Err(e),
    };
    drop(sent);
    headers.insert(AUTHORIZATION, bearer(&fresh.v2_access)?);
    let mut retry = Request::new(crate::body::empty());
    *retry.method_mut() = method;
    *retry.uri_mut() = uri;
    *retry.version_mut() = version;
    *retry.headers_mut() = headers;
    let sent = forward::start(snapshot.default_provider(), snapshot, retry, peer)
        .await
        .map_err(|r| r.at(api_base))?;
    summary.detail = Some("continuity_retried");
    Ok(sent.record(summary))
}

fn bearer(token: &Secret) -> Result<HeaderValue, ShimError> {
    let mut v = HeaderValue::try_from(format!("Bearer {}", token.expose()))
        .map_err(|_| ShimError::upstream_garbage())?;
    v.set_sensitive(true);
    Ok(v)
}
