//! Write coalescing for gRPC connections: replies that become ready together leave in one
//! send instead of one `writev` each.
//!
//! When a Raft round commits a batch of puts or confirms a batch of reads, tens of handler tasks
//! finish at once. Each hands its reply to the connection's HTTP/2 task and wakes it; Tokio runs
//! a just-woken task next (its LIFO slot), so the connection task wrote every reply on its own:
//! strace on a leader serving 64 readers over 8 connections counted about one `writev` per
//! reply, and those sends (with the receiver's loopback path they run inline) were a third of
//! its CPU. grpc-go, which etcd uses, batches its writes: its connection writer flushes only
//! when no more frames are queued, and yields once (`runtime.Gosched`) before flushing a batch
//! under 1,000 bytes.
//!
//! [`Coalescing`] keeps what HTTP/2 writes in a buffer and, on the first flush, yields once to
//! the scheduler before sending. The handlers already queued then run and add their replies, and
//! the second flush sends everything in one call. An idle runtime re-polls the connection at
//! once, so a lone request pays one extra poll, not a timer. Nodes wrap the connections they
//! accept; `kvbench` wraps its own, so that both systems it measures face a client that batches
//! as grpc-go's does. With TLS the wrapper goes above it: a TLS stream reports vectored writes,
//! and HTTP/2 over one flushes each small frame it would chain by itself. Connections a node opens to its peers are left plain: they carry one Raft
//! message per round, which the yield would only delay (put×64 measured ~4% slower with it).

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::Uri;

/// Connects a gRPC client over TCP, Nagle off, with coalesced writes: the connector for
/// `Endpoint::connect_with_connector` (`tower::service_fn(coalesce::connect)`).
pub async fn connect(uri: Uri) -> io::Result<TokioIo<Coalescing<TcpStream>>> {
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
    // An IPv6 literal comes bracketed in a URI.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = TcpStream::connect((host, uri.port_u16().unwrap_or(80))).await?;
    stream.set_nodelay(true)?;
    Ok(TokioIo::new(Coalescing::new(stream)))
}

/// [`connect`] over TLS, for an `http://` endpoint whose connector does the TLS: writes are
/// coalesced above TLS, so HTTP/2 sees a stream that is not vectored (a TLS stream is, and HTTP/2
/// then flushes each small frame it would chain on its own) and one flush becomes one run of
/// records and one send.
pub async fn connect_tls(
    uri: Uri,
    tls: Arc<rustls::ClientConfig>,
) -> io::Result<TokioIo<Coalescing<TlsStream<TcpStream>>>> {
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let stream = TcpStream::connect((host, uri.port_u16().unwrap_or(443))).await?;
    stream.set_nodelay(true)?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, stream)
        .await?;
    Ok(TokioIo::new(Coalescing::new(stream)))
}

/// Buffered bytes above which a write first sends what is buffered (back-pressure).
const MAX_BUFFERED: usize = 256 * 1024;

/// A stream whose writes are held until a flush, and whose flushes yield once first.
#[derive(Debug)]
pub struct Coalescing<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes of `buf` already sent.
    sent: usize,
    /// The current flush has yielded once; the next poll sends.
    yielded: bool,
}

impl<S> Coalescing<S> {
    pub fn new(inner: S) -> Self {
        Coalescing {
            inner,
            buf: Vec::new(),
            sent: 0,
            yielded: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalescing<S> {
    /// Sends everything buffered.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        if self.buf.capacity() > MAX_BUFFERED {
            self.buf.shrink_to(MAX_BUFFERED / 4);
        }
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalescing<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalescing<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() >= MAX_BUFFERED {
            ready!(this.poll_send(cx))?;
        }
        let mut n = 0;
        for slice in data {
            this.buf.extend_from_slice(slice);
            n += slice.len();
        }
        Poll::Ready(Ok(n))
    }

    /// Not vectored on purpose: HTTP/2 then copies frame payloads under 1 KiB into its own
    /// buffer instead of flushing before each one it would have chained, so a single flush
    /// covers many small replies.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.sent < this.buf.len() {
            if !this.yielded {
                // Back of the run queue: the tasks already woken add their replies first.
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(this.poll_send(cx))?;
        }
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Coalescing<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (Coalescing<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (Coalescing::new(client.unwrap()), accepted.unwrap().0)
    }

    struct CountWakes(AtomicUsize);
    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn writes_before_the_yield_and_after_it_leave_together() {
        let (mut tx, mut rx) = pair().await;
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);

        assert!(matches!(
            Pin::new(&mut tx).poll_write(&mut cx, b"first "),
            Poll::Ready(Ok(6))
        ));
        // The first flush yields (and asks to be polled again) without sending.
        assert!(Pin::new(&mut tx).poll_flush(&mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(tx.buf.len(), 6);
        // Written meanwhile: joins the same send.
        assert!(matches!(
            Pin::new(&mut tx).poll_write(&mut cx, b"second"),
            Poll::Ready(Ok(6))
        ));
        assert!(matches!(
            Pin::new(&mut tx).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert!(tx.buf.is_empty());

        let mut got = [0u8; 12];
        rx.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"first second");
        // Nothing buffered: a flush does not yield.
        assert!(matches!(
            Pin::new(&mut tx).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn large_writes_arrive_whole_and_shutdown_sends_the_rest() {
        let (mut tx, mut rx) = pair().await;
        let data: Vec<u8> = (0..3 * MAX_BUFFERED + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            rx.read_to_end(&mut got).await.unwrap();
            got
        });
        for chunk in data.chunks(10_000) {
            tx.write_all(chunk).await.unwrap();
        }
        tx.write_all(b"tail").await.unwrap();
        tx.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), data.len() + 4);
        assert_eq!(&got[..data.len()], &data[..]);
        assert_eq!(&got[data.len()..], b"tail");
    }
}
