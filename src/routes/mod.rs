//! The handlers behind the front door, one per route: plain `async fn`s that take the
//! [`crate::snapshot`] state and return the answer or a [`crate::error::ShimError`], which the
//! app's rescue turns into the response. Each notes what the access line reports in an
//! [`Summary`].

pub(crate) mod authorize;
pub(crate) mod continuity;
pub(crate) mod forward;
mod future;
mod headers;
pub(crate) mod legacy_token;
mod refresh;
mod summary;
pub(crate) mod v2_token;

pub(crate) use future::{Forwarded, Refused, UpstreamFailure};
pub(crate) use summary::Summary;
