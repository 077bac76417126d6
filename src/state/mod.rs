//! State that outlives a request and can be shared by replicas (`[state]`): the key set that
//! seals whatever leaves the process ([`crypto`]) and the Redis connection ([`redis`]). The
//! shared refresh flight (`refresh::shared`) is built on both; anything else that keeps
//! state across replicas is meant to reuse them rather than open its own.

pub mod crypto;
pub mod redis;
