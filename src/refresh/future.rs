//! The future a flight's leader drives, between the cache lookup and the upstream token call.
//!
//! It is hand-written because an `async fn` cannot act when it is dropped: this one hands the
//! rest of the upstream call to a spawned task when the leader hangs up, so the call the
//! waiters and the cache depend on is never cancelled, and a leader that stays pays no task.

use std::future::Future;

/// A flight's future as its leader drives it. Dropped before it finished (the leader hung
/// up), it hands the rest of the call to a spawned task instead of cancelling it.
pub(super) struct Detach<T: Send + 'static> {
    pub(super) fut: Option<std::pin::Pin<Box<dyn Future<Output = T> + Send>>>,
}

impl<T: Send + 'static> Future for Detach<T> {
    /// `None` when the call panicked (its flight is unregistered by then).
    type Output = Option<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        let Some(fut) = self.fut.as_mut() else { return std::task::Poll::Ready(None) };
        // A panic in the call must not take the leader's connection down with it: the flight
        // is dropped (its guard unregisters it and its waiters see `E::internal()`), and so
        // does the leader.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(out)) => {
                self.fut = None;
                std::task::Poll::Ready(Some(out))
            }
            Err(_) => {
                self.fut = None;
                std::task::Poll::Ready(None)
            }
        }
    }
}

impl<T: Send + 'static> Drop for Detach<T> {
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            drop(handle.spawn(fut));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Detach;

    #[test]
    fn detach_stays_one_boxed_pointer() {
        assert!(std::mem::size_of::<Detach<u64>>() <= 16);
    }
}
