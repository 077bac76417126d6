//! The state routes work with: the [`Runtime`] in force (config, providers) and the [`Shared`]
//! process-lifetime services (refresh flights, Redis, counters, continuity). Built at start-up
//! and on reload by the app; read by every route.

mod flights;
mod shared;
mod snapshot;

pub use flights::V2Failure;
pub use shared::Shared;
pub use snapshot::Runtime;
