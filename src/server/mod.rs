//! The only module that touches sockets: the proxy port (HTTP/1.1 and HTTP/2, connection limit,
//! header and idle timeouts, graceful drain) and the admin port, both served through the one
//! accept loop ([`accept`], which the v2 stand-in uses too).
//!
//! `listen.rs` binds and drains, `conn.rs` drives one proxy connection, `activity.rs` is what
//! its idle watchdog reads, `park.rs` parks an idle HTTP/1.1 connection without its buffers,
//! `future.rs` the per-request future hyper holds, `sweeper.rs` the continuity sweeper started
//! beside the listeners, `tls.rs` the TLS handshake of either listener when `[server.tls]` or
//! `[admin.tls]` is set.

pub(crate) mod accept;
mod activity;
mod conn;
mod future;
mod listen;
mod park;
mod sweeper;
mod tls;

pub use listen::{Running, start_on};
pub(crate) use listen::{run_until, shutdown_signal, start};
