//! The HTTP/1 client's error: fixed text naming what went wrong in an exchange, so nothing
//! the upstream sent is ever echoed into a log or an answer.

use crate::body::BoxError;

/// Why an exchange failed. Messages are fixed text: nothing the upstream sent is echoed.
#[derive(Debug, thiserror::Error)]
#[error("upstream HTTP/1: {0}")]
pub(crate) struct Error(&'static str);

pub(super) fn err(what: &'static str) -> BoxError {
    Box::new(Error(what))
}
