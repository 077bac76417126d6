//! The upstream client: what a pass-through or a token call hands its request to. It takes a
//! connection from the [`super::pool`] (or opens one through [`super::connect`]), exchanges
//! the request there, and hands the answer back once its head has arrived; the body streams
//! from the connection, which goes back to the pool when it is read to the end. The app keeps
//! two clients, one for pass-through and one for token calls, so a token call never shares a
//! connection with another client's API traffic.
//!
//! A request whose body is known up front (none, or the token call's form) on an HTTP/1
//! connection is exchanged by [`super::h1`] in the caller's task; hyper's `client::conn` handles
//! a streamed request body and HTTP/2. Both kinds share the pool. A request starts on a pooled
//! connection only when it looked open a moment before. After that: on hyper's path, a request
//! the connection closed before it was written is retried once on a new connection; on the
//! [`super::h1`] path the request is written at once, and a failed write or a connection closed
//! before an answer is an error, never retried, since the request may have reached the
//! upstream. Whichever client read an HTTP/1 answer, one rule ([`super::h1`]'s framing) judges
//! its framing headers: the same answers are refused, the same headers handed on, and the same
//! connections retired.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{Method, Request, Response, Uri, request};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::connect::{self, Connector, Tx};
use super::future::Sending;
use super::h1;
use super::pool::{HostInfo, Key, Pool, Poolable, Reservation};
use crate::body::{self, Body, BoxError};

/// Cheap to share: clones refer to one pool.
#[derive(Clone)]
pub struct Upstream {
    pool: Arc<Pool<Tx>>,
    settings: Arc<Settings>,
}

struct Settings {
    /// Replaced by [`Upstream::reconfigure`]; cloned for each new connection.
    connector: Mutex<Connector>,
    /// Largest answer head read from an upstream (`upstream.max_response_header_bytes`).
    max_head: AtomicUsize,
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

/// An upstream answer's body: read by [`h1`], or hyper's.
pub(crate) enum UpBody {
    Hyper(Incoming),
    Raw(h1::Body<Release>),
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
    pub(crate) fn new(
        connector: Connector,
        idle_timeout: Duration,
        max_idle: usize,
        max_head: usize,
    ) -> Self {
        let settings = Settings { connector: Mutex::new(connector), max_head: AtomicUsize::new(max_head) };
        Self { pool: Arc::new(Pool::new(idle_timeout, max_idle)), settings: Arc::new(settings) }
    }

    /// Apply new limits (a config reload). A new connector (another connect timeout or CA set)
    /// also closes the idle connections, so every later request connects under the new settings.
    pub(crate) fn reconfigure(
        &self,
        connector: Option<Connector>,
        idle_timeout: Duration,
        max_idle: usize,
        max_head: usize,
    ) {
        self.settings.max_head.store(max_head, Ordering::Relaxed);
        self.pool.configure(idle_timeout, max_idle);
        if let Some(connector) = connector {
            *self.settings.connector.lock().unwrap_or_else(|p| p.into_inner()) = connector;
            self.pool.clear();
        }
    }

