//! The upstream connection pool: hyper's connection-level client (`client::conn`) with a small
//! pool of our own, used for token calls and pass-through alike.
//!
//! oauth-shim talks to one or two upstream hosts (the API base and the token URL), so the pool
//! is a short list scanned by scheme and authority under one lock, not a hash map: no key is
//! hashed or cloned per request. Idle HTTP/1 connections are reused last-in first-out, expire
//! after `pool_idle_timeout`, and at most `pool_max_idle_per_host` are kept per host. A host
//! that negotiates HTTP/2 by ALPN gets one multiplexed connection. A request that could not be
//! written on a reused connection (the upstream closed it while idle) is retried once on a new
//! one; a request that may have reached the upstream is never retried.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::body::{Body, BoxError};

type Connector = HttpsConnector<HttpConnector>;

/// Cheap to share: clones refer to one pool.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    /// Replaced by [`Upstream::reconfigure`]; cloned for each new connection.
    connector: Mutex<Connector>,
    hosts: Mutex<Hosts>,
}

struct Hosts {
    list: Vec<Host>,
    /// Whether the task that closes expired idle connections runs.
    sweeping: bool,
    idle_timeout: Duration,
    /// Idle connections kept per host; 0 keeps none.
    max_idle: usize,
}

struct Host {
    scheme: Scheme,
    authority: Authority,
    /// `Host` for requests that carry none: host, and the port unless it is the default.
    host_header: HeaderValue,
    /// Ready HTTP/1 connections, most recently used last.
    idle: Vec<Idle>,
    /// The host's HTTP/2 connection, when ALPN chose h2.
    h2: Option<http2::SendRequest<Body>>,
}

struct Idle {
    tx: http1::SendRequest<Body>,
    since: Instant,
}

enum Tx {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Upstream {
    pub fn new(connector: Connector, idle_timeout: Duration, max_idle: usize) -> Self {
        let hosts = Hosts { list: Vec::new(), sweeping: false, idle_timeout, max_idle: 0 };
        let upstream =
            Self { inner: Arc::new(Inner { connector: Mutex::new(connector), hosts: Mutex::new(hosts) }) };
        upstream.reconfigure(None, idle_timeout, max_idle);
        upstream
    }

    /// Apply new limits (a config reload). A new connector (another connect timeout or CA set)
    /// also closes the idle connections, so every later request connects under the new settings.
    pub fn reconfigure(&self, connector: Option<Connector>, idle_timeout: Duration, max_idle: usize) {
        let mut hosts = self.inner.hosts();
        hosts.idle_timeout = idle_timeout;
        // A zero idle timeout means no connection is kept.
        hosts.max_idle = if idle_timeout.is_zero() { 0 } else { max_idle };
        let max = hosts.max_idle;
        for host in &mut hosts.list {
            // The oldest go first (most recently used are last).
            let excess = host.idle.len().saturating_sub(max);
            host.idle.drain(..excess);
        }
        if let Some(connector) = connector {
            *self.inner.connector.lock().unwrap_or_else(|p| p.into_inner()) = connector;
            for host in &mut hosts.list {
                host.idle.clear();
                host.h2 = None;
            }
        }
    }

    /// Send `req` (absolute URI) and return the response once its head has arrived. The body
    /// streams from the connection; an HTTP/1 connection goes back to the pool when it is ready
    /// for the next request.
    pub async fn request(&self, mut req: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        let uri = req.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err("upstream URI without scheme or authority".into());
        };
        let (mut pooled, host) = self.inner.checkout(scheme, authority);
        loop {
            let reused = pooled.is_some();
            let tx = match pooled.take() {
                Some(tx) => tx,
                // Boxed: the connect and handshake futures are large, and every request's future
                // (moved into place per request) would otherwise be sized for them.
                None => Box::pin(self.connect(&uri)).await?,
            };
            let (resp, tx) = match tx {
                Tx::H1(mut tx) => {
                    // HTTP/1 sends the origin form, and the authority as `Host` (HTTP/2 sends
                    // `:authority` from the URI).
                    *req.uri_mut() = origin_form(&uri);
                    if !req.headers().contains_key(HOST) {
                        req.headers_mut().insert(HOST, host.clone());
                    }
                    match tx.try_send_request(req).await {
                        Ok(resp) => (resp, tx),
                        Err(mut e) => match e.take_message() {
                            // Never written: the idle connection had closed. Retry once, on a
                            // new connection.
                            Some(back) if reused => {
                                req = back;
                                *req.uri_mut() = uri.clone();
                                continue;
                            }
                            _ => return Err(e.into_error().into()),
                        },
                    }
                }
                Tx::H2(mut tx) => match tx.try_send_request(req).await {
                    Ok(resp) => return Ok(resp),
                    Err(mut e) => match e.take_message() {
                        Some(back) if reused => {
                            req = back;
                            continue;
                        }
                        _ => return Err(e.into_error().into()),
                    },
                },
            };
            self.give_back(scheme, authority, tx);
            return Ok(resp);
        }
    }

