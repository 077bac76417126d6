//! The app: the one request entry point ([`App::handle`]), the front door, the rescue (the one
//! place an error becomes a response), and the access line. Routes do the work
//! ([`crate::routes`]) with the app's state ([`crate::app_state`]) and the config snapshot in
//! force ([`crate::snapshot`]).

mod access;
mod entry;
mod front_door;
mod future;
pub(crate) mod host;
mod rescue;

pub(crate) use access::ClientCert;
pub use entry::App;
pub(crate) use entry::Handling;
pub(crate) use rescue::rescue_admin;
