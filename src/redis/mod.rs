//! Redis, for the state replicas share (`[state] backend = "redis"`): the connection
//! ([`connection`]: commands, the events channel, health; its background tasks in `tasks`, the
//! state both share in `state`), the topologies (one node or Sentinel in `sentinel`, Redis
//! Cluster in `cluster`) and the one lock ([`lock`]). Keys used together carry one hash tag
//! (`{…}`), so a cluster keeps them in one slot. What leaves the process is sealed by
//! [`crate::crypto`]. The refresh flight (`refresh::redis`) and the continuity sessions
//! (`continuity::redis_store`) are built on it; anything else that keeps state across replicas
//! reuses it rather than open its own.

mod cluster;
pub(crate) mod connection;
pub(crate) mod lock;
mod sentinel;
mod state;
mod tasks;

pub(crate) use connection::{Redis, RedisStats, Refusal, Unavailable};
