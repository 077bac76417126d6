//! The one request entry point: front-door checks, then routing to the legacy token rewrite,
//! the authorize redirect, or pass-through. The app is a value tests can call without a socket;
//! only `server.rs` touches listeners.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;

use crate::body::{Body, BoxError};
use crate::config::{ClientConfig, Config};
use crate::continuity::Continuity;
use crate::error::ShimError;
use crate::provider::{self, Provider};
use crate::refresh::RefreshCache;
use crate::refresh::shared::{Refresher, SharedRefresh};
use crate::state::redis::Redis;
use crate::translate::V2Token;
use crate::{authorize, forward, token, v2token};

/// A validated config plus what is derived from it once (parsed URIs, providers and their
/// clients), swapped as a whole on reload so a request sees one consistent version.
pub struct Runtime {
    pub config: Config,
    /// Every provider, the default (`[upstream]`) first.
    pub providers: Vec<Provider>,
    /// `Host` -> provider index, for the providers other than the default.
    hosts: Vec<(String, usize)>,
    /// Some client uses token continuity: pass-through requests are checked for a minted token.
    pub continuity: bool,
    /// The `[state]` key set, parsed once per config.
    pub state_keys: Option<Arc<crate::crypto::KeySet>>,
}

impl Runtime {
    /// A runtime with new upstream pools.
    pub fn new(config: Config) -> Result<Self, crate::config::ConfigError> {
        let providers = provider::build(&config, None)?;
        Self::assemble(config, providers)
    }

    /// A runtime for a reloaded config: providers that `old` had keep their upstream pools
    /// (and lookup caches).
    pub fn reloaded(config: Config, old: &Runtime) -> Result<Self, crate::config::ConfigError> {
        let providers = provider::build(&config, Some(&old.providers))?;
        Self::assemble(config, providers)
    }

    fn assemble(config: Config, providers: Vec<Provider>) -> Result<Self, crate::config::ConfigError> {
        let continuity = config.continuity_enabled();
        let state_keys = config.state.key_set()?.map(Arc::new);
        Ok(Self { hosts: provider::host_table(&config), config, providers, continuity, state_keys })
    }

    /// The configured client of the default provider with exactly this id (byte for byte),
    /// with the `Authorization` header oauth-shim sends upstream on its behalf. (Token
    /// continuity serves the default provider's clients only.)
    pub fn client(&self, id: &str) -> Option<(&ClientConfig, &HeaderValue)> {
        self.default_provider().client(id)
    }

    /// The default provider (`[upstream]`).
    pub fn default_provider(&self) -> &Provider {
        &self.providers[0]
    }

    /// The provider at `index` (as [`Runtime::select`] returned it for this runtime).
    pub fn provider(&self, index: usize) -> &Provider {
        self.providers.get(index).unwrap_or(&self.providers[0])
    }

    /// The index of the provider a request selects by its `Host`.
    pub fn select<B>(&self, req: &Request<B>) -> usize {
        provider::select(&self.hosts, req)
    }
}

/// Which handler served a request (logs, metrics). The discriminants index
/// `ops::metrics::ROUTES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Token,
    Authorize,
    PassThrough,
    Rejected,
    /// A `POST` to the selected provider's token path: a v2 token call.
    V2Token,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Authorize => "authorize",
            Self::V2Token => "v2_token",
            Self::PassThrough => "pass",
            Self::Rejected => "rejected",
        }
    }
}

/// What the per-request log line reports besides method, status and latency.
#[derive(Debug, Default)]
pub struct Outcome {
    /// A configured client's id, or `unknown` when the request named one that is not
    /// configured (a metrics label: never a caller's unchecked id).
    pub client: Option<String>,
    pub upstream_status: Option<StatusCode>,
    pub detail: Option<&'static str>,
    /// Set by handlers that time their own upstream call (token calls); otherwise a request
    /// that reached the upstream is timed as a whole (pass-through: until response headers).
    pub upstream_latency: Option<std::time::Duration>,
}

pub struct Shared {
    runtime: ArcSwap<Runtime>,
    /// Legacy refreshes: per provider namespace, client id and refresh token (in process, or
    /// shared through Redis with `[state] backend = "redis"`).
    pub refresh: Refresher<V2Token, ShimError>,
    /// v2 refreshes (answers kept as they came), keyed by provider, client id, the secret the
    /// caller presented and refresh token (in process, or shared through Redis like `refresh`).
    pub refresh_v2: Refresher<crate::oauth::RawAnswer, v2token::Failure>,
    /// The Redis connection, with `[state] backend = "redis"`.
    pub redis: Option<Redis>,
    /// Metrics, migration report, reload state; survive reloads.
    pub ops: crate::ops::Ops,
    /// The continuity service, opened when a config first enables continuity (its store and
    /// backend are fixed from then on). An open failure is kept, logged once, and answered
    /// `temporarily_unavailable` on the continuity paths only.
    continuity: std::sync::OnceLock<Result<Arc<Continuity>, String>>,
    draining: AtomicBool,
}

