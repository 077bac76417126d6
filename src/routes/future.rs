//! The pass-through's hand-written future and what it yields: the answer ([`Forwarded`]), or
//! the refusal with the upstream's failure as its cause ([`Refused`]). The future is written by
//! hand because an `async` block would hold the upstream call twice (as its capture and as the
//! value it awaits), and this is the state every API call carries; the app's handling-size test
//! (`app::entry`) holds its size.

use http::Response;
use http_body_util::BodyExt;

use super::headers::strip_hop_by_hop;
use super::summary::Summary;
use crate::body::Body;
use crate::body::{BoxError, StallGuard, is_client_body_error};
use crate::error::ShimError;
use crate::provider::Base;
use crate::upstream::Cause;

/// A pass-through answer, and what the request log and metrics note of it.
pub(crate) struct Forwarded {
    pub resp: Response<Body>,
    pub upstream_status: Option<http::StatusCode>,
}

impl Forwarded {
    /// Note the outcome and hand on the answer.
    pub(crate) fn record(self, summary: &mut Summary) -> Response<Body> {
        summary.upstream_status = self.upstream_status;
        self.resp
    }
}

/// A pass-through that got no answer: the error for the caller, and why the upstream gave none
/// when it was the upstream's doing (boxed: the rare case).
pub(crate) struct Refused {
    pub(super) error: ShimError,
    pub(super) cause: Option<Box<Cause>>,
}

impl Refused {
    /// The error, with the failed call to `base` as its cause (which upstream, and why).
    pub(crate) fn at(self, base: &Base) -> ShimError {
        match self.cause {
            Some(cause) => {
                self.error.caused_by(UpstreamFailure { upstream: base.host().to_owned(), cause: *cause })
            }
            None => self.error,
        }
    }
}

/// A pass-through call to an upstream that failed: the upstream host (and port unless default)
/// and the classified cause. Safe to log: it carries no request content.
#[derive(Debug)]
pub(crate) struct UpstreamFailure {
    pub upstream: String,
    pub cause: Cause,
}

impl std::fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.upstream, self.cause.class, self.cause.detail)
    }
}

impl std::error::Error for UpstreamFailure {}

pin_project_lite::pin_project! {
    /// [`super::forward::start`]'s future: the upstream call under its deadline, then the
    /// answer with hop-by-hop headers removed and its body under the stall guard.
    #[project = ForwardingProj]
    pub(crate) enum Forwarding<F> {
        Sending { #[pin] sent: tokio::time::Timeout<F>, stall: std::time::Duration },
        Failed { error: Option<ShimError> },
    }
}

impl<F, B> Future for Forwarding<F>
where
    F: Future<Output = Result<Response<B>, BoxError>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Forwarded, Refused>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let refused = |error, cause: Option<Cause>| {
            std::task::Poll::Ready(Err(Refused { error, cause: cause.map(Box::new) }))
        };
        let (sent, stall) = match self.project() {
            ForwardingProj::Sending { sent, stall } => (sent, *stall),
            ForwardingProj::Failed { error } => {
                return refused(error.take().unwrap_or_else(ShimError::internal), None);
            }
        };
        let resp = match std::task::ready!(sent.poll(cx)) {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) if is_client_body_error(&*e) => {
                // The client's own body was malformed (broken chunked framing) or cut short: its
                // fault, not the upstream's, and its connection cannot carry another request.
                let error = ShimError::invalid_request("the request body is malformed or incomplete");
                return refused(error.closing().caused_by(e), None);
            }
            Ok(Err(e)) => return refused(ShimError::upstream_unreachable(), Some(Cause::of(&*e))),
            Err(_) => return refused(ShimError::upstream_timeout(), Some(Cause::timeout())),
        };
        let upstream_status = Some(resp.status());
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let resp = Response::from_parts(parts, StallGuard::new(body, stall).boxed());
        std::task::Poll::Ready(Ok(Forwarded { resp, upstream_status }))
    }
}
