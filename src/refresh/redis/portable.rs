//! What a refresh's answer and error must be to cross replicas: bytes written to Redis by one
//! replica and read back by another. The token types implement these (`app_state::flights`).

use crate::refresh::types::RefreshFailure;

/// A value that can be written to Redis and read back by another replica.
pub trait Portable: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Option<Self>;
}

/// A refresh error that waiters on other replicas can be given.
pub trait PortableFailure: RefreshFailure + Portable {
    /// What a waiter gets when the flight it waited on neither answered nor let go in time.
    fn timed_out() -> Self;
    /// What a caller gets when its refresh is refused because no Redis master answered
    /// (`when_unavailable = "refuse"`): nothing was sent upstream, it may retry.
    fn unavailable() -> Self;
}
