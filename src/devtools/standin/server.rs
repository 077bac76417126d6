//! The running stand-in: its handle (URLs, fault injection, recorded requests), the listener
//! served through the shared accept loop, and the dispatch of each request to its endpoint.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::api::{api, authorize, me};
use super::config::{
    AUTHORIZE_PATH, Fault, IDENTITY_AUTHORIZE_PATH, IDENTITY_TOKEN_PATH, MAX_BODY_BYTES, ME_PATH, Recorded,
    StandinConfig, TOKEN_PATH,
};
use super::state::{Core, Grants, lock, mint_code};
use super::token::token_path;
use super::wire::{OAuthError, Resp, invalid_request, json_response, oauth_error};

/// Handle to a running stand-in. Cheap to clone.
#[derive(Clone)]
pub struct Standin {
    shared: Arc<Core>,
    addr: SocketAddr,
}

impl Standin {
    /// Binds `listen` and spawns the server onto the current tokio runtime.
    pub async fn start(config: StandinConfig, listen: SocketAddr) -> std::io::Result<Standin> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Core {
            config,
            grants: Mutex::new(Grants::default()),
            requests: Mutex::new(Vec::new()),
            fault: Mutex::new(None),
            me_fault: Mutex::new(None),
            shutdown,
        });
        tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx));
        Ok(Standin { shared, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token_url(&self) -> String {
        format!("http://{}{TOKEN_PATH}", self.addr)
    }

    pub fn authorize_url(&self) -> String {
        format!("http://{}{AUTHORIZE_PATH}", self.addr)
    }

    pub fn api_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The identity host's token URL (answers without legacy fields).
    pub fn identity_token_url(&self) -> String {
        format!("http://{}{IDENTITY_TOKEN_PATH}", self.addr)
    }

    pub fn identity_authorize_url(&self) -> String {
        format!("http://{}{IDENTITY_AUTHORIZE_PATH}", self.addr)
    }

    /// The user endpoint a legacy-fields lookup reads.
    pub fn me_url(&self) -> String {
        format!("http://{}{ME_PATH}", self.addr)
    }

    /// Overrides normal handling of the user endpoint until cleared with `None`.
    pub fn set_me_fault(&self, fault: Option<Fault>) {
        *lock(&self.shared.me_fault) = fault;
    }

    /// Number of recorded requests to the user endpoint.
    pub fn me_calls(&self) -> usize {
        lock(&self.shared.requests).iter().filter(|r| r.path == ME_PATH).count()
    }

    /// Every request received since start (or the last `clear_requests`), in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// Number of recorded requests to either token path (reset by `clear_requests`).
    pub fn token_calls(&self) -> usize {
        let requests = lock(&self.shared.requests);
        requests.iter().filter(|r| r.path == TOKEN_PATH || r.path == IDENTITY_TOKEN_PATH).count()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Mints an authorization code as if `/authorize` had run for this client.
    pub fn issue_code(&self, client_id: &str, redirect_uri: Option<&str>) -> String {
        mint_code(&self.shared, client_id, redirect_uri)
    }

    /// Overrides normal handling of the token path until cleared with `None`.
    pub fn set_fault(&self, fault: Option<Fault>) {
        *lock(&self.shared.fault) = fault;
    }

    /// Whether `token` was issued, has not expired and its grant was not revoked.
    pub fn is_access_token_valid(&self, token: &str) -> bool {
        lock(&self.shared.grants).access_valid(token)
    }

    /// How many grants were revoked because a retired refresh token was presented again.
    pub fn revoked_grants(&self) -> usize {
        lock(&self.shared.grants).revoked.len()
    }

    /// Stops accepting connections and gracefully closes open ones.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// Resolves once `shutdown` was requested (the sender lives as long as the server).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serve connections through the shared accept loop until `shutdown`; open connections are
/// then closed gracefully.
async fn accept_loop(listener: TcpListener, shared: Arc<Core>, stop: watch::Receiver<bool>) {
    let stopping = stopped(stop.clone());
    crate::server::accept::accept_loop(&listener, None, stopping, |stream, _, _| {
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&shared), req));
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopped(stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    })
    .await;
}

/// Requests kept for [`Standin::requests`]; older ones are forgotten first, so a long-running
/// `oauth-shim dev` does not grow without bound.
const MAX_RECORDED: usize = 10_000;

fn record(shared: &Core, request: Recorded) {
    let mut requests = lock(&shared.requests);
    if requests.len() >= MAX_RECORDED {
        requests.drain(..MAX_RECORDED / 10);
    }
    requests.push(request);
}

/// `headers` with their own copies of the values: hyper's values are views of its read buffer,
/// and a recorded view would keep that whole buffer (8 KiB) alive for as long as the record.
fn owned(headers: &HeaderMap) -> HeaderMap {
    let mut copy = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut v = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(value.as_bytes()))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        v.set_sensitive(value.is_sensitive());
        copy.append(name.clone(), v);
    }
    copy
}

/// Returning `Err` makes hyper drop the connection without a response (used by `Fault::Close`).
async fn handle(shared: Arc<Core>, req: Request<Incoming>) -> std::io::Result<Resp> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(e.downcast_ref::<LengthLimitError>().is_some()),
    };
    record(
        &shared,
        Recorded {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: owned(&parts.headers),
            body: body.as_ref().map(|b| Bytes::copy_from_slice(b)).unwrap_or_default(),
        },
    );
    let body = match body {
        Ok(body) => body,
        Err(true) => return Ok(oauth_error(OAuthError::too_large())),
        Err(false) => return Ok(oauth_error(invalid_request("could not read request body"))),
    };
    let path = parts.uri.path();
    if path == TOKEN_PATH || path == IDENTITY_TOKEN_PATH {
        return token_path(&shared, &parts, &body, path == IDENTITY_TOKEN_PATH).await;
    }
    if path == ME_PATH {
        return me(&shared, &parts.headers).await;
    }
    Ok(if path == AUTHORIZE_PATH || path == IDENTITY_AUTHORIZE_PATH {
        authorize(&shared, &parts)
    } else if path.starts_with("/G2W/") || path.starts_with("/G2M/") {
        api(&shared, &parts.headers)
    } else {
        let body = json!({"error": "not_found", "error_description": format!("no route for {path}")});
        json_response(StatusCode::NOT_FOUND, body.to_string())
    })
}
