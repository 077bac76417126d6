//! New upstream connections: TCP, then TLS for https (ALPN picks HTTP/2 or HTTP/1), and the
//! kinds of connection the pool holds. A request reaches this only when its host has no
//! pooled connection ready.

use http::Uri;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::h1;
use super::pool::{Poolable, Reservation};
use crate::body::{Body, BoxError};

/// Opens TCP connections, with TLS for https.
pub(crate) type Connector = HttpsConnector<HttpConnector>;

/// An upstream connection, as the pool holds it.
pub(crate) enum Tx {
    /// HTTP/1 with hyper's client on it (a request with a streamed body went over it).
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
    /// An HTTP/1 connection no hyper dispatcher drives (yet).
    Raw(h1::Conn),
}

impl Poolable for Tx {
    fn is_open(&mut self) -> bool {
        match self {
            Tx::H1(tx) => tx.is_ready(),
            Tx::H2(tx) => !tx.is_closed(),
            Tx::Raw(conn) => conn.is_usable(),
        }
    }

    fn reserve(self) -> Reservation<Self> {
        match self {
            Tx::H2(tx) => Reservation::Shared(Tx::H2(tx.clone()), Tx::H2(tx)),
            tx => Reservation::Unique(tx),
        }
    }

    fn can_share(&self) -> bool {
        matches!(self, Tx::H2(_))
    }
}

/// Open a new connection (TCP, then TLS for https). HTTP/2 (by ALPN) starts hyper's connection
/// task; HTTP/1 is returned as it is, for [`h1`] or a hyper handshake.
pub(crate) async fn connect(mut connector: Connector, uri: &Uri, max_head: usize) -> Result<Tx, BoxError> {
    let io = connector.call(uri.clone()).await?;
    if io.connected().is_negotiated_h2() {
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX))
            .handshake::<_, Body>(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        Ok(Tx::H2(tx))
    } else {
        Ok(Tx::Raw(h1::Conn::new(hyper_util::rt::TokioIo::new(io))))
    }
}

/// Start hyper's HTTP/1 client on a connection (a request with a streamed body).
pub(crate) async fn handshake(conn: h1::Conn, max_head: usize) -> Result<http1::SendRequest<Body>, BoxError> {
    // One buffer per message, as on the server side (`server::conn`).
    let (tx, conn) = http1::Builder::new()
        .writev(false)
        .max_buf_size(max_head.max(8192))
        .handshake::<_, Body>(conn.into_io())
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/1 connection ended");
        }
    });
    Ok(tx)
}
