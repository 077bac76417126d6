//! Local stand-in for GoTo's OAuth v2 token endpoint and a toy G2W/G2M API: strict, recording,
//! no account needed.
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

mod api;
mod config;
mod server;
mod state;
mod token;
mod wire;

pub use config::{Fault, Recorded, StandinClient, StandinConfig, TOKEN_PATH};
pub use server::Standin;
