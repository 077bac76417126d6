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
use http_body::Body as _;
use http_body_util::BodyExt;

use super::access::{Access, Done};
use super::front_door::{Route, front_door};
use super::future::Passing;
use crate::app_state::State;
use crate::body::{Body, BoxError};
use crate::continuity::minted::{self, Carried};
use crate::error::ShimError;
use crate::routes::{Summary, authorize, continuity, forward, legacy_token, v2_token};
use crate::snapshot::Snapshot;

/// Cheap to clone; every connection holds one.
#[derive(Clone)]
pub struct App {
    state: Arc<State>,
}

impl App {
    pub fn new(snapshot: Snapshot) -> Self {
        let app = Self { state: Arc::new(State::new(snapshot)) };
        app.export_tls_expiry();
        app
    }

    /// Export the end of validity of each listener's certificate in the snapshot in force.
    fn export_tls_expiry(&self) {
        let snapshot = self.snapshot();
        let metrics = &self.state.ops.metrics;
        for (listener, tls) in [("proxy", &snapshot.server_tls), ("admin", &snapshot.admin_tls)] {
            if let Some(tls) = tls {
                metrics.tls_cert(listener, tls.leaf.not_after);
            }
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The config in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.snapshot()
    }

    /// Swap in a new validated config (built by [`Snapshot::reloaded`] from the one in force)
    /// for new requests; in-flight ones finish on the old one. The pools providers kept are
    /// reconfigured to the new `[upstream]` settings.
    pub fn swap_snapshot(&self, snapshot: Snapshot) {
        let old = self.state.swap_snapshot(snapshot);
        let new = self.state.snapshot();
        self.export_tls_expiry();
        for p in &new.providers {
            if old.providers.iter().any(|o| o.name == p.name) {
                for client in [&p.api_client, &p.token_client] {
                    crate::provider::reconfigure_client(client, &old.config.upstream, &new.config.upstream);
                }
            }
        }
    }

    pub(crate) fn set_draining(&self) {
        self.state.set_draining();
    }

    pub fn is_draining(&self) -> bool {
        self.state.is_draining()
    }

    /// Handle one request from `peer`. The front-door checks and routing run now; the returned
    /// future is the route's whole handling, boxed once and sized by that route (the server
    /// holds it per request, so the largest route does not size every request). On
    /// pass-through the upstream request is already on its way to the pool when this returns.
    pub(crate) fn handle<B>(&self, mut req: Request<B>, peer: SocketAddr) -> Handling
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let snapshot = self.snapshot();
        let request_id = crate::request_id::ensure(req.headers_mut());
        // What only the access line needs is taken only when it is written.
        let access = tracing::enabled!(target: "oauth_shim::access", tracing::Level::INFO)
            .then(|| Box::new(Access::of(&req, peer)));
        // One reading of the host, for provider selection and the front door alike.
        let (provider, host) = match super::host::read(&req) {
            Ok(host) => (snapshot.select(host), Ok(())),
            Err(why) => (0, Err(ShimError::invalid_request(why))),
        };
        let done = Done {
            started: Instant::now(),
            state: Arc::clone(&self.state),
            provider,
            snapshot,
            method: req.method().clone(),
            request_id,
            access,
            _in_flight: self.state.ops.metrics.in_flight(),
        };
        let route = match host.and_then(|()| front_door(&req, &done.snapshot, done.provider)) {
            Ok(route) => route,
            Err(e) => {
                // The body was not read, so on HTTP/1 where the next request starts is unknown.
                let e = if req.version() < http::Version::HTTP_2 { e.closing() } else { e };
                let resp = done.finish(Route::Rejected, Summary::default(), Err(e));
                return Box::pin(std::future::ready(resp));
            }
        };
        let req = req.map(into_body);
        match route {
            Route::LegacyToken => Box::pin(async move {
                let mut summary = Summary::default();
                let answer =
                    legacy_token::handle(&done.state, &done.snapshot, done.provider, req, peer, &mut summary)
                        .await;
                done.finish(Route::LegacyToken, summary, answer)
            }),
            Route::Authorize { .. } => Box::pin(async move {
                let mut summary = Summary::default();
                let answer =
                    authorize::handle(&done.state, &done.snapshot, done.provider, req, peer, &mut summary)
                        .await;
                done.finish(route, summary, answer)
            }),
            Route::V2Token => Box::pin(async move {
                let mut summary = Summary::default();
                let answer =
                    v2_token::handle(&done.state, &done.snapshot, done.provider, req, peer, &mut summary)
                        .await;
                done.finish(Route::V2Token, summary, answer)
            }),
            _ => {
                // A minted token is recognised by its prefix alone, before any lookup; every
                // other request pays only this scan of its `Authorization` values and query.
                let carried = minted::carried(req.headers(), req.uri().query());
                if carried != Carried::Nowhere {
                    return minted_token(done, req, peer, carried);
                }
                let mut summary = Summary::default();
                let provider = done.snapshot.provider(done.provider);
                if req.uri().path().starts_with("/oauth/v2/") {
                    summary.client = v2_token::record_v2_native(&self.state.ops, provider, req.headers());
                }
                let forwarded = forward::start(provider, &done.snapshot, req, peer);
                Box::pin(Passing { forwarded, done: Some(done), summary })
            }
        }
    }
}

