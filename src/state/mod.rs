//! State that outlives a request and can be shared by replicas (`[state]`): the Redis
//! connection ([`redis`]); what leaves the process is sealed by [`crate::crypto`]. The
//! shared refresh flight (`refresh::shared`) is built on both; anything else that keeps
//! state across replicas is meant to reuse them rather than open its own.

pub(crate) mod redis;
