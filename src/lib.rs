//! oauth-shim: a reverse proxy that keeps integrations written for GoTo's retired legacy OAuth
//! API working against the RFC 6749 ("v2") API.
//!
//! The request path, in order:
//! - [`server`] accepts connections (one accept loop with a connection limit and backoff, shared
//!   by the proxy port, the admin port and the stand-in; timeouts; graceful drain) and hands each
//!   request to
//! - [`app`], the one entry point, which gives the request its id ([`request_id`]), applies
//!   front-door checks and routes:
//!   - `/oauth/access_token` → [`token`]: [`legacy`] collects the parameters, [`translate`]
//!     builds the v2 form, [`oauth`] makes the upstream call (refreshes go through
//!     [`refresh`], in this process or shared by replicas through [`state`]), and
//!     [`translate`] renders the legacy answer;
//!   - `/oauth/authorize` → [`authorize`]: a redirect to the configured v2 authorize URL;
//!   - a `POST` to the provider's token path → [`v2token`]: a v2 call with a JSON body or body
//!     credentials is normalised, one already correct is forwarded unchanged;
//!   - everything else → [`forward`]: streamed pass-through to the API base; a request carrying
//!     a token oauth-shim minted (`Bearer osh_at_…`, told by its prefix alone) goes through
//!     [`continuity`] instead, which swaps in the session's current v2 token.
//! - The request's `Host` selects the [`provider`] (endpoints, clients, pools) first; legacy
//!   answers lacking legacy fields are filled by the provider's [`lookup`].
//! - Upstream calls go through [`upstream`], the connection pools (each provider has one for
//!   pass-through and one for token calls); a failed call is classified there
//!   ([`upstream::Cause`]) and logged once by its caller.
//! - Every failure becomes a response in [`error`], and only there.
//!
//! Around it: [`config`] (typed, validated once), [`admin`] (health and readiness, plus the
//! routes of [`ops`]: metrics, the migration report, hot reload),
//! [`devtools`] (`oauth-shim dev` and the local v2 stand-in it and the tests use), [`cli`] (the
//! command line), `boot` (the one start-up sequence `serve` and `dev` share: config, telemetry,
//! the app, reload, listeners, run until a signal) and [`telemetry`].
//! `fuzzing` (hidden from the docs) holds the entry points of the fuzz targets in `fuzz/`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod body;
mod boot;
pub mod cli;
pub mod config;
pub mod continuity;
pub mod crypto;
pub mod devtools;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod json;
pub mod legacy;
pub mod lookup;
pub mod oauth;
pub mod ops;
pub mod provider;
pub mod refresh;
pub mod request_id;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod services;
pub mod state;
pub mod upstream;