    /// Open a new connection (TCP, then TLS for https) and start hyper's connection task.
    async fn connect(&self, uri: &Uri) -> Result<Tx, BoxError> {
        let mut connector = self.inner.connector.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let io = connector.call(uri.clone()).await?;
        if io.connected().is_negotiated_h2() {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake::<_, Body>(io)
                .await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            self.inner.set_h2(uri, tx.clone());
            Ok(Tx::H2(tx))
        } else {
            // One buffer per message, as on the server side (`server.rs`).
            let (tx, conn) = http1::Builder::new().writev(false).handshake::<_, Body>(io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/1 connection ended");
                }
            });
            Ok(Tx::H1(tx))
        }
    }

    /// Pool an HTTP/1 connection once it can take the next request: at once when the whole
    /// response has been read already (the common small answer), else when its body is done.
    fn give_back(&self, scheme: &Scheme, authority: &Authority, mut tx: http1::SendRequest<Body>) {
        if tx.is_closed() {
            return;
        }
        if tx.is_ready() {
            self.inner.put(scheme, authority, tx);
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        let (scheme, authority) = (scheme.clone(), authority.clone());
        tokio::spawn(async move {
            if tx.ready().await.is_ok()
                && let Some(inner) = inner.upgrade()
            {
                inner.put(&scheme, &authority, tx);
            }
        });
    }
}

impl Inner {
    /// A ready pooled connection to the host, if any, and the host's `Host` header.
    fn checkout(&self, scheme: &Scheme, authority: &Authority) -> (Option<Tx>, HeaderValue) {
        let mut hosts = self.hosts();
        let idle_timeout = hosts.idle_timeout;
        let host = hosts.entry(scheme, authority);
        if let Some(h2) = &host.h2 {
            if !h2.is_closed() {
                return (Some(Tx::H2(h2.clone())), host.host_header.clone());
            }
            host.h2 = None;
        }
        let now = Instant::now();
        while let Some(idle) = host.idle.pop() {
            if idle.tx.is_ready() && now.duration_since(idle.since) < idle_timeout {
                return (Some(Tx::H1(idle.tx)), host.host_header.clone());
            }
            // Closed by the upstream, or expired: dropping the sender closes the connection.
        }
        (None, host.host_header.clone())
    }

    fn put(self: &Arc<Self>, scheme: &Scheme, authority: &Authority, tx: http1::SendRequest<Body>) {
        let mut hosts = self.hosts();
        let max_idle = hosts.max_idle;
        let host = hosts.entry(scheme, authority);
        if host.idle.len() >= max_idle {
            return;
        }
        host.idle.push(Idle { tx, since: Instant::now() });
        if !hosts.sweeping {
            hosts.sweeping = true;
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }

    fn set_h2(&self, uri: &Uri, tx: http2::SendRequest<Body>) {
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else { return };
        let mut hosts = self.hosts();
        hosts.entry(scheme, authority).h2 = Some(tx);
    }

    fn hosts(&self) -> std::sync::MutexGuard<'_, Hosts> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Hosts {
    fn entry(&mut self, scheme: &Scheme, authority: &Authority) -> &mut Host {
        // Byte equality first: the URIs come from config, so the same host is spelled the same
        // way and the case-insensitive `Authority` comparison rarely has to run.
        let same = |h: &Host| {
            (h.authority.as_str() == authority.as_str() || h.authority == *authority) && h.scheme == *scheme
        };
        let i = match self.list.iter().position(same) {
            Some(i) => i,
            None => {
                self.list.push(Host::new(scheme, authority));
                self.list.len() - 1
            }
        };
        &mut self.list[i]
    }
}

impl Host {
    fn new(scheme: &Scheme, authority: &Authority) -> Self {
        Self {
            scheme: scheme.clone(),
            authority: authority.clone(),
            host_header: host_header(scheme, authority),
            idle: Vec::new(),
            h2: None,
        }
    }
}

/// `Host` as hyper-util's client formats it: the host, and the port unless it is the scheme's
/// default.
fn host_header(scheme: &Scheme, authority: &Authority) -> HeaderValue {
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let value = match authority.port_u16() {
        Some(port) if port != default_port => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    };
    // An authority's host and port are always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

/// Close idle connections older than the idle timeout, until the pool is dropped.
async fn sweep(inner: Weak<Inner>) {
    let mut every = Duration::ZERO;
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let mut hosts = inner.hosts();
        // Read each round: a reload may change it.
        let idle_timeout = hosts.idle_timeout;
        every = (idle_timeout / 2).max(Duration::from_millis(100));
        for host in &mut hosts.list {
            host.idle.retain(|i| !i.tx.is_closed() && now.duration_since(i.since) < idle_timeout);
            if host.h2.as_ref().is_some_and(|h2| h2.is_closed()) {
                host.h2 = None;
            }
        }
    }
}
