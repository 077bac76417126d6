//! Token continuity (opt-in per client, `continuity = true`): legacy token calls answer with
//! tokens oauth-shim mints ([`minted`]), valid for the client's `continuity_lifetime`; the real
//! v2 tokens stay in a sealed session record ([`session`], kept by [`store`] or
//! [`redis_store`]). API calls with a minted access token are forwarded with the session's
//! current v2 token, refreshed ahead of its expiry, one refresh per session at a time. A legacy
//! refresh with the minted refresh token is answered from the session
//! ([`Continuity::legacy_refresh`]). A login that would create a session first takes a place
//! under the session caps ([`caps`]).
//!
//! Sits beside the request path: the app sends `Bearer osh_at_…` pass-through requests to
//! `routes::continuity`, and the token route hands continuity clients' token answers to
//! [`Continuity::create`]. Operators list and revoke sessions through the admin listener.

mod anchor;
mod backend;
mod caps;
mod errors;
pub(crate) mod minted;
pub(crate) mod redis_store;
mod refresh;
mod service;
pub(crate) mod session;
pub(crate) mod store;

pub(crate) use backend::Admission;
pub(crate) use errors::invalid_token;
pub(crate) use service::{Continuity, SessionInfo};
