//! Local stand-in for GoTo's OAuth v2 token endpoint and a toy G2W/G2M API: strict, recording, no account needed.
//!
//! It plays both GoTo hosts on one listener: api.getgo.com's `/oauth/v2/{token,authorize}`
//! (answers with the legacy fields) and the identity host's `/oauth/{token,authorize}` (answers
//! without them, as authentication.logmeininc.com does), plus the user endpoint
//! `/admin/rest/v1/me` a legacy-fields lookup reads.
//!
//! Used by `oauth-shim dev` (try the product without a GoTo account) and by the integration
//! tests as a fake upstream that is as strict as the real v2 endpoint and records every request.
//! [`Standin::start`] spawns the server onto the current tokio runtime; it keeps running until
//! [`Standin::shutdown`] is called or the runtime ends (dropping the handle does not stop it).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Path of the OAuth v2 token endpoint.
pub const TOKEN_PATH: &str = "/oauth/v2/token";
/// Path of the (auto-approving) authorization endpoint.
pub const AUTHORIZE_PATH: &str = "/oauth/v2/authorize";
/// The identity host's token endpoint: answers carry no legacy fields.
pub const IDENTITY_TOKEN_PATH: &str = "/oauth/token";
/// The identity host's (auto-approving) authorization endpoint.
pub const IDENTITY_AUTHORIZE_PATH: &str = "/oauth/authorize";
/// The user endpoint: the legacy fields, for a valid bearer token.
pub const ME_PATH: &str = "/admin/rest/v1/me";
/// Largest request body accepted on any path; bigger bodies get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

type Resp = Response<Full<Bytes>>;

/// A registered OAuth client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandinClient {
    pub id: String,
    pub secret: String,
    pub allow_password_grant: bool,
}

/// Behaviour of the stand-in.
#[derive(Debug, Clone)]
pub struct StandinConfig {
    pub clients: Vec<StandinClient>,
    /// (username, password) pairs accepted by the password grant.
    pub users: Vec<(String, String)>,
    /// Refresh issues a new refresh token and retires the presented one.
    pub rotate_refresh_tokens: bool,
    /// Refresh responses carry no `refresh_token` field (the old one stays valid).
    pub omit_refresh_token_on_refresh: bool,
    /// Sleep before answering the token path.
    pub token_delay: Duration,
    /// `expires_in` of issued access tokens, in seconds.
    pub access_token_ttl: u64,
    /// Take client credentials from the form (`client_secret_post`) instead of HTTP Basic.
    pub client_secret_post: bool,
}

impl Default for StandinConfig {
    fn default() -> Self {
        StandinConfig {
            clients: vec![StandinClient {
                id: "demo-client".into(),
                secret: "demo-secret".into(),
                allow_password_grant: true,
            }],
            users: vec![("demo@example.com".into(), "demo-password".into())],
            rotate_refresh_tokens: false,
            omit_refresh_token_on_refresh: false,
            token_delay: Duration::ZERO,
            access_token_ttl: 3600,
            client_secret_post: false,
        }
    }
}

/// One request as received (recorded before it is answered).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Failure injected on the token path until cleared with `set_fault(None)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and this body, as-is.
    Status(u16, String),
    /// Answer 200 with a non-JSON (`text/html`) body.
    Garbage,
    /// Sleep, then answer normally.
    Delay(Duration),
    /// Drop the connection without answering.
    Close,
}

