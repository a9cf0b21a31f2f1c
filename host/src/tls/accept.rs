//! Accepting TLS connections: each handshake in its own task, so a slow or hostile client holds
//! up no one else; for tonic (a stream of connections) and for axum (a listener).

use super::ServerTls;
use futures::{Stream, StreamExt};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

/// A handshake that has not finished by then is dropped (a client that connects and stays
/// silent must not hold a task forever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 128;

/// The TLS connections made over `conns` (accepted TCP connections), for tonic's
/// `serve_with_incoming`. See [`handshakes`].
pub fn incoming<IO>(
    conns: impl Stream<Item = io::Result<IO>> + Send + 'static,
    tls: ServerTls,
) -> impl Stream<Item = io::Result<TlsStream<IO>>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio_stream::wrappers::ReceiverStream::new(handshakes(conns, tls)).map(Ok)
}

/// Runs the TLS handshake of every connection `conns` yields, each in its own task bounded by
/// [`HANDSHAKE_TIMEOUT`], so a slow or hostile client holds up no one else. Failed handshakes
/// are logged at debug level and dropped.
fn handshakes<IO>(
    conns: impl Stream<Item = io::Result<IO>> + Send + 'static,
    tls: ServerTls,
) -> tokio::sync::mpsc::Receiver<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_BACKLOG);
    tokio::spawn(async move {
        let mut conns = std::pin::pin!(conns);
        while let Some(conn) = conns.next().await {
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            let (acceptor, tx) = (tls.acceptor(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(stream).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// An axum listener over [`incoming`]: the HTTP gateway's TLS connections.
pub struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<TlsStream<tokio::net::TcpStream>>,
    local: std::net::SocketAddr,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Serves TLS with `tls` on `listener` (Nagle off on every connection).
    pub fn new(listener: tokio::net::TcpListener, tls: ServerTls) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let conns = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
            let conn = conn?;
            conn.set_nodelay(true)?;
            Ok(conn)
        });
        Ok(TlsListener {
            accepted: handshakes(conns, tls),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(stream) = self.accepted.recv().await else {
                // The accept task ended (the runtime is stopping): nothing more will come.
                return std::future::pending().await;
            };
            if let Ok(peer) = stream.get_ref().0.peer_addr() {
                return (stream, peer);
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
