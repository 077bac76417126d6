//! A small HTTP/1.1 client for the common upstream exchange: a request whose body is known up
//! front (none, for most API calls, or the token call's form), on an HTTP/1 connection. The
//! request is written and the answer read in the caller's own task, so an exchange costs no
//! hop through a connection task and its channels (hyper's client dispatcher: a channel, a
//! oneshot, and a wake-up of each task in each direction). Everything else (a streamed request
//! body, HTTP/2) goes through hyper's `client::conn` as before.
//!
//! Answers are framed as RFC 9112 §6.3 says: no body for HEAD, 1xx, 204 and 304; chunked when
//! `Transfer-Encoding` ends in `chunked`; read to the end of the connection for any other
//! transfer coding or when no length is given; otherwise `Content-Length`, which must be one
//! valid number. The framing headers are checked on every answer, bodiless ones included: a
//! `Content-Length` beside `Transfer-Encoding` is removed and the connection not reused, and
//! conflicting lengths are refused. The answers hyper's client reads (to requests with a
//! streamed body) are judged by the same rule, through [`framing_of`]. A chunked body's size
//! lines may carry extensions (never a bare CR); its trailer section (CRLF lines only) is parsed
//! as header fields and discarded. Interim 1xx answers are skipped; `101` is refused, since no
//! upgrade is ever asked for. A connection is reused only when its answer was read to the end
//! with nothing after it, and the upstream did not ask to close it (HTTP/1.0: only with
//! `Connection: keep-alive` and no `close`).

mod body;
mod conn;
mod error;
mod head;

pub(crate) use body::{Body, Release};
pub(crate) use conn::{Conn, Pending};
pub(crate) use error::Error;
pub(crate) use head::framing_of;
// What only the fuzz targets' entry points reach from outside.
#[cfg(feature = "fuzzing")]
pub(crate) use {body::Decoder, head::Framing, head::final_head};
