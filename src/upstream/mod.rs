//! The upstream side of every call: a client per upstream role (pass-through, token calls)
//! over a pool of connections. [`client`] takes a connection from [`pool`] or opens one
//! through [`connect`], exchanges a request whose body is known up front with the small
//! HTTP/1 client in [`h1`] (hyper's `client::conn` does streamed bodies and HTTP/2), and
//! [`cause`] classifies a failure for the log.

mod cause;
mod client;
mod connect;
mod future;
pub(crate) mod h1;
mod pool;

pub(crate) use cause::Cause;
pub(crate) use client::Upstream;
pub(crate) use pool::host_header;
