//! The pass-through request's hand-written future. Written by hand because an `async` block
//! would hold the upstream call twice (as its capture and as the value it awaits), and this is
//! the box every API call allocates; `entry::tests::each_route_allocates_a_small_handling`
//! holds its size.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

use super::access::Done;
use super::front_door::Route;
use crate::body::Body;
use crate::routes::Summary;
use crate::routes::{Forwarded, Refused};

pin_project_lite::pin_project! {
    /// A pass-through request's handling: the upstream call, then the log line and metrics.
    pub(super) struct Passing<F> {
        #[pin]
        pub(super) forwarded: F,
        pub(super) done: Option<Done>,
        pub(super) summary: Summary,
    }
}

impl<F: Future<Output = Result<Forwarded, Refused>>> Future for Passing<F> {
    type Output = Response<Body>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Body>> {
        let this = self.project();
        let forwarded = std::task::ready!(this.forwarded.poll(cx));
        let Some(done) = this.done.take() else {
            // Polled after completion: there is nothing left to answer.
            return Poll::Ready(Response::new(crate::body::empty()));
        };
        let answer = match forwarded {
            Ok(forwarded) => Ok(forwarded.record(this.summary)),
            Err(refused) => Err(refused.at(&done.snapshot.provider(done.provider).api_base)),
        };
        let summary = std::mem::take(this.summary);
        Poll::Ready(done.finish(Route::PassThrough, summary, answer))
    }
}
