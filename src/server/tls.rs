//! TLS on a listener: each new connection's handshake, at most `max_handshakes` at once (the
//! others wait their turn, in order) and each within `handshake_timeout`, with the pair of the
//! snapshot in force, so a reload reaches new handshakes while established connections keep
//! theirs. A proxy connection is then served like a plaintext one, HTTP/2 or HTTP/1.1 as ALPN
//! chose, with the verified client certificate's subject on each request for the access line.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::activity::{Activity, InFlight};
use super::conn::{Conn, Served};
use super::future::Respond;
use crate::app::{App, ClientCert};
use crate::tls::Tls;

/// Which listener a [`Handshakes`] serves: it reads that one's TLS from the snapshot.
#[derive(Clone, Copy)]
pub(super) enum Listener {
    Proxy,
    Admin,
}

/// A TLS listener's handshakes in progress, and the TLS it started with (kept if a reload
/// removes the section: turning TLS off takes a restart).
pub(super) struct Handshakes {
    slots: Arc<Semaphore>,
    started_with: Arc<Tls>,
    listener: Listener,
}

/// A finished handshake.
pub(super) struct Accepted {
    pub(super) stream: TlsStream<TcpStream>,
    /// ALPN chose `h2`.
    pub(super) h2: bool,
    /// The subject of the client's verified certificate, if it sent one.
    pub(super) client_cert: Option<ClientCert>,
}

impl Handshakes {
    pub(super) fn new(tls: Arc<Tls>, listener: Listener) -> Self {
        Self { slots: Arc::new(Semaphore::new(tls.max_handshakes)), started_with: tls, listener }
    }

    /// Wait for a handshake slot, then run the handshake within the timeout. `None` when it
    /// failed or timed out (the connection is then closed by dropping it).
    pub(super) async fn accept(&self, app: &App, stream: TcpStream, peer: SocketAddr) -> Option<Accepted> {
        let _slot = self.slots.acquire().await.ok()?;
        let snapshot = app.snapshot();
        let tls = match self.listener {
            Listener::Proxy => snapshot.server_tls.as_ref(),
            Listener::Admin => snapshot.admin_tls.as_ref(),
        }
        .unwrap_or(&self.started_with);
        let acceptor = TlsAcceptor::from(tls.server.clone());
        let client_auth = tls.client_auth;
        let stream = match tokio::time::timeout(tls.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return None;
            }
        };
        let session = stream.get_ref().1;
        let h2 = session.alpn_protocol() == Some(b"h2");
        let client_cert = if client_auth {
            session
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(crate::tls::subject)
                .map(ClientCert::new)
        } else {
            None
        };
        Some(Accepted { stream, h2, client_cert })
    }
}

impl Conn {
    /// Run a proxy connection over TLS: the handshake (which the connection's slot of
    /// `server.max_connections` covers too), then HTTP/2 or HTTP/1.1 as ALPN chose.
    pub(super) async fn run_tls(mut self, stream: TcpStream, peer: SocketAddr, handshakes: Arc<Handshakes>) {
        let Some(Accepted { stream, h2, client_cert }) = handshakes.accept(&self.app, stream, peer).await
        else {
            return;
        };
        // The first-request deadline counts from the end of the handshake.
        let activity = Arc::new(Activity::new());
        let app = self.app.clone();
        let counted = activity.clone();
        let svc = service_fn(move |mut req: Request<Incoming>| {
            if let Some(cert) = &client_cert {
                req.extensions_mut().insert(cert.clone());
            }
            let guard = InFlight::start(counted.clone());
            Respond { handling: app.handle(req, peer), guard: Some(guard) }
        });
        let first = self.first_request_timeout;
        let io = TokioIo::new(stream);
        let (conn, idle): (Pin<Box<dyn Served>>, _) = if h2 {
            (Box::pin(self.protocols.h2.serve_connection(io, svc)), self.idle_timeout)
        } else {
            // As for plaintext HTTP/1.1: the next head is also held to header_read_timeout.
            (Box::pin(self.protocols.h1.serve_connection(io, svc)), self.idle_timeout.min(first))
        };
        self.drive(conn, &activity, idle, !h2).await;
    }
}
