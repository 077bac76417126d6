//! RFC 6749 pieces: secrets, client authentication, and the upstream HTTP client with its token
//! call.

mod basic;
mod client;
mod secret;
mod token;

pub use basic::{BasicAuthEncoding, basic_auth_header, basic_auth_header_with};
pub use client::{
    HttpClient, RawAnswer, TokenOutcome, TraceHeaders, X_REQUEST_ID, build_http_client, raw_token_call,
    reconfigure_http_client, token_call,
};
pub use secret::Secret;
pub use token::{LEGACY_FIELDS, MAX_EXPIRES_IN, V2Token};
