//! The future of a request the client has started: what a pass-through or a token call awaits
//! between handing the request to [`super::Upstream`] and the answer's head.
//!
//! Hand-written rather than an `async` block: the common case (a pooled HTTP/1 connection, a
//! body known up front) is encoded before the future exists, and an `async` block would hold
//! that exchange twice (as its capture and as the awaited value). The rarer paths (a new
//! connection, hyper's client) are boxed, so they add nothing to the common one's size, which
//! the test below holds.

use std::pin::Pin;
use std::task::{Context, Poll};

use crate::body::BoxError;

pin_project_lite::pin_project! {
    /// A request [`super::Upstream`] has started.
    #[project = SendingProj]
    pub(crate) enum Sending<F, T> {
        /// Encoded on a pooled HTTP/1 connection, being exchanged there.
        Raw { #[pin] exchange: F },
        Other { send: Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>> },
        Failed { error: Option<BoxError> },
    }
}

impl<F: Future<Output = Result<T, BoxError>>, T> Future for Sending<F, T> {
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            SendingProj::Raw { exchange } => exchange.poll(cx),
            SendingProj::Other { send } => send.as_mut().poll(cx),
            SendingProj::Failed { error } => {
                Poll::Ready(Err(error.take().unwrap_or_else(|| "polled after completion".into())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::body;
    use crate::upstream::Upstream;

    /// The request future's size, and the answer body's: both move through every pass-through
    /// and token call.
    #[test]
    fn sizes_hold() {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let up = Upstream::new(connector, Duration::from_secs(1), 1, 64 * 1024);
        let req = http::Request::get("http://127.0.0.1:9/").body(body::empty()).unwrap();
        let sending = up.request(req);
        let size = std::mem::size_of_val(&sending);
        println!("request future: {size} bytes");
        assert!(size <= SENDING, "{size}");
        let answer = std::mem::size_of::<super::super::client::UpBody>();
        println!("answer body: {answer} bytes");
        assert!(answer <= UP_BODY, "{answer}");
    }

    /// The sizes today (bytes, 64-bit).
    const SENDING: usize = 280;
    const UP_BODY: usize = 96;
}