/// Handle to a running stand-in. Cheap to clone.
#[derive(Clone)]
pub struct Standin {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

struct Shared {
    config: StandinConfig,
    state: Mutex<State>,
    requests: Mutex<Vec<Recorded>>,
    fault: Mutex<Option<Fault>>,
    /// Failure injected on the user endpoint.
    me_fault: Mutex<Option<Fault>>,
    shutdown: watch::Sender<bool>,
}

struct Code {
    client_id: String,
    redirect_uri: Option<String>,
    used: bool,
}

struct RefreshEntry {
    client_id: String,
    grant: u64,
    retired: bool,
}

struct AccessEntry {
    grant: u64,
    /// `None` when the TTL is too large to represent (never expires).
    expires_at: Option<Instant>,
}

#[derive(Default)]
struct State {
    codes: HashMap<String, Code>,
    refresh: HashMap<String, RefreshEntry>,
    access: HashMap<String, AccessEntry>,
    revoked: HashSet<u64>,
    next_grant: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl State {
    fn new_grant(&mut self) -> u64 {
        self.next_grant += 1;
        self.next_grant
    }

    fn new_access(&mut self, grant: u64, ttl: u64) -> String {
        let token = random_token();
        let expires_at = Instant::now().checked_add(Duration::from_secs(ttl));
        self.access.insert(token.clone(), AccessEntry { grant, expires_at });
        token
    }

    fn new_refresh(&mut self, client_id: &str, grant: u64) -> String {
        let token = random_token();
        let entry = RefreshEntry { client_id: client_id.to_owned(), grant, retired: false };
        self.refresh.insert(token.clone(), entry);
        token
    }

    /// Starts a new grant and issues its first access and refresh tokens.
    fn new_tokens(&mut self, client_id: &str, ttl: u64) -> TokenResponse {
        let grant = self.new_grant();
        let access = self.new_access(grant, ttl);
        let refresh = self.new_refresh(client_id, grant);
        TokenResponse::new(access, Some(refresh), ttl)
    }

    fn access_valid(&self, token: &str) -> bool {
        self.access.get(token).is_some_and(|a| {
            !self.revoked.contains(&a.grant) && a.expires_at.is_none_or(|t| t > Instant::now())
        })
    }
}

impl Standin {
    /// Binds `listen` and spawns the server onto the current tokio runtime.
    pub async fn start(config: StandinConfig, listen: SocketAddr) -> std::io::Result<Standin> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State::default()),
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
        lock(&self.shared.state).access_valid(token)
    }

    /// How many grants were revoked because a retired refresh token was presented again.
    pub fn revoked_grants(&self) -> usize {
        lock(&self.shared.state).revoked.len()
    }

    /// Stops accepting connections and gracefully closes open ones.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }
}

fn mint_code(shared: &Shared, client_id: &str, redirect_uri: Option<&str>) -> String {
    let code = random_token();
    let entry =
        Code { client_id: client_id.to_owned(), redirect_uri: redirect_uri.map(str::to_owned), used: false };
    lock(&shared.state).codes.insert(code.clone(), entry);
    code
}

/// Resolves once `shutdown` was requested (the sender lives as long as the server).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serve connections through the shared accept loop until `shutdown`; open connections are
/// then closed gracefully.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
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

/// Returning `Err` makes hyper drop the connection without a response (used by `Fault::Close`).
async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> std::io::Result<Resp> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(e.downcast_ref::<LengthLimitError>().is_some()),
    };
    lock(&shared.requests).push(Recorded {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: body.clone().unwrap_or_default(),
    });
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

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    response(status, "application/json", body)
}

// ---------------------------------------------------------------------------------------------
// Token endpoint

/// Success body, in GoTo's v2 field order.
#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    expires_in: u64,
    account_key: &'static str,
    account_type: &'static str,
    email: &'static str,
    #[serde(rename = "firstName")]
    first_name: &'static str,
    #[serde(rename = "lastName")]
    last_name: &'static str,
    organizer_key: &'static str,
    version: &'static str,
}

impl TokenResponse {
    fn new(access_token: String, refresh_token: Option<String>, expires_in: u64) -> Self {
        TokenResponse {
            access_token,
            token_type: "Bearer",
            refresh_token,
            expires_in,
            account_key: "3792882212321659654",
            account_type: "",
            email: "jk@example.com",
            first_name: "Jon",
            last_name: "Karmak",
            organizer_key: "18889842069694200",
            version: "3",
        }
    }
}

/// The identity host's success body: no legacy fields, plus `scope` and `principal`.
#[derive(Serialize)]
struct IdentityTokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    expires_in: u64,
    scope: &'static str,
    principal: &'static str,
}

impl<'a> From<&'a TokenResponse> for IdentityTokenResponse<'a> {
    fn from(t: &'a TokenResponse) -> Self {
        IdentityTokenResponse {
            access_token: &t.access_token,
            token_type: t.token_type,
            refresh_token: t.refresh_token.as_deref(),
            expires_in: t.expires_in,
            scope: "collab: identity:",
            principal: t.email,
        }
    }
}