/// A pass-through request that carries a minted token: served by the continuity route when it
/// is the standard `Bearer` spelling and some client uses continuity, refused with
/// `invalid_token` otherwise. Either way the minted token is not sent upstream.
#[cold]
fn minted_token(done: Done, req: Request<Body>, peer: SocketAddr, carried: Carried) -> Handling {
    if carried == Carried::Bearer && done.snapshot.continuity {
        return Box::pin(async move {
            let mut summary = Summary::default();
            let answer = continuity::forward(&done.state, &done.snapshot, req, peer, &mut summary).await;
            done.finish(Route::Continuity, summary, answer)
        });
    }
    let e = crate::continuity::invalid_token();
    // The body is not read, so on HTTP/1 where the next request starts is unknown.
    let e =
        if req.version() < http::Version::HTTP_2 && !req.body().is_end_stream() { e.closing() } else { e };
    Box::pin(std::future::ready(done.finish(Route::Continuity, Summary::default(), Err(e))))
}

/// A request's handling, boxed once.
pub(crate) type Handling = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientConfig, Config};
    use crate::oauth::Secret;

    /// An app whose upstreams are a closed loopback port: nothing is sent anywhere, since no
    /// handling is polled.
    fn app() -> App {
        let mut config = Config::default();
        config.provider.api_base = Some("http://127.0.0.1:9".into());
        config.provider.token_url = Some("http://127.0.0.1:9/oauth/v2/token".into());
        config.provider.authorize_url = Some("http://127.0.0.1:9/oauth/v2/authorize".into());
        config.clients =
            vec![ClientConfig { id: "c".into(), secret: Some(Secret::new("s")), ..Default::default() }];
        App::new(Snapshot::new(config.validated().expect("a valid config")).expect("a valid config"))
    }

    fn handling(app: &App, method: http::Method, uri: &str) -> Handling {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::HOST, "shim.example")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        app.handle(req, "127.0.0.1:1".parse().unwrap())
    }

    /// What each route's request allocates once (the boxed handling the server holds), which the
    /// load benchmarks depend on: for pass-through, the hand-written `Passing` around
    /// `Forwarding`. The token routes box their rare branches (a refresh, the legacy-fields
    /// lookup, continuity) so those do not size every call; a route that grows past its bound
    /// here has lost that. The bounds are this test build's sizes (unoptimised, so larger than a
    /// release build's) with a little room.
    #[tokio::test]
    async fn each_route_allocates_a_small_handling() {
        let app = app();
        let size = |method, uri| std::mem::size_of_val(&*handling(&app, method, uri));
        let pass = size(http::Method::GET, "/G2W/rest/v2/organizers");
        let token = size(http::Method::GET, "/oauth/access_token?grant_type=refresh_token&client_id=c");
        let authorize = size(http::Method::GET, "/oauth/authorize?client_id=c");
        let v2 = size(http::Method::POST, "/oauth/v2/token");
        let refused = size(http::Method::CONNECT, "/");
        println!("pass {pass}, token {token}, authorize {authorize}, v2 token {v2}, refused {refused}");
        assert!(pass <= 640, "pass-through handling is {pass} bytes");
        assert!(token <= 3072, "token handling is {token} bytes");
        assert!(authorize <= 2048, "authorize handling is {authorize} bytes");
        assert!(v2 <= 2816, "v2 token handling is {v2} bytes");
        assert!(refused <= 160, "a refusal's handling is {refused} bytes");
    }
}
