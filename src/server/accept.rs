//! The one accept loop, shared by the proxy port, the admin port and the v2 stand-in: a
//! connection limit (at the limit, new connections wait in the kernel's accept queue) and a
//! backoff after accept errors (EMFILE and friends) instead of spinning.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The first pause after a failed accept; it doubles with each further failure.
const MIN_BACKOFF: Duration = Duration::from_millis(5);
/// The longest pause after failed accepts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accept connections from `listener` until `stop` resolves, handing each to `serve` with its
/// slot of `limit` (held by the connection until it ends; `None`: no limit).
pub(crate) async fn accept_loop<F>(
    listener: &TcpListener,
    limit: Option<Arc<Semaphore>>,
    stop: impl Future<Output = ()>,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr, Option<OwnedSemaphorePermit>),
{
    let mut stop = std::pin::pin!(stop);
    let mut backoff = MIN_BACKOFF;
    loop {
        let permit = match &limit {
            Some(slots) => tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => Some(p), Err(_) => return },
                () = &mut stop => return,
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => { backoff = MIN_BACKOFF; a }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
            () = &mut stop => return,
        };
        serve(stream, peer, permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_the_connection_limit_and_stops() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slots = Arc::new(Semaphore::new(1));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = stop_rx.await;
            };
            accept_loop(&listener, Some(slots), stop, |s, _, p| {
                let _ = tx.send((s, p));
            })
            .await;
        });
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let (_first, permit) = rx.recv().await.unwrap();
        // The second waits in the accept queue while the first holds the only slot.
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err());
        drop(permit);
        assert!(rx.recv().await.is_some());
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }
}
