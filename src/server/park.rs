//! Parking an idle HTTP/1.1 connection: hyper keeps a read buffer (8 KiB once a request has
//! been read) and a write buffer for a connection's whole life, which is most of what an idle
//! keep-alive connection costs. Once a connection has had no request in flight for
//! `[server] park_after`, `conn.rs` takes hyper's connection apart (`into_parts`, which drops
//! both buffers) and the bare socket waits for readability here, with no buffer. When the
//! client sends its next request, a new hyper connection serves it; bytes hyper had already
//! read are handed to it first ([`Io`]), so hyper's parser reads the stream exactly as it came.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::activity::Activity;

/// A proxy connection's socket as hyper's HTTP/1 connection sees it: the bytes read ahead by
/// the previous hyper connection on this socket first, then the socket. It notes whether hyper
/// has handed the socket everything it wrote, so a connection is never parked with part of an
/// answer still in hyper's write buffer.
pub(super) struct Io {
    io: TokioIo<TcpStream>,
    ahead: Bytes,
    activity: Arc<Activity>,
}

impl Io {
    pub(super) fn new(stream: TcpStream, ahead: Bytes, activity: Arc<Activity>) -> Self {
        Self { io: TokioIo::new(stream), ahead, activity }
    }

    /// The socket, and what was read ahead and not yet handed on (the parts of a parked
    /// connection).
    pub(super) fn into_parts(self) -> (TcpStream, Bytes) {
        (self.io.into_inner(), self.ahead)
    }
}

impl Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // Whatever hyper reads may be part of a next request, which a park must not split
        // off again (the connection would be parked and woken over and over until the rest
        // came): the connection is not parked until a request starts.
        if !self.ahead.is_empty() {
            let n = self.ahead.len().min(buf.remaining());
            buf.put_slice(&self.ahead[..n]);
            self.ahead.advance(n);
            self.activity.reading.store(true, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        // A read that is ready brought bytes, or the end of the stream (which ends the
        // connection anyway).
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.activity.reading.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl Write for Io {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        // hyper's HTTP/1 writer (`writev(false)`) hands over its whole buffer at once: a write
        // that takes all of it leaves nothing behind.
        let left = match &polled {
            Poll::Ready(Ok(n)) => *n < buf.len(),
            Poll::Ready(Err(_)) => false,
            Poll::Pending => true,
        };
        self.activity.unflushed.store(left, Ordering::Relaxed);
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
