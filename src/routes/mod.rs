//! The handlers behind the front door, one per route: plain `async fn`s that take the
//! [`crate::runtime`] state and return the answer or a [`crate::error::ShimError`], which the
//! app's rescue turns into the response. Each notes what the access line reports in an
//! [`Outcome`].

pub(crate) mod authorize;
pub(crate) mod continuity;
pub(crate) mod forward;
mod future;
mod headers;
mod outcome;
mod refresh;
pub(crate) mod token;
pub(crate) mod v2token;

pub(crate) use future::{Forwarded, Refused, UpstreamFailure};
pub(crate) use outcome::Outcome;
