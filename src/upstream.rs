//! The upstream connection pool: hyper's connection-level client (`client::conn`) with a small
//! pool of our own. The app keeps two, one for pass-through and one for token calls, so a token
//! call never shares a connection with another client's API traffic.
//!
//! oauth-shim talks to one or two upstream hosts (the API base and the token URL), so the pool
//! is a short list scanned by scheme and authority under one lock, not a hash map: no key is
//! hashed or cloned per request. Idle HTTP/1 connections are reused last-in first-out, expire
//! after `pool_idle_timeout`, and at most `pool_max_idle_per_host` are kept per host. A host
//! that negotiates HTTP/2 by ALPN gets one multiplexed connection. An idle HTTP/1 connection
//! the upstream has closed (or sent anything on) is skipped when it is taken from the pool, so
//! a request starts on it only when the connection looked open a moment before. After that:
//! on hyper's path, a request the connection closed before it was written is retried once on
//! a new connection; on the [`h1`] path the request is written at once, and a failed write or
//! a connection closed before an answer is an error, never retried, since the request may
//! have reached the upstream.
//!
//! A request whose body is known up front (none, or the token call's form) on an HTTP/1
//! connection is exchanged by [`h1`] in the caller's task; hyper's `client::conn` handles a
//! streamed request body and HTTP/2. Both kinds share the pool.

mod cause;
pub(crate) mod h1;

pub use cause::Cause;

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri, request};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::body::{self, Body, BoxError};

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
    /// Bumped when the connector changes: connections opened before are not pooled again.
    generation: u64,
    /// Largest answer head read from an upstream (`upstream.max_response_header_bytes`).
    max_head: usize,
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
    conn: IdleConn,
    since: Instant,
}

enum IdleConn {
    Hyper(http1::SendRequest<Body>),
    Raw(h1::Conn),
}

impl IdleConn {
    /// Whether it can take a request now (not closed by the upstream).
    fn is_usable(&mut self) -> bool {
        match self {
            IdleConn::Hyper(tx) => tx.is_ready(),
            IdleConn::Raw(conn) => conn.is_usable(),
        }
    }
}

enum Tx {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
    /// An HTTP/1 connection no hyper dispatcher drives (yet).
    Raw(h1::Conn),
}

/// A request's body: known up front (exchanged by [`h1`] on HTTP/1), or streamed (hyper).
enum Payload {
    Known(Bytes),
    Stream(Body),
}

impl Payload {
    fn into_body(self) -> Body {
        match self {
            Payload::Known(b) if b.is_empty() => body::empty(),
            Payload::Known(b) => body::full(b),
            Payload::Stream(body) => body,
        }
    }
}

type Sent = Result<Response<UpBody>, BoxError>;

