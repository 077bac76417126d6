//! The one request entry point: [`App::handle`] gives the request its id, applies the front
//! door, and runs the route; the answer, or the route's error through the rescue, is then
//! logged and counted. The app is a value tests can call without a socket; only the server
//! touches listeners.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;

use super::access::{Access, Done};
use super::front_door::{Route, front_door};
use super::future::Passing;
use super::rescue::{Handler, wants_html};
use crate::body::{Body, BoxError};
use crate::routes::{Outcome, authorize, continuity, forward, token, v2token};
use crate::runtime::Runtime;
use crate::services::Shared;

/// Cheap to clone; every connection holds one.
#[derive(Clone)]
pub struct App {
    shared: Arc<Shared>,
}

impl App {
    pub fn new(runtime: Runtime) -> Self {
        Self { shared: Arc::new(Shared::new(runtime)) }
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The config in force now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.shared.runtime()
    }

    /// Swap in a new validated config (built by [`Runtime::reloaded`] from the one in force)
    /// for new requests; in-flight ones finish on the old one. The pools providers kept are
    /// reconfigured to the new `[upstream]` settings.
    pub fn swap_runtime(&self, runtime: Runtime) {
        let old = self.shared.swap_runtime(runtime);
        let new = self.shared.runtime();
        for p in &new.providers {
            if old.providers.iter().any(|o| o.name == p.name) {
                for pool in [&p.pool, &p.token_pool] {
                    crate::provider::reconfigure_http_client(
                        pool,
                        &old.config.upstream,
                        &new.config.upstream,
                    );
                }
            }
        }
    }

    pub fn set_draining(&self) {
        self.shared.set_draining();
    }

    pub fn is_draining(&self) -> bool {
        self.shared.is_draining()
    }

    /// Handle one request from `peer`. The front-door checks and routing run now; the returned
    /// future is the route's whole handling, boxed once and sized by that route (the server
    /// holds it per request, so the largest route does not size every request). On
    /// pass-through the upstream request is already on its way to the pool when this returns.
    pub fn handle<B>(&self, mut req: Request<B>, peer: SocketAddr) -> Handling
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let rt = self.runtime();
        let request_id = crate::request_id::ensure(req.headers_mut());
        // What only the access line needs is taken only when it is written.
        let access = tracing::enabled!(target: "oauth_shim::access", tracing::Level::INFO)
            .then(|| Box::new(Access::of(&req, peer)));
        let done = Done {
            started: Instant::now(),
            shared: Arc::clone(&self.shared),
            provider: rt.select(&req),
            rt,
            method: req.method().clone(),
            request_id,
            access,
            _in_flight: self.shared.ops.metrics.in_flight(),
        };
        let route = match front_door(&req, &done.rt, done.provider) {
            Ok(route) => route,
            Err(e) => {
                // The body was not read, so on HTTP/1 where the next request starts is unknown.
                let e = if req.version() < http::Version::HTTP_2 { e.closing() } else { e };
                let resp = done.finish(Handler::FrontDoor, Outcome::default(), Err(e));
                return Box::pin(std::future::ready(resp));
            }
        };
        let req = req.map(into_body);
        match route {
            Route::Token => Box::pin(async move {
                let mut outcome = Outcome::default();
                let answer =
                    token::handle(&done.shared, &done.rt, done.provider, req, peer, &mut outcome).await;
                done.finish(Handler::Token, outcome, answer)
            }),
            Route::Authorize => Box::pin(async move {
                let page = wants_html(&req);
                let mut outcome = Outcome::default();
                let answer =
                    authorize::handle(&done.shared, &done.rt, done.provider, req, peer, &mut outcome).await;
                done.finish(Handler::Authorize { page }, outcome, answer)
            }),
            Route::V2Token => Box::pin(async move {
                let mut outcome = Outcome::default();
                let answer =
                    v2token::handle(&done.shared, &done.rt, done.provider, req, peer, &mut outcome).await;
                done.finish(Handler::V2Token, outcome, answer)
            }),
            // A minted token is recognised by its prefix alone, before any lookup; every other
            // request pays only this header test, and only while some client uses continuity.
            _ if done.rt.continuity && carries_minted_token(req.headers()) => Box::pin(async move {
                let mut outcome = Outcome::default();
                let answer = continuity::forward(&done.shared, &done.rt, req, peer, &mut outcome).await;
                done.finish(Handler::Continuity, outcome, answer)
            }),
            _ => {
                let mut outcome = Outcome::default();
                let provider = done.rt.provider(done.provider);
                if req.uri().path().starts_with("/oauth/v2/") {
                    outcome.client = v2token::record_v2_native(&self.shared.ops, provider, req.headers());
                }
                let forwarded = forward::start(provider, &done.rt, req, peer);
                Box::pin(Passing { forwarded, done: Some(done), outcome })
            }
        }
    }
}

/// Whether the request's `Authorization` is a token oauth-shim minted. A walk over the (few)
/// request headers comparing names (an enum compare for a standard header) is cheaper than the
/// map's hashed lookup, and runs on every pass-through request while continuity is on.
fn carries_minted_token(headers: &http::HeaderMap) -> bool {
    headers.iter().any(|(name, value)| {
        name == http::header::AUTHORIZATION && crate::continuity::minted::bearer(value.as_bytes()).is_some()
    })
}

/// A request's handling, boxed once.
pub type Handling = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// A request body as every route takes it. An empty one (most API calls) is boxed without an
/// allocation (`Empty` is zero-sized).
fn into_body<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    if body.is_end_stream() {
        crate::body::empty()
    } else {
        body.map_err(|e| -> BoxError { Box::new(crate::body::ClientBodyError(e.into())) }).boxed()
    }
}
