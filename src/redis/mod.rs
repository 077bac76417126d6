//! Redis, for the state replicas share (`[state] backend = "redis"`): the connection
//! ([`connection`]: commands, the events channel, health) and the one lock ([`lock`]). What leaves the process is sealed by
//! [`crate::crypto`]. The refresh flight (`refresh::redis`) and the continuity sessions
//! (`continuity::redis_store`) are built on it; anything else that keeps state across replicas
//! reuses it rather than open its own.

pub(crate) mod connection;
pub(crate) mod lock;
mod sentinel;

pub(crate) use connection::{Redis, RedisStats, Refusal, Unavailable};