pin_project_lite::pin_project! {
    /// A request [`Upstream::send`] started. A hand-written future rather than an `async`
    /// block, which would hold the exchange twice (as its capture and as the awaited value).
    #[project = SendingProj]
    enum Sending<F> {
        /// Encoded on a pooled HTTP/1 connection, being exchanged there.
        Raw { #[pin] exchange: F },
        Other { send: std::pin::Pin<Box<dyn Future<Output = Sent> + Send>> },
        Failed { error: Option<BoxError> },
    }
}

impl<F: Future<Output = Sent>> Future for Sending<F> {
    type Output = Sent;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Sent> {
        match self.project() {
            SendingProj::Raw { exchange } => exchange.poll(cx),
            SendingProj::Other { send } => send.as_mut().poll(cx),
            SendingProj::Failed { error } => {
                std::task::Poll::Ready(Err(error.take().unwrap_or_else(|| "polled after completion".into())))
            }
        }
    }
}

/// What [`Inner::checkout`] tells a request about its host.
struct HostInfo {
    index: usize,
    host_header: HeaderValue,
    generation: u64,
    max_head: usize,
}

/// An upstream answer's body: read by [`h1`], or hyper's.
pub enum UpBody {
    Hyper(Incoming),
    Raw(h1::Body),
}

impl http_body::Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::Hyper(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpBody::Raw(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Hyper(b) => b.is_end_stream(),
            UpBody::Raw(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpBody::Hyper(b) => b.size_hint(),
            UpBody::Raw(b) => b.size_hint(),
        }
    }
}

impl Upstream {
    pub fn new(connector: Connector, idle_timeout: Duration, max_idle: usize, max_head: usize) -> Self {
        let hosts =
            Hosts { list: Vec::new(), generation: 0, max_head, sweeping: false, idle_timeout, max_idle: 0 };
        let upstream =
            Self { inner: Arc::new(Inner { connector: Mutex::new(connector), hosts: Mutex::new(hosts) }) };
        upstream.reconfigure(None, idle_timeout, max_idle, max_head);
        upstream
    }

    /// Apply new limits (a config reload). A new connector (another connect timeout or CA set)
    /// also closes the idle connections, so every later request connects under the new settings.
    pub fn reconfigure(
        &self,
        connector: Option<Connector>,
        idle_timeout: Duration,
        max_idle: usize,
        max_head: usize,
    ) {
        let mut hosts = self.inner.hosts();
        hosts.idle_timeout = idle_timeout;
        hosts.max_head = max_head;
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
            hosts.generation += 1;
            for host in &mut hosts.list {
                host.idle.clear();
                host.h2 = None;
            }
        }
    }

    /// Send `req` (absolute URI) and return the response once its head has arrived. The body
    /// streams from the connection; an HTTP/1 connection goes back to the pool when it is ready
    /// for the next request.
    pub fn request(
        &self,
        req: Request<Body>,
    ) -> impl Future<Output = Result<Response<UpBody>, BoxError>> + Send + 'static {
        use http_body::Body as _;
        let (parts, body) = req.into_parts();
        let payload = if body.is_end_stream() && known_body_fits(&parts, 0) {
            Payload::Known(Bytes::new())
        } else {
            Payload::Stream(body)
        };
        self.send(parts, payload)
    }

    /// [`Upstream::request`] with a body held in memory (the token call's form). Inlined into
    /// its callers (legacy and v2 token calls, lookups): it is small and on the token path.
    #[inline(always)]
    pub fn request_full(
        &self,
        req: Request<Bytes>,
    ) -> impl Future<Output = Result<Response<UpBody>, BoxError>> + '_ {
        let (parts, body) = req.into_parts();
        let payload = if known_body_fits(&parts, body.len()) {
            Payload::Known(body)
        } else {
            Payload::Stream(body::full(body))
        };
        self.send(parts, payload)
    }

    /// Checkout, and on a pooled HTTP/1 connection with a known body the request's encoding,
    /// happen here, before the returned future first waits: that future holds neither the
    /// request's parts (which may share hyper's read buffer of the incoming request) nor the
    /// state of the rarer paths (a new connection, hyper's client), which are boxed. It owns
    /// what it needs (no borrow of the pool), so a caller can start a request synchronously.
    fn send(
        &self,
        parts: request::Parts,
        payload: Payload,
    ) -> impl Future<Output = Result<Response<UpBody>, BoxError>> + Send + 'static {
        let (Some(scheme), Some(authority)) = (parts.uri.scheme(), parts.uri.authority()) else {
            return Sending::Failed { error: Some("upstream URI without scheme or authority".into()) };
        };
        let (pooled, host) = self.inner.checkout(scheme, authority);
        match (pooled, payload) {
            (Some(Tx::Raw(mut conn)), Payload::Known(bytes)) => {
                let pending = conn.start(parts, &host.host_header, &bytes);
                Sending::Raw { exchange: exchange(conn, pending, host, Arc::clone(&self.inner)) }
            }
            (pooled, payload) => {
                let this = self.clone();
                Sending::Other {
                    send: Box::pin(async move { this.send_other(parts, payload, pooled, host).await }),
                }
            }
        }
    }

    /// Every case but a known body on a pooled HTTP/1 connection: a new connection first, or a
    /// streamed body or HTTP/2 through hyper.
    async fn send_other(
        &self,
        parts: request::Parts,
        payload: Payload,
        pooled: Option<Tx>,
        host: HostInfo,
    ) -> Result<Response<UpBody>, BoxError> {
        let reused = pooled.is_some();
        let tx = match pooled {
            Some(tx) => tx,
            None => self.connect(&parts.uri, host.generation, host.max_head).await?,
        };
        let (tx, payload) = match (tx, payload) {
            (Tx::Raw(mut conn), Payload::Known(bytes)) => {
                let pending = conn.start(parts, &host.host_header, &bytes);
                return exchange(conn, pending, host, Arc::clone(&self.inner)).await;
            }
            (Tx::Raw(conn), payload) => (Tx::H1(handshake(conn.into_io(), host.max_head).await?), payload),
            (tx, payload) => (tx, payload),
        };
        let uri = parts.uri.clone();
        let req = Request::from_parts(parts, payload.into_body());
        self.send_hyper(tx, req, reused, &uri, &host).await
    }

    /// Send through hyper's connection-level client: HTTP/2, or HTTP/1 with a streamed body.
    async fn send_hyper(
        &self,
        mut tx: Tx,
        mut req: Request<Body>,
        mut reused: bool,
        uri: &Uri,
        host: &HostInfo,
    ) -> Result<Response<UpBody>, BoxError> {
        loop {
            // An HTTP/1 sender comes back with the answer, to be pooled again.
            let sent = match tx {
                Tx::H1(mut tx1) => {
                    // HTTP/1 sends the origin form, and the authority as `Host` (HTTP/2 sends
                    // `:authority` from the URI).
                    *req.uri_mut() = origin_form(uri);
                    if !req.headers().contains_key(HOST) {
                        req.headers_mut().insert(HOST, host.host_header.clone());
                    }
                    tx1.try_send_request(req).await.map(|resp| (resp, Some(tx1)))
                }
                Tx::H2(mut tx1) => tx1.try_send_request(req).await.map(|resp| (resp, None)),
                Tx::Raw(conn) => {
                    tx = Tx::H1(handshake(conn.into_io(), host.max_head).await?);
                    continue;
                }
            };
            match sent {
                Ok((resp, h1)) => {
                    if let Some(tx1) = h1 {
                        self.give_back(host.index, host.generation, tx1);
                    }
                    return Ok(resp.map(UpBody::Hyper));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the idle connection had closed. Retry once, on a new
                    // connection.
                    Some(back) if reused => {
                        req = back;
                        *req.uri_mut() = uri.clone();
                        (tx, reused) = (self.connect_hyper(uri, host).await?, false);
                    }
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// A new connection with hyper's client on it.
    async fn connect_hyper(&self, uri: &Uri, host: &HostInfo) -> Result<Tx, BoxError> {
        match self.connect(uri, host.generation, host.max_head).await? {
            Tx::Raw(conn) => Ok(Tx::H1(handshake(conn.into_io(), host.max_head).await?)),
            tx => Ok(tx),
        }
    }

    /// Open a new connection (TCP, then TLS for https). HTTP/2 (by ALPN) starts hyper's
    /// connection task; HTTP/1 is returned as it is, for [`h1`] or a hyper handshake.
    async fn connect(&self, uri: &Uri, generation: u64, max_head: usize) -> Result<Tx, BoxError> {
        let mut connector = self.inner.connector.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let io = connector.call(uri.clone()).await?;
        if io.connected().is_negotiated_h2() {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX))
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
            Ok(Tx::Raw(h1::Conn::new(hyper_util::rt::TokioIo::new(io), generation)))
        }
    }

    /// Pool an HTTP/1 connection once it can take the next request: at once when the whole
    /// response has been read already (the common small answer), else when its body is done.
    fn give_back(&self, host: usize, generation: u64, mut tx: http1::SendRequest<Body>) {
        if tx.is_closed() {
            return;
        }
        if tx.is_ready() {
            self.inner.put(host, generation, IdleConn::Hyper(tx));
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            if tx.ready().await.is_ok()
                && let Some(inner) = inner.upgrade()
            {
                inner.put(host, generation, IdleConn::Hyper(tx));
            }
        });
    }
}

