//! The admin listener's routes, separate from the proxy port so no API path can collide with
//! them: the guard every request passes first ([`guard`]: `Host`, cross-site calls, the admin
//! token), health and readiness ([`health`]), metrics and reload ([`routes`]), the migration
//! report and its page ([`migration`], [`page`]), continuity sessions ([`sessions`]); and hot reload itself ([`reload`]), which
//! SIGHUP and the file watcher trigger too.

mod guard;
mod health;
mod migration;
mod page;
pub mod reload;
mod routes;
pub(crate) mod sessions;

pub(crate) use guard::Arrival;
pub(crate) use health::handle;
