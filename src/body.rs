//! The body type every response uses: a boxed body, so streamed upstream bodies and small
//! in-memory ones share one type.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Body = BoxBody<Bytes, BoxError>;

pub(crate) fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never| match never {}).boxed()
}

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// An error reading a client's request body (broken chunked framing, a client gone mid-body),
/// wrapped so that a failure of the upstream call it was streamed into can be told apart from
/// the upstream's own.
#[derive(Debug, thiserror::Error)]
#[error("request body: {0}")]
pub(crate) struct ClientBodyError(#[source] pub BoxError);

/// Whether `e`, or anything in its chain of causes, is a [`ClientBodyError`].
pub(crate) fn is_client_body_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<ClientBodyError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Why [`read_limited`] gave up.
pub(crate) enum ReadError {
    /// More than the limit arrived.
    TooLarge,
    /// The body failed (a client gone mid-body, broken framing, an upstream cut off).
    Body,
}

/// Read a whole body, refusing more than `max` bytes (checked as frames arrive, so an oversized
/// body is never buffered). The one body-reading loop: request bodies of both token routes and
/// the legacy-fields lookup's answers.
pub(crate) async fn read_limited<B>(mut body: B, max: usize) -> Result<Bytes, ReadError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ReadError::Body)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(ReadError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A streamed body that fails when it makes no progress for `idle`: a pass-through upstream (or
/// client) that stops sending in the middle of a body would otherwise hold the connection on
/// both sides for good. The timer is only armed when the inner body has nothing ready, so a
/// body that arrives with its head (the common small answer) never touches it; each frame
/// restarts the clock.
pub(crate) struct StallGuard<B> {
    inner: B,
    idle: std::time::Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// A frame arrived since the timer was last armed.
    progressed: bool,
}

impl<B> StallGuard<B> {
    pub(crate) fn new(inner: B, idle: std::time::Duration) -> Self {
        Self { inner, idle, sleep: None, progressed: false }
    }
}

/// The error a [`StallGuard`] ends a body with.
#[derive(Debug, thiserror::Error)]
#[error("body made no progress within {0:?}")]
pub(crate) struct Stalled(std::time::Duration);

impl<B> http_body::Body for StallGuard<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.progressed = true;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.idle;
                let sleep = match &mut this.sleep {
                    Some(sleep) => {
                        if std::mem::take(&mut this.progressed) {
                            sleep.as_mut().reset(deadline);
                        }
                        sleep
                    }
                    None => {
                        this.progressed = false;
                        this.sleep.insert(Box::pin(tokio::time::sleep_until(deadline)))
                    }
                };
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Stalled(this.idle).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
