//! The app's state ([`State`]): the handles every request shares for the life of the process.
//! The config snapshot in force (swapped on reload), the refresh flight both token routes share
//! and what it carries, the Redis connection, the operators' counters, and the continuity
//! service. Built by the app; read by every route.

mod flights;
mod handles;

pub(crate) use flights::{RefreshError, TokenAnswer};
pub(crate) use handles::State;
