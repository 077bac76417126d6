//! RFC 6749 pieces: secrets, client authentication, the v2 token and the token call (made through
//! a provider's token client, `upstream::Upstream`).

mod basic;
mod client;
mod secret;
mod token;

pub use basic::BasicAuthEncoding;
pub use basic::basic_auth_header;
pub(crate) use basic::basic_auth_header_with;
pub(crate) use client::{CallLimits, note_trouble, parse_answer, raw_token_call, token_call};
pub use client::{RawAnswer, TraceHeaders};
pub use secret::Secret;
pub use token::V2Token;
pub(crate) use token::{LEGACY_FIELDS, MAX_EXPIRES_IN};

#[cfg(test)]
pub(crate) use token::tests as token_tests;
