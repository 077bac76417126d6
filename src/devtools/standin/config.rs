//! The stand-in's paths, its behaviour (clients, users, rotation, delays) and what the tests
//! inject and read back (faults, recorded requests).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};

/// Path of the OAuth v2 token endpoint.
pub const TOKEN_PATH: &str = "/oauth/v2/token";
/// Path of the (auto-approving) authorization endpoint.
pub(crate) const AUTHORIZE_PATH: &str = "/oauth/v2/authorize";
/// The identity host's token endpoint: answers carry no legacy fields.
pub(crate) const IDENTITY_TOKEN_PATH: &str = "/oauth/token";
/// The identity host's (auto-approving) authorization endpoint.
pub(crate) const IDENTITY_AUTHORIZE_PATH: &str = "/oauth/authorize";
/// The user endpoint: the legacy fields, for a valid bearer token.
pub(crate) const ME_PATH: &str = "/admin/rest/v1/me";
/// Largest request body accepted on any path; bigger bodies get 413.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

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