/// RFC 6749 §5.2 error.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        };
        let description = description.into();
        OAuthError { status, error, description }
    }

    fn too_large() -> Self {
        let mut e = invalid_request("request body too large");
        e.status = StatusCode::PAYLOAD_TOO_LARGE;
        e
    }
}

fn invalid_request(description: impl Into<String>) -> OAuthError {
    OAuthError::new("invalid_request", description)
}

fn invalid_grant(description: impl Into<String>) -> OAuthError {
    OAuthError::new("invalid_grant", description)
}

fn oauth_error(e: OAuthError) -> Resp {
    let body = json!({"error": e.error, "error_description": e.description});
    let mut resp = json_response(e.status, body.to_string());
    if e.status == StatusCode::UNAUTHORIZED {
        let challenge = HeaderValue::from_static("Basic realm=\"standin\"");
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    } else if e.status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    resp
}

/// Answer an injected fault; `None` when there is none (or it was only a delay).
async fn injected(fault: Option<Fault>) -> Option<std::io::Result<Resp>> {
    match fault {
        Some(Fault::Status(code, body)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let is_json = serde_json::from_str::<serde_json::Value>(&body).is_ok();
            let content_type = if is_json { "application/json" } else { "text/plain" };
            return Some(Ok(response(status, content_type, body)));
        }
        Some(Fault::Garbage) => {
            return Some(Ok(response(StatusCode::OK, "text/html", "<html>oops</html>")));
        }
        Some(Fault::Close) => {
            let kind = std::io::ErrorKind::ConnectionAborted;
            return Some(Err(std::io::Error::new(kind, "standin fault: close connection")));
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    None
}

async fn token_path(
    shared: &Shared,
    parts: &http::request::Parts,
    body: &[u8],
    identity: bool,
) -> std::io::Result<Resp> {
    if !shared.config.token_delay.is_zero() {
        tokio::time::sleep(shared.config.token_delay).await;
    }
    let fault = lock(&shared.fault).clone();
    if let Some(answer) = injected(fault).await {
        return answer;
    }
    let json = token_grant(shared, parts, body).map(|t| {
        if identity {
            serde_json::to_string(&IdentityTokenResponse::from(&t))
        } else {
            serde_json::to_string(&t)
        }
    });
    Ok(match json {
        Ok(json) => match json {
            Ok(body) => json_response(StatusCode::OK, body),
            Err(e) => oauth_error(OAuthError::new("server_error", e.to_string())),
        },
        Err(e) => oauth_error(e),
    })
}

fn token_grant(
    shared: &Shared,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<TokenResponse, OAuthError> {
    if parts.method != Method::POST {
        let mut e = invalid_request("the token endpoint only accepts POST");
        e.status = StatusCode::METHOD_NOT_ALLOWED;
        return Err(e);
    }
    check_form_content_type(&parts.headers)?;
    let params = parse_params(body)?;
    let client = if shared.config.client_secret_post {
        authenticate_post(&shared.config, &parts.headers, &params)?
    } else {
        let client = authenticate(&shared.config, &parts.headers)?;
        if params.contains_key("client_id") || params.contains_key("client_secret") {
            return Err(invalid_request(
                "client credentials must not be sent in the body when HTTP Basic is used",
            ));
        }
        client
    };
    let param = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let required = |name: &str| param(name).ok_or_else(|| invalid_request(format!("missing {name}")));
    let config = &shared.config;
    let ttl = config.access_token_ttl;
    match required("grant_type")? {
        "authorization_code" => {
            let code = required("code")?;
            let mut state = lock(&shared.state);
            let entry = state.codes.get_mut(code).filter(|c| c.client_id == client.id);
            let entry = entry.ok_or_else(|| invalid_grant("unknown authorization code"))?;
            if entry.used {
                return Err(invalid_grant("authorization code already used"));
            }
            if let Some(bound) = &entry.redirect_uri {
                let given = required("redirect_uri")?;
                if given != bound {
                    return Err(invalid_grant("redirect_uri does not match the authorization request"));
                }
            }
            entry.used = true;
            Ok(state.new_tokens(&client.id, ttl))
        }
        "refresh_token" => {
            let token = required("refresh_token")?;
            let mut state = lock(&shared.state);
            let entry = state.refresh.get(token).filter(|r| r.client_id == client.id);
            let (grant, retired) =
                entry.map(|r| (r.grant, r.retired)).ok_or_else(|| invalid_grant("unknown refresh token"))?;
            if state.revoked.contains(&grant) {
                return Err(invalid_grant("refresh token has been revoked"));
            }
            if retired {
                state.revoked.insert(grant);
                return Err(invalid_grant("refresh token reused; grant revoked"));
            }
            let access = state.new_access(grant, ttl);
            let refresh = if config.rotate_refresh_tokens {
                if let Some(old) = state.refresh.get_mut(token) {
                    old.retired = true;
                }
                Some(state.new_refresh(&client.id, grant))
            } else if config.omit_refresh_token_on_refresh {
                None
            } else {
                Some(token.to_owned())
            };
            Ok(TokenResponse::new(access, refresh, ttl))
        }
        "password" => {
            if !client.allow_password_grant {
                let d = "client may not use the password grant";
                return Err(OAuthError::new("unauthorized_client", d));
            }
            let (username, password) = (required("username")?, required("password")?);
            if !config.users.iter().any(|(u, p)| u == username && p == password) {
                return Err(invalid_grant("invalid username or password"));
            }
            Ok(lock(&shared.state).new_tokens(&client.id, ttl))
        }
        other => {
            Err(OAuthError::new("unsupported_grant_type", format!("grant_type {other:?} is not supported")))
        }
    }
}

fn check_form_content_type(headers: &HeaderMap) -> Result<(), OAuthError> {
    let bad = || invalid_request("Content-Type must be application/x-www-form-urlencoded");
    let value = headers.get(header::CONTENT_TYPE).ok_or_else(bad)?;
    let value = value.to_str().map_err(|_| bad())?;
    let mut pieces = value.split(';').map(str::trim);
    let essence = pieces.next().unwrap_or_default();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(bad());
    }
    for param in pieces.filter(|p| !p.is_empty()) {
        let name = param.split('=').next().unwrap_or_default().trim();
        if !name.eq_ignore_ascii_case("charset") {
            return Err(bad());
        }
    }
    Ok(())
}

/// Parses a form body or query string; a repeated parameter is an error (RFC 6749 §3.1).
fn parse_params(input: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut params = HashMap::new();
    for (name, value) in form_urlencoded::parse(input) {
        if params.insert(name.to_string(), value.into_owned()).is_some() {
            return Err(invalid_request(format!("parameter {name} repeated")));
        }
    }
    Ok(params)
}

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`.
fn authenticate<'a>(config: &'a StandinConfig, headers: &HeaderMap) -> Result<&'a StandinClient, OAuthError> {
    let bad = |d: &str| OAuthError::new("invalid_client", d);
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or_else(|| bad("client authentication required (HTTP Basic)"))?;
    if values.next().is_some() {
        return Err(bad("more than one Authorization header"));
    }
    let value = value.to_str().map_err(|_| bad("malformed Authorization header"))?;
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad("client authentication must use HTTP Basic"));
    }
    let decoded = BASE64
        .decode(credentials.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| bad("malformed Basic credentials"))?;
    let (id, secret) = decoded
        .split_once(':')
        .and_then(|(id, secret)| Some((form_decode(id)?, form_decode(secret)?)))
        .ok_or_else(|| bad("malformed Basic credentials"))?;
    config
        .clients
        .iter()
        .find(|c| c.id == id && c.secret == secret)
        .ok_or_else(|| bad("unknown client or wrong secret"))
}

/// `client_secret_post`: the credentials in the form, and no `Authorization` header.
fn authenticate_post<'a>(
    config: &'a StandinConfig,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<&'a StandinClient, OAuthError> {
    let bad = |d: &str| OAuthError::new("invalid_client", d);
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(bad("client authentication must use client_secret_post, not a header"));
    }
    let (Some(id), Some(secret)) = (params.get("client_id"), params.get("client_secret")) else {
        return Err(bad("client_id and client_secret are required in the form"));
    };
    config
        .clients
        .iter()
        .find(|c| c.id == *id && c.secret == *secret)
        .ok_or_else(|| bad("unknown client or wrong secret"))
}

/// Strict `application/x-www-form-urlencoded` decoding of one value; `None` on malformed input
/// or on raw characters (space, `:`, `&`, `=`, non-ASCII, ...) that an encoder must have escaped.
fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            // Anything an encoder would have escaped means the value was not urlencoded.
            b if b.is_ascii_alphanumeric() || b"-._~*!'()".contains(&b) => out.push(b),
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------------------------
// Authorization endpoint and toy API

fn authorize(shared: &Shared, parts: &http::request::Parts) -> Resp {
    let fail = |status: StatusCode, error: &str, description: &str| {
        let body = json!({"error": error, "error_description": description});
        json_response(status, body.to_string())
    };
    if parts.method != Method::GET {
        return fail(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "use GET");
    }
    let params = match parse_params(parts.uri.query().unwrap_or_default().as_bytes()) {
        Ok(params) => params,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e.error, &e.description),
    };
    let param = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    if param("response_type") != Some("code") {
        let d = "response_type must be code";
        return fail(StatusCode::BAD_REQUEST, "unsupported_response_type", d);
    }
    let client_id = param("client_id").unwrap_or_default();
    if !shared.config.clients.iter().any(|c| c.id == client_id) {
        return fail(StatusCode::BAD_REQUEST, "invalid_request", "unknown client_id");
    }
    let redirect = match param("redirect_uri").map(url::Url::parse) {
        None => None,
        Some(Ok(url)) if url.fragment().is_none() => Some(url),
        Some(_) => {
            let d = "redirect_uri must be an absolute URI without fragment";
            return fail(StatusCode::BAD_REQUEST, "invalid_request", d);
        }
    };
    let code = mint_code(shared, client_id, param("redirect_uri"));
    let state = param("state");
    let Some(mut url) = redirect else {
        let mut body = serde_json::Map::new();
        body.insert("code".into(), code.into());
        if let Some(state) = state {
            body.insert("state".into(), state.into());
        }
        return json_response(StatusCode::OK, serde_json::Value::Object(body).to_string());
    };
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("code", &code);
        if let Some(state) = state {
            query.append_pair("state", state);
        }
    }
    match HeaderValue::from_str(url.as_str()) {
        Ok(location) => {
            let mut resp = response(StatusCode::FOUND, "text/plain", "");
            resp.headers_mut().insert(header::LOCATION, location);
            resp
        }
        Err(_) => fail(StatusCode::BAD_REQUEST, "invalid_request", "bad redirect_uri"),
    }
}

/// The user endpoint: the legacy fields for a valid bearer token, in GoTo's admin API's names.
async fn me(shared: &Shared, headers: &HeaderMap) -> std::io::Result<Resp> {
    let fault = lock(&shared.me_fault).clone();
    if let Some(answer) = injected(fault).await {
        return answer;
    }
    if !bearer(headers).is_some_and(|t| lock(&shared.state).access_valid(t)) {
        return Ok(invalid_token());
    }
    let body = json!({
        "key": "18889842069694200",
        "accountKey": "3792882212321659654",
        "email": "jk@example.com",
        "firstName": "Jon",
        "lastName": "Karmak",
        "locale": "en_US",
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

fn invalid_token() -> Resp {
    let body = json!({"int_err_code": "InvalidToken", "msg": "Invalid token passed"});
    let mut resp = json_response(StatusCode::UNAUTHORIZED, body.to_string());
    let challenge = HeaderValue::from_static("Bearer realm=\"standin\"");
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    resp
}

/// Any path under `/G2W/` or `/G2M/`: needs a valid bearer token.
fn api(shared: &Shared, headers: &HeaderMap) -> Resp {
    if bearer(headers).is_some_and(|t| lock(&shared.state).access_valid(t)) {
        let body = json!([{"webinarKey": "1235813", "subject": "Stand-in webinar"}]);
        return json_response(StatusCode::OK, body.to_string());
    }
    invalid_token()
}