impl Shared {
    /// The continuity service for `rt`, opening its store on first use.
    pub fn continuity(&self, rt: &Runtime) -> Result<&Arc<Continuity>, ShimError> {
        let opened = self.continuity.get_or_init(|| {
            Continuity::open(&rt.config, self.redis.clone(), self.ops.metrics.clone()).map(Arc::new).map_err(|e| {
                tracing::error!(error = %e, "token continuity is unavailable: the session store did not open");
                e.to_string()
            })
        });
        opened.as_ref().map_err(|_| {
            ShimError::new(
                crate::error::ErrorCode::TemporarilyUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                crate::error::ErrorSource::Internal,
                "the session store is unavailable",
            )
        })
    }
}

/// Cheap to clone; every connection holds one.
#[derive(Clone)]
pub struct App {
    shared: Arc<Shared>,
}

impl App {
    pub fn new(runtime: Runtime) -> Self {
        let (refresh, refresh_v2, redis) = refreshers(&runtime.config);
        let ops = crate::ops::Ops::default();
        attach_lookups(&runtime, &ops.metrics);
        let app = Self {
            shared: Arc::new(Shared {
                runtime: ArcSwap::from_pointee(runtime),
                refresh,
                refresh_v2,
                redis,
                ops,
                continuity: std::sync::OnceLock::new(),
                draining: AtomicBool::new(false),
            }),
        };
        // Open the session store now, so a problem with it shows at start-up.
        let rt = app.runtime();
        if rt.continuity {
            let _ = app.shared.continuity(&rt);
        }
        app
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The config in force now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.shared.runtime.load_full()
    }

    /// Swap in a new validated config (built by [`Runtime::reloaded`] from the one in force)
    /// for new requests; in-flight ones finish on the old one. The pools providers kept are
    /// reconfigured to the new `[upstream]` settings.
    pub fn swap_runtime(&self, runtime: Runtime) {
        attach_lookups(&runtime, &self.shared.ops.metrics);
        let old = self.shared.runtime.swap(Arc::new(runtime));
        let new = self.shared.runtime.load();
        for p in &new.providers {
            if old.providers.iter().any(|o| o.name == p.name) {
                for pool in [&p.pool, &p.token_pool] {
                    crate::oauth::reconfigure_http_client(pool, &old.config.upstream, &new.config.upstream);
                }
            }
        }
    }

    pub fn set_draining(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
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
            app: self.clone(),
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
                let resp = refuse(&req, e);
                return Box::pin(std::future::ready(done.finish(Route::Rejected, Outcome::default(), resp)));
            }
        };
        let req = req.map(into_body);
        match route {
            Route::Token => Box::pin(async move {
                let mut outcome = Outcome::default();
                let resp =
                    token::handle(&done.app.shared, &done.rt, done.provider, req, peer, &mut outcome).await;
                done.finish(Route::Token, outcome, resp)
            }),
            Route::Authorize => Box::pin(async move {
                let mut outcome = Outcome::default();
                let resp =
                    authorize::handle(&done.app.shared, &done.rt, done.provider, req, peer, &mut outcome)
                        .await;
                done.finish(Route::Authorize, outcome, resp)
            }),
            Route::V2Token => Box::pin(async move {
                let mut outcome = Outcome::default();
                let resp =
                    v2token::handle(&done.app.shared, &done.rt, done.provider, req, peer, &mut outcome).await;
                done.finish(Route::V2Token, outcome, resp)
            }),
            // A minted token is recognised by its prefix alone, before any lookup; every other
            // request pays only this header test, and only while some client uses continuity.
            _ if done.rt.continuity && carries_minted_token(req.headers()) => Box::pin(async move {
                let mut outcome = Outcome::default();
                let resp =
                    crate::continuity::route::forward(&done.app.shared, &done.rt, req, peer, &mut outcome)
                        .await;
                done.finish(Route::PassThrough, outcome, resp)
            }),
            _ => {
                let mut outcome = Outcome::default();
                let provider = done.rt.provider(done.provider);
                if req.uri().path().starts_with("/oauth/v2/") {
                    outcome.client = self.shared.ops.record_v2_native(provider, req.headers());
                }
                let forwarded = forward::start(provider, &done.rt, req, peer);
                Box::pin(Passing { forwarded, done: Some(done), outcome })
            }
        }
    }
}

