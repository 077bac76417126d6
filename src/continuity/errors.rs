//! The answers continuity gives when a minted token or the session store fails: a legacy
//! `invalid_token` 401, `invalid_grant`, or `temporarily_unavailable` (logged at most every
//! 10 s while the store is down).

use crate::error::{ErrorCode, ShimError};

use super::session::now;
use super::store::StoreError;

/// The 401 for a minted token that is unknown, revoked, expired or not this client's.
pub(crate) fn invalid_token() -> ShimError {
    ShimError::invalid_token("the access token is invalid, expired or revoked")
}

pub(super) fn invalid_grant() -> ShimError {
    ShimError::new(
        ErrorCode::InvalidGrant,
        http::StatusCode::BAD_REQUEST,
        crate::error::ErrorSource::Downstream,
        ErrorCode::InvalidGrant.upstream_description(),
    )
}

/// Seconds since the epoch when a store failure was last logged.
static LAST_STORE_LOG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The answer for a request the session store failed. Logged at most every 10 s (an outage of
/// Redis would otherwise log every continuity request; the Redis handle logs the outage too).
pub(super) fn store_failed(e: StoreError) -> ShimError {
    use std::sync::atomic::Ordering;
    let now = now();
    let last = LAST_STORE_LOG.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST_STORE_LOG.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        tracing::error!(error = %e, "continuity session store failed");
    }
    // Never a local fallback: a session refreshed on two replicas would spend its refresh token
    // twice. The caller retries.
    ShimError::state_unavailable("the session store is unavailable")
}
