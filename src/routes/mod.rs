//! The handlers behind the front door, one per route: plain `async fn`s that take the
//! [`crate::runtime`] state and return the answer or a [`crate::error::ShimError`], which the
//! app's rescue turns into the response. Each notes what the access line reports in an
//! [`Outcome`].

pub mod authorize;
pub mod continuity;
pub mod forward;
mod future;
mod headers;
mod outcome;
pub mod token;
pub mod v2token;

pub use future::{Forwarded, Refused, UpstreamFailure};
pub use outcome::Outcome;
