//! RFC 6749 pieces: secrets, client authentication, and the upstream HTTP client with its token
//! call.

mod basic;
mod client;
mod secret;
mod token;

pub use basic::{BasicAuthEncoding, basic_auth_header, basic_auth_header_with};
pub use client::{
    CallLimits, HttpClient, RawAnswer, TokenOutcome, TraceHeaders, X_REQUEST_ID, raw_token_call, token_call,
};
pub use secret::Secret;
pub use token::{LEGACY_FIELDS, MAX_EXPIRES_IN, V2Token};