/// Count each provider's legacy-fields lookups under its name.
fn attach_lookups(runtime: &Runtime, metrics: &crate::ops::metrics::Metrics) {
    for p in &runtime.providers {
        if let Some(lookup) = &p.lookup {
            lookup.attach(|| metrics.lookup_counters(&p.name));
        }
    }
}

type Refreshers =
    (Refresher<V2Token, ShimError>, Refresher<crate::oauth::RawAnswer, v2token::Failure>, Option<Redis>);

/// The refresh caches `[state]` asks for, legacy and v2: both in process, or both shared through
/// one Redis connection (each under a key domain of its own). Needs a Tokio runtime for the
/// Redis backend.
fn refreshers(config: &Config) -> Refreshers {
    let rc = &config.refresh_cache;
    let memory = || {
        (
            Refresher::Memory(RefreshCache::new(rc.ttl, rc.max_entries)),
            Refresher::Memory(RefreshCache::new(rc.ttl, rc.max_entries)),
            None,
        )
    };
    if config.state.backend != crate::config::StateBackend::Redis {
        return memory();
    }
    // Validated at load; failing here (a CA file removed since) keeps the process serving.
    let started = config.state.key_set().and_then(|keys| {
        let keys = keys.ok_or_else(|| crate::config::ConfigError("no state encryption key".into()))?;
        Ok((Redis::start(&config.state)?, keys))
    });
    match started {
        Ok((redis, keys)) => {
            let keys = Arc::new(keys);
            let (ttl, max) = (rc.ttl, rc.max_entries);
            let legacy = SharedRefresh::new(redis.clone(), Arc::clone(&keys), "refresh", ttl, max);
            let v2 = SharedRefresh::new(redis.clone(), keys, "refresh-v2", ttl, max);
            (Refresher::Shared(legacy), Refresher::Shared(v2), Some(redis))
        }
        Err(e) => {
            tracing::error!(error = %e, "state: cannot use redis; refreshes use in-process state");
            memory()
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

pin_project_lite::pin_project! {
    /// A pass-through request's handling: the upstream call, then the log line and metrics.
    /// Written by hand: an `async` block would hold the upstream call twice (as its capture
    /// and as the value it awaits), and this is the box every API call allocates.
    struct Passing<F> {
        #[pin]
        forwarded: F,
        done: Option<Done>,
        outcome: Outcome,
    }
}

impl<F: Future<Output = forward::Forwarded>> Future for Passing<F> {
    type Output = Response<Body>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Response<Body>> {
        let this = self.project();
        let forwarded = std::task::ready!(this.forwarded.poll(cx));
        if let Some(done) = this.done.as_ref() {
            forwarded.report(&done.rt.provider(done.provider).api_base);
        }
        let resp = forwarded.record(this.outcome);
        let outcome = std::mem::take(this.outcome);
        std::task::Poll::Ready(match this.done.take() {
            Some(done) => done.finish(Route::PassThrough, outcome, resp),
            None => resp,
        })
    }
}

/// What a request's log line and metrics need once it has been answered; holds the in-flight
/// gauge up until then.
struct Done {
    started: Instant,
    app: App,
    rt: Arc<Runtime>,
    /// The index of the provider the request selected.
    provider: usize,
    method: http::Method,
    request_id: HeaderValue,
    access: Option<Box<Access>>,
    _in_flight: crate::ops::metrics::GaugeGuard,
}

/// What the access line records of the request beyond method and id.
struct Access {
    uri: Uri,
    peer: SocketAddr,
    user_agent: Option<HeaderValue>,
    /// The declared `Content-Length`, when there is one.
    bytes_in: Option<u64>,
}

impl Access {
    fn of<B>(req: &Request<B>, peer: SocketAddr) -> Self {
        let h = req.headers();
        Self {
            uri: req.uri().clone(),
            peer,
            user_agent: h.get(http::header::USER_AGENT).cloned(),
            bytes_in: h
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        }
    }
}

impl Done {
    /// Count and log the request, and hand on its answer.
    fn finish(self, route: Route, mut outcome: Outcome, mut resp: Response<Body>) -> Response<Body> {
        let ops = &self.app.shared.ops;
        let rt = &self.rt;
        let status = resp.status();
        let elapsed = self.started.elapsed();
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let client = outcome.client.take();
        let provider = rt.provider(self.provider);
        let client_label = crate::ops::client_label(client.as_deref());
        let result = outcome.detail.unwrap_or(if status.as_u16() < 400 { "ok" } else { "error" });
        ops.metrics.request(route.as_str(), &provider.name, client_label, result, status.as_u16());
        ops.metrics.request_duration(route as usize, status.as_u16(), elapsed);
        match (outcome.upstream_latency, outcome.upstream_status) {
            (Some(took), _) => ops.metrics.upstream_latency("token", took),
            (None, Some(_)) => ops.metrics.upstream_latency("pass", elapsed),
            (None, None) => {}
        }
        // One line per request. Query strings are never logged (they carry codes and tokens);
        // of the headers, only the user agent and the request id.
        if let Some(access) = self.access {
            let ua = access.user_agent.as_ref().and_then(|v| v.to_str().ok());
            tracing::info!(
                target: "oauth_shim::access",
                request_id = self.request_id.to_str().unwrap_or("-"),
                method = %self.method,
                path = access.uri.path(),
                route = route.as_str(),
                provider = &*provider.name,
                client = client.as_deref().unwrap_or("-"),
                status = status.as_u16(),
                upstream_status = outcome.upstream_status.map(|s| s.as_u16()),
                detail = outcome.detail,
                latency_ms = (latency_ms * 1000.0).round() / 1000.0,
                bytes_in = access.bytes_in,
                bytes_out = http_body::Body::size_hint(resp.body()).exact(),
                peer = %access.peer,
                user_agent = ua,
                "request"
            );
        }
        resp.headers_mut().insert(crate::request_id::X_REQUEST_ID.clone(), self.request_id);
        resp
    }
}

/// Checks made on the request head before any body is read, beyond what hyper already refuses
/// (malformed heads, oversized heads (431), targets over 64 KiB (414), differing duplicate
/// `Content-Length`, a `Transfer-Encoding` whose last coding is not `chunked`). hyper resolves
/// `Content-Length` + `Transfer-Encoding` itself (RFC 9112 §6.3: the length is dropped, the body
/// read as chunked, the connection closed after the answer), so that pair never reaches here:
/// hyper keeps no public trace of the dropped length (its header-case and header-order
/// extensions are crate-private), so it cannot be refused with a 400 here.
fn front_door<B>(req: &Request<B>, rt: &Runtime, provider: usize) -> Result<Route, ShimError> {
    let server = &rt.config.server;
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > server.max_uri_bytes {
        return Err(ShimError::invalid_request("request URI too long").status(StatusCode::URI_TOO_LONG));
    }
    let path = req.uri().path();
    check_target(req.method(), req.uri(), path)?;
    check_transfer_coding(req.headers())?;
    Ok(match path {
        "/oauth/access_token" => Route::Token,
        "/oauth/authorize" => Route::Authorize,
        path if req.method() == Method::POST && path == rt.provider(provider).token_path => Route::V2Token,
        _ => Route::PassThrough,
    })
}

/// The request-target forms of RFC 9112 §3.2: origin-form (`/path`) and absolute-form for any
/// method; asterisk-form (`*`) only for `OPTIONS`; authority-form (`host:port`) only for
/// `CONNECT`, which is a forward proxy's tunnel, never opened to the API host (405).
fn check_target(method: &http::Method, uri: &Uri, path: &str) -> Result<(), ShimError> {
    const ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
    if *method == http::Method::CONNECT {
        return Err(ShimError::method_not_allowed(ALLOW));
    }
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Err(ShimError::invalid_request("an authority-form target is only valid for CONNECT"));
    }
    if path == "*" && *method != http::Method::OPTIONS {
        return Err(ShimError::invalid_request("an asterisk-form target is only valid for OPTIONS"));
    }
    Ok(())
}

/// `chunked`, once, is the only transfer coding we accept (RFC 9112 §6.1: a coding the server
/// does not understand gets 501). Anything else would reach the upstream still encoded, since
/// `Transfer-Encoding` is hop-by-hop and stripped when forwarding.
fn check_transfer_coding(h: &http::HeaderMap) -> Result<(), ShimError> {
    let mut chunked = 0;
    for value in h.get_all(http::header::TRANSFER_ENCODING) {
        let Ok(value) = value.to_str() else {
            return Err(ShimError::invalid_request("invalid Transfer-Encoding"));
        };
        for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(ShimError::invalid_request("unsupported transfer coding")
                    .status(StatusCode::NOT_IMPLEMENTED));
            }
            chunked += 1;
        }
    }
    if chunked > 1 {
        return Err(ShimError::invalid_request("chunked applied more than once"));
    }
    Ok(())
}

/// A front-door refusal. On HTTP/1 the connection is closed after it: the body was not read, so
/// the next request's start on this connection is unknown.
fn refuse<B>(req: &Request<B>, e: ShimError) -> Response<Body> {
    let mut resp = e.into_response();
    if req.version() < http::Version::HTTP_2 {
        resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_discriminants_index_the_metric_labels() {
        for route in [Route::Token, Route::Authorize, Route::PassThrough, Route::Rejected] {
            assert_eq!(crate::ops::metrics::ROUTES[route as usize], route.as_str());
        }
    }
}
