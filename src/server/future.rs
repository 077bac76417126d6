//! The proxy connection's hand-written future and body: the service future hyper holds per
//! request (`Respond`) and the response body that keeps the request counted as in flight while
//! it streams (`Tracked`).
//!
//! Why hand-written: hyper's HTTP/1 dispatcher keeps a slot the size of the service's future
//! for the connection's whole life, so every idle keep-alive connection pays for it. An `async`
//! block around the app's boxed handling would add its own state to that slot; `Respond` is
//! the box and the guard, nothing more. The size test below holds it there.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::activity::InFlight;
use crate::body::{Body, BoxError};

/// The service's future: the app's handling of one request, whose answer's body then carries
/// the in-flight guard.
pub(super) struct Respond {
    pub(super) handling: crate::app::Handling,
    pub(super) guard: Option<InFlight>,
}

impl Future for Respond {
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let resp = std::task::ready!(self.handling.as_mut().poll(cx));
        let guard = self.guard.take();
        Poll::Ready(Ok(resp.map(|body| Tracked { body, _guard: guard })))
    }
}

/// A response body that keeps its request counted as in flight while it streams.
pub(super) struct Tracked {
    body: Body,
    _guard: Option<InFlight>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_stay_small() {
        // The boxed handling (a fat pointer) or the body, and the optional guard (a thin one).
        assert!(size_of::<Respond>() <= RESPOND_MAX);
        assert!(size_of::<Tracked>() <= TRACKED_MAX);
    }

    const RESPOND_MAX: usize = 24;
    const TRACKED_MAX: usize = 24;
}
