//! oauth-shim: a reverse proxy that keeps integrations written for GoTo's retired legacy OAuth
//! API working against the RFC 6749 ("v2") API.
//!
//! The request path, in order:
//! - [`server`] accepts connections (one accept loop with a connection limit and backoff, shared
//!   by the proxy port, the admin port and the stand-in; timeouts; graceful drain) and hands each
//!   request to
//! - [`app`], the one entry point: it gives the request its id (`request_id`), applies the front
//!   door, selects the `provider` by `Host`, and runs one of the `routes` with the state they
//!   share (`app_state::State`, holding the [`snapshot::Snapshot`] in force):
//!   - `/oauth/access_token` → `routes::legacy_token`: [`legacy`] collects the parameters and builds
//!     the v2 form, [`oauth`] makes the token call (refreshes go through [`refresh`], in this
//!     process or shared by replicas through [`redis`]), a legacy answer lacking legacy fields is
//!     filled by the provider's `lookup`, and [`legacy`] renders the legacy answer;
//!   - `/oauth/authorize` → `routes::authorize`: a redirect to the provider's v2 authorize URL;
//!   - a `POST` to the provider's token path → `routes::v2_token`: a v2 call with a JSON body or
//!     body credentials is normalised, one already correct is forwarded unchanged;
//!   - everything else → `routes::forward`: streamed pass-through to the API base; a request
//!     carrying a token oauth-shim minted (told by its prefix alone, in an `Authorization`
//!     value or the query) goes to `routes::continuity` when it is `Bearer osh_at_…`, which
//!     swaps in the session's current v2 token (`continuity`), and is refused otherwise.
//! - Routes return their errors; the app's rescue (`app::rescue`) is the one place an error
//!   ([`error::ShimError`], with its cause) becomes a response and is logged (the admin
//!   listener's routes send theirs there too).
//! - Upstream calls go through `upstream`: per provider, an API client for pass-through and a
//!   token client for token calls (each an `upstream::Upstream` over its own pool), the small
//!   HTTP/1 client, and the classification of a failure.
//! - After the answer, the app writes the access line and the metrics ([`ops`]).
//!
//! Around it: [`config`] (typed, validated once), [`tls`] (the listeners' certificates, read
//! and checked into a rustls config held by the snapshot, so a reload rotates them), [`admin`]
//! (the admin listener: health and readiness, metrics, the migration report, sessions, hot
//! reload), [`devtools`] (`oauth-shim dev` and the local v2 stand-in it and the tests use),
//! [`cli`] (the command line) and `boot` (the one start-up sequence `serve` and `dev` share). `fuzzing` (hidden from the docs) holds
//! the entry points of the fuzz targets in `fuzz/`.
//!
//! Two cargo features choose what is compiled in: `devtools` (on by default; a build with
//! `--no-default-features` has no `dev` command and no stand-in) and `fuzzing` (off by default;
//! `fuzz/` and the corpus replay test, `tests/fuzz_corpus.rs`, turn it on), so the shipped
//! binary carries no fuzzing entry points.
//!
//! Dependencies point one way, each module using only those below it:
//!
//! ```text
//! cli                          the command line
//! devtools                     `oauth-shim dev` and the v2 stand-in
//! boot                         the one start-up sequence
//! server                       listeners, accept loop, drain
//! admin                        the admin listener's routes, reload
//! app                          entry point, front door, rescue, access line
//! routes                       legacy_token, authorize, v2_token, refresh, forward, continuity
//! app_state                    the app's State, what requests share: flights, Redis, counters, continuity
//! continuity                   minted tokens and their sessions
//! snapshot                     the config snapshot in force and its providers
//! provider                     endpoints, clients, pools, selected by Host
//! tls                          the listeners' certificates, client CA, rustls config
//! lookup                       the legacy-fields lookup
//! ops                          metrics, migration report, reload status, telemetry
//! refresh                      refresh coalescing and cache, in process or through Redis
//! redis                        the Redis connection
//! legacy                       what old clients send and get back
//! config                       typed config and validation
//! oauth                        secrets, Basic, the v2 token, the token call
//! upstream                     pools, connect, HTTP/1 client
//! error                        the one error type
//! body, crypto, json, request_id   small utilities
//! ```
//!
//! `tests/it/layout.rs` holds this order, and fails on any import circle among files or folders
//! (`cargo test --test it layout`).
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]
// The docs are for the people working on oauth-shim: `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

pub mod admin;
pub mod app;
mod app_state;
mod body;
mod boot;
pub mod cli;
pub mod config;
mod continuity;
pub mod crypto;
#[cfg(feature = "devtools")]
pub mod devtools;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod json;
pub mod legacy;
mod lookup;
pub mod oauth;
pub mod ops;
mod provider;
mod redis;
pub mod refresh;
mod request_id;
mod routes;
pub mod server;
pub mod snapshot;
pub mod tls;
mod upstream;
