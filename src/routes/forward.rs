//! Pass-through: every path that is not a legacy OAuth call goes to the selected provider's API
//! base (`upstream.api_base` for the default) unchanged (method, path, query, headers, body
//! streamed both ways), with the headers rewritten as [`super::headers`] says. v2 token calls
//! that need no normalisation go the same way to the provider's token URL.

use std::net::SocketAddr;

use http::header;
use http::{Request, Response, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::future::{Forwarded, Forwarding, Refused};
use super::headers::{append_forwarded, strip_request_headers};
use super::summary::Summary;
use crate::body::{Body, StallGuard};
use crate::error::ShimError;
use crate::provider::{Base, Provider};
use crate::snapshot::Snapshot;
use crate::upstream::Upstream;

/// Forward `req` to the provider's API base and stream the answer back.
pub(crate) async fn forward(
    provider: &Provider,
    snapshot: &Snapshot,
    req: Request<Body>,
    peer: SocketAddr,
    summary: &mut Summary,
) -> Result<Response<Body>, ShimError> {
    let forwarded = start(provider, snapshot, req, peer).await;
    Ok(forwarded.map_err(|r| r.at(&provider.api_base))?.record(summary))
}

/// Forward `req` unchanged to the host of the provider's token URL (same path and query) and
/// stream the answer back.
pub(crate) async fn forward_to_token_url(
    provider: &Provider,
    snapshot: &Snapshot,
    req: Request<Body>,
    peer: SocketAddr,
    summary: &mut Summary,
) -> Result<Response<Body>, ShimError> {
    let forwarded = start_on(&provider.token_client, &provider.token_base, snapshot, req, peer).await;
    Ok(forwarded.map_err(|r| r.at(&provider.token_base))?.record(summary))
}

/// [`forward`], started now: the request is prepared and handed to the pool (which, on a
/// pooled HTTP/1 connection, encodes it) before this returns. The future owns what it needs
/// and holds the upstream call and its timer, not the request.
pub(crate) fn start(
    provider: &Provider,
    snapshot: &Snapshot,
    req: Request<Body>,
    peer: SocketAddr,
) -> impl Future<Output = Result<Forwarded, Refused>> + Send + 'static {
    start_on(&provider.api_client, &provider.api_base, snapshot, req, peer)
}

/// [`start`] towards `base` through `client`. Always inlined: pass-through's `start` is the
/// hot caller.
#[inline(always)]
fn start_on(
    client: &Upstream,
    base: &Base,
    snapshot: &Snapshot,
    req: Request<Body>,
    peer: SocketAddr,
) -> impl Future<Output = Result<Forwarded, Refused>> + Send + 'static {
    let upstream = &snapshot.config.upstream;
    match prepare(snapshot, base, req, peer) {
        Ok(req) => Forwarding::Sending {
            sent: tokio::time::timeout(upstream.request_timeout, client.request(req)),
            stall: upstream.body_stall_timeout,
        },
        Err(e) => Forwarding::Failed { error: Some(e) },
    }
}

/// The upstream request for `req`: the base's URI and `Host`, hop-by-hop and underscored
/// headers removed, `X-Forwarded-For`/`-Proto` written. (`CONNECT` never gets here: the front
/// door refuses it.)
fn prepare(
    snapshot: &Snapshot,
    base: &Base,
    req: Request<Body>,
    peer: SocketAddr,
) -> Result<Request<Body>, ShimError> {
    let (mut parts, body) = req.into_parts();
    parts.uri = base.join(&parts.uri).ok_or_else(|| ShimError::invalid_request("invalid request target"))?;
    parts.version = Version::HTTP_11;
    let h = &mut parts.headers;
    strip_request_headers(h);
    // The upstream's Host (HTTP/2 also sends :authority, from the URI: the same host).
    h.insert(header::HOST, base.host_header().clone());
    let proto = if snapshot.server_tls.is_some() { "https" } else { "http" };
    append_forwarded(h, peer, snapshot.config.server.x_forwarded_for, proto);
    // A bodiless request (most API calls) skips the guard and its allocation.
    let body = if body.is_end_stream() {
        body
    } else {
        StallGuard::new(body, snapshot.config.upstream.body_stall_timeout).boxed()
    };
    Ok(Request::from_parts(parts, body))
}
