//! Fixtures for the refresh unit tests: a token, a failure and a gated fake upstream.

use super::*;
use std::future::Future;
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tok {
    pub(super) access: String,
    pub(super) lifetime: Option<Duration>,
}

impl Refreshed for Tok {
    fn lifetime(&self) -> Option<Duration> {
        self.lifetime
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fail {
    InvalidGrant,
    Unavailable,
    Internal,
}

impl RefreshFailure for Fail {
    fn evicts(&self) -> bool {
        matches!(self, Fail::InvalidGrant)
    }
    fn internal() -> Self {
        Fail::Internal
    }
}

pub(super) type TestCache = RefreshCache<Tok, Fail>;

/// A fake upstream: counts calls, optionally waits for the test to open its gate,
/// sleeps, then answers. Gated fakes keep a flight open for exactly as long as a test
/// needs, so no assertion depends on how fast the machine is.
#[derive(Clone)]
pub(super) struct Fake {
    pub(super) calls: Arc<AtomicUsize>,
    pub(super) delay: Duration,
    pub(super) lifetime: Option<Duration>,
    pub(super) gate: Option<Arc<Semaphore>>,
}

impl Fake {
    pub(super) fn new(delay_ms: u64) -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            delay: Duration::from_millis(delay_ms),
            lifetime: Some(Duration::from_secs(3600)),
            gate: None,
        }
    }

    /// Answers only after `open()`.
    pub(super) fn gated() -> Self {
        Self { gate: Some(Arc::new(Semaphore::new(0))), ..Self::new(0) }
    }

    pub(super) fn open(&self) {
        if let Some(gate) = &self.gate {
            gate.close();
        }
    }

    /// Sleeps then waits at the gate, if any.
    pub(super) fn hold(&self) -> impl Future<Output = ()> + Send + 'static {
        let (delay, gate) = (self.delay, self.gate.clone());
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some(gate) = gate {
                // Closing the semaphore is what opens the gate.
                let _ = gate.acquire().await;
            }
        }
    }

    pub(super) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Succeeds with a value unique to this upstream call.
    pub(super) fn ok(&self) -> impl Future<Output = Result<Tok, Fail>> + Send + 'static {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let (hold, lifetime) = (self.hold(), self.lifetime);
        async move {
            hold.await;
            Ok(Tok { access: format!("access-{n}"), lifetime })
        }
    }

    pub(super) fn fail(&self, error: Fail) -> impl Future<Output = Result<Tok, Fail>> + Send + 'static {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let hold = self.hold();
        async move {
            hold.await;
            Err(error)
        }
    }
}

/// Polls `cond` until it holds; gives up (failing the test) after a generous bound.
pub(super) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..5000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub(super) fn sum(s: RefreshStats) -> u64 {
    s.hits + s.misses + s.coalesced
}
