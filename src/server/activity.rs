//! A proxy connection's request activity, as its idle watchdog (`conn.rs`) reads it: requests
//! only touch atomics (no wake-up of the watchdog per request); the watchdog sleeps until the
//! earliest moment the connection could be idle for the limit and checks again then.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub(super) struct Activity {
    /// When the connection was accepted; `last_done` counts from here.
    opened: Instant,
    /// Requests started and finished (response body done or dropped) on this connection.
    started: AtomicU64,
    finished: AtomicU64,
    /// Nanoseconds after `opened` when the last response body finished.
    last_done: AtomicU64,
    /// Whether the socket has not yet taken everything hyper wrote (HTTP/1.1; see `park.rs`).
    pub(super) unflushed: AtomicBool,
    /// Whether bytes have been read since the last request started: part of a next request
    /// hyper holds (HTTP/1.1; see `park.rs`).
    pub(super) reading: AtomicBool,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            opened: Instant::now(),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            last_done: AtomicU64::new(0),
            unflushed: AtomicBool::new(false),
            reading: AtomicBool::new(false),
        }
    }

    /// Requests finished so far.
    pub(super) fn finished(&self) -> u64 {
        self.finished.load(Ordering::SeqCst)
    }

    fn since_opened(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// When to check the connection for idleness next, or `None` once it has had no request in
/// flight for the limit: `first` (from accept) until the first request arrives, then `idle`
/// after each response.
pub(super) fn idle_deadline(activity: &Activity, first: Duration, idle: Duration) -> Option<Instant> {
    // `finished` before `started`: both only grow and finished <= started, so a request that
    // starts in between is seen as in flight, never the other way round.
    let finished = activity.finished.load(Ordering::SeqCst);
    let started = activity.started.load(Ordering::SeqCst);
    if started > finished {
        // Busy: idle for the limit no sooner than `idle` from now.
        return Some(Instant::now() + idle);
    }
    let limit = if started == 0 { first } else { idle };
    let since = Duration::from_nanos(activity.last_done.load(Ordering::SeqCst));
    let deadline = activity.opened + since + limit;
    let now = Instant::now();
    if now >= deadline {
        return None;
    }
    // A request could start and finish right now, making `now + idle` the deadline (earlier
    // than the first-request one when `idle` is the shorter limit).
    Some(deadline.min(now + idle))
}

/// When an HTTP/1.1 connection may be parked: `park_after` after its last response finished,
/// once it has served a request, has none in flight, holds no part of a next one and has
/// written everything out; `None` while it may not.
pub(super) fn park_deadline(activity: &Activity, park_after: Duration) -> Option<Instant> {
    let finished = activity.finished.load(Ordering::SeqCst);
    let started = activity.started.load(Ordering::SeqCst);
    let busy = activity.unflushed.load(Ordering::Relaxed) || activity.reading.load(Ordering::Relaxed);
    if started == 0 || started > finished || busy {
        return None;
    }
    let since = Duration::from_nanos(activity.last_done.load(Ordering::SeqCst));
    Some(activity.opened + since + park_after)
}

/// Counts one request as in flight until its response body is finished or dropped.
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn start(activity: Arc<Activity>) -> Self {
        activity.reading.store(false, Ordering::Relaxed);
        activity.started.fetch_add(1, Ordering::SeqCst);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_done.fetch_max(a.since_opened(), Ordering::SeqCst);
        a.finished.fetch_add(1, Ordering::SeqCst);
    }
}