/// Write a request [`h1::Conn::start`] encoded and read the answer's head; the body streams
/// from the connection, which goes back to `pool` once it has been read to the end.
async fn exchange(
    conn: h1::Conn,
    pending: h1::Pending,
    host: HostInfo,
    pool: Arc<Inner>,
) -> Result<Response<UpBody>, BoxError> {
    let (head, conn, framing, reuse) = conn.exchange(pending, host.max_head).await?;
    let back = h1::Return { pool, host: host.index };
    let body = h1::Body::new(conn, framing, reuse, back);
    Ok(Response::from_parts(head, UpBody::Raw(body)))
}

/// Whether [`h1`] can send a request with a body of `len` bytes known up front: it frames the
/// body by `Content-Length` only, and never asks for an upgrade.
fn known_body_fits(parts: &request::Parts, len: usize) -> bool {
    if parts.method == Method::CONNECT {
        return false;
    }
    // One pass over the headers rather than a hashed lookup per name.
    let mut lengths = 0;
    for (name, value) in &parts.headers {
        if *name == TRANSFER_ENCODING || *name == UPGRADE {
            return false;
        }
        if *name == CONTENT_LENGTH {
            lengths += 1;
            if value.to_str().ok().and_then(|v| v.parse::<usize>().ok()) != Some(len) {
                return false;
            }
        }
    }
    lengths <= 1
}

