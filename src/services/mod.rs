//! What every request shares for the life of the process ([`Shared`]): the runtime in force
//! (swapped on reload), the refresh flights (legacy and v2) and what they carry, the Redis
//! connection, the operators' counters, and the continuity service. Built by the app; read by
//! every route.

mod flights;
mod shared;

pub use flights::V2Failure;
pub use shared::Shared;