    /// Send `req` (absolute URI) and return the response once its head has arrived. The body
    /// streams from the connection; an HTTP/1 connection goes back to the pool when it is ready
    /// for the next request.
    pub(crate) fn request(
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
    pub(crate) fn request_full(
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
        let (pooled, host) = self.pool.checkout(scheme, authority);
        let max_head = self.settings.max_head.load(Ordering::Relaxed);
        match (pooled, payload) {
            (Some(Tx::Raw(mut conn)), Payload::Known(bytes)) => {
                let pending = conn.start(parts, &host.host_header, &bytes);
                let back = Release { pool: Arc::clone(&self.pool), key: host.key };
                Sending::Raw { exchange: exchange(conn, pending, max_head, back) }
            }
            (pooled, payload) => {
                let this = self.clone();
                Sending::Other {
                    send: Box::pin(
                        async move { this.send_other(parts, payload, pooled, host, max_head).await },
                    ),
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
        max_head: usize,
    ) -> Result<Response<UpBody>, BoxError> {
        let reused = pooled.is_some();
        let tx = match pooled {
            Some(tx) => tx,
            None => self.connect(&parts.uri, host.key, max_head).await?,
        };
        let (tx, payload) = match (tx, payload) {
            (Tx::Raw(mut conn), Payload::Known(bytes)) => {
                let pending = conn.start(parts, &host.host_header, &bytes);
                let back = Release { pool: Arc::clone(&self.pool), key: host.key };
                return exchange(conn, pending, max_head, back).await;
            }
            (Tx::Raw(conn), payload) => (Tx::H1(connect::handshake(conn, max_head).await?), payload),
            (tx, payload) => (tx, payload),
        };
        let uri = parts.uri.clone();
        let req = Request::from_parts(parts, payload.into_body());
        self.send_hyper(tx, req, reused, &uri, &host, max_head).await
    }

    /// Send through hyper's connection-level client: HTTP/2, or HTTP/1 with a streamed body.
    async fn send_hyper(
        &self,
        mut tx: Tx,
        mut req: Request<Body>,
        mut reused: bool,
        uri: &Uri,
        host: &HostInfo,
        max_head: usize,
    ) -> Result<Response<UpBody>, BoxError> {
        let head_request = req.method() == Method::HEAD;
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
                    tx = Tx::H1(connect::handshake(conn, max_head).await?);
                    continue;
                }
            };
            match sent {
                Ok((resp, None)) => return Ok(resp.map(UpBody::Hyper)),
                Ok((resp, Some(tx1))) => {
                    // hyper framed the body; the head gets the checks [`h1`] gives its own. A
                    // connection they refuse, or do not trust again, is not pooled: without its
                    // sender, hyper's connection task closes it once the body is read or dropped.
                    let (mut parts, body) = resp.into_parts();
                    let (_, reuse) = h1::framing_of(&mut parts, head_request)?;
                    if reuse {
                        self.give_back(host.key, tx1);
                    }
                    return Ok(Response::from_parts(parts, UpBody::Hyper(body)));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the idle connection had closed. Retry once, on a new
                    // connection.
                    Some(back) if reused => {
                        req = back;
                        *req.uri_mut() = uri.clone();
                        (tx, reused) = (self.connect_hyper(uri, host.key, max_head).await?, false);
                    }
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// A new connection with hyper's client on it.
    async fn connect_hyper(&self, uri: &Uri, key: Key, max_head: usize) -> Result<Tx, BoxError> {
        match self.connect(uri, key, max_head).await? {
            Tx::Raw(conn) => Ok(Tx::H1(connect::handshake(conn, max_head).await?)),
            tx => Ok(tx),
        }
    }

    /// A new connection to the host of `key`; one that can be shared (HTTP/2) is pooled at
    /// once, for the requests that come while this one runs.
    async fn connect(&self, uri: &Uri, key: Key, max_head: usize) -> Result<Tx, BoxError> {
        let connector = self.settings.connector.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match connect::connect(connector, uri, max_head).await?.reserve() {
            Reservation::Shared(keep, tx) => {
                self.pool.put(key, keep);
                Ok(tx)
            }
            Reservation::Unique(tx) => Ok(tx),
        }
    }

    /// Pool an HTTP/1 connection once it can take the next request: at once when the whole
    /// response has been read already (the common small answer), else when its body is done.
    fn give_back(&self, key: Key, mut tx: http1::SendRequest<Body>) {
        if tx.is_closed() {
            return;
        }
        if tx.is_ready() {
            self.pool.put(key, Tx::H1(tx));
            return;
        }
        let pool = Arc::downgrade(&self.pool);
        tokio::spawn(async move {
            if tx.ready().await.is_ok()
                && let Some(pool) = pool.upgrade()
            {
                pool.put(key, Tx::H1(tx));
            }
        });
    }
}

/// Where an [`h1`] connection goes once its answer has been read to the end: back to the pool,
/// under the host and generation it was taken for.
pub(crate) struct Release {
    pool: Arc<Pool<Tx>>,
    key: Key,
}

impl h1::Release for Release {
    fn release(self, conn: h1::Conn) {
        self.pool.put(self.key, Tx::Raw(conn));
    }
}

/// Write a request [`h1::Conn::start`] encoded and read the answer's head; the body streams
/// from the connection, which goes to `back` once it has been read to the end.
async fn exchange(
    conn: h1::Conn,
    pending: h1::Pending,
    max_head: usize,
    back: Release,
) -> Result<Response<UpBody>, BoxError> {
    let (head, conn, framing, reuse) = conn.exchange(pending, max_head).await?;
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

fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}