/// Start hyper's HTTP/1 client on a connection (a request with a streamed body).
async fn handshake(
    io: hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>,
    max_head: usize,
) -> Result<http1::SendRequest<Body>, BoxError> {
    // One buffer per message, as on the server side (`server.rs`).
    let (tx, conn) =
        http1::Builder::new().writev(false).max_buf_size(max_head.max(8192)).handshake::<_, Body>(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/1 connection ended");
        }
    });
    Ok(tx)
}

impl Inner {
    /// A ready pooled connection to the host, if any, and what a request needs to know about
    /// the host.
    fn checkout(&self, scheme: &Scheme, authority: &Authority) -> (Option<Tx>, HostInfo) {
        let mut hosts = self.hosts();
        let (idle_timeout, generation, max_head) = (hosts.idle_timeout, hosts.generation, hosts.max_head);
        let index = hosts.index(scheme, authority);
        let host = &mut hosts.list[index];
        let info = HostInfo { index, host_header: host.host_header.clone(), generation, max_head };
        if let Some(h2) = &host.h2 {
            if !h2.is_closed() {
                return (Some(Tx::H2(h2.clone())), info);
            }
            host.h2 = None;
        }
        let now = Instant::now();
        // Most recently used last.
        while let Some(mut idle) = host.idle.pop() {
            if now.duration_since(idle.since) < idle_timeout && idle.conn.is_usable() {
                return match idle.conn {
                    IdleConn::Hyper(tx) => (Some(Tx::H1(tx)), info),
                    IdleConn::Raw(conn) => (Some(Tx::Raw(conn)), info),
                };
            }
            // Closed by the upstream, or expired: dropping it closes the connection.
        }
        (None, info)
    }

    fn put(self: &Arc<Self>, host: usize, generation: u64, conn: IdleConn) {
        let mut hosts = self.hosts();
        if generation != hosts.generation {
            return;
        }
        let max_idle = hosts.max_idle;
        let Some(host) = hosts.list.get_mut(host) else { return };
        if host.idle.len() >= max_idle {
            return;
        }
        host.idle.push(Idle { conn, since: Instant::now() });
        if !hosts.sweeping {
            hosts.sweeping = true;
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// Pool a connection [`h1`] has read an answer to the end on.
    fn put_raw(self: &Arc<Self>, host: usize, conn: h1::Conn) {
        let generation = conn.generation();
        self.put(host, generation, IdleConn::Raw(conn));
    }

    fn set_h2(&self, uri: &Uri, tx: http2::SendRequest<Body>) {
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else { return };
        let mut hosts = self.hosts();
        let index = hosts.index(scheme, authority);
        hosts.list[index].h2 = Some(tx);
    }

    fn hosts(&self) -> std::sync::MutexGuard<'_, Hosts> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Hosts {
    /// The host's place in the list (hosts are never removed, so it stays valid).
    fn index(&mut self, scheme: &Scheme, authority: &Authority) -> usize {
        // Byte equality first: the URIs come from config, so the same host is spelled the same
        // way and the case-insensitive `Authority` comparison rarely has to run.
        let same = |h: &Host| {
            (h.authority.as_str() == authority.as_str() || h.authority == *authority) && h.scheme == *scheme
        };
        match self.list.iter().position(same) {
            Some(i) => i,
            None => {
                self.list.push(Host::new(scheme, authority));
                self.list.len() - 1
            }
        }
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
            host.idle.retain_mut(|i| now.duration_since(i.since) < idle_timeout && i.conn.is_usable());
            if host.h2.as_ref().is_some_and(|h2| h2.is_closed()) {
                host.h2 = None;
            }
        }
    }
}
