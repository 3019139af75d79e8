//! An accepted connection, plaintext or TLS, with the [`Peer`] it established.

use std::{
    fmt,
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};

use crate::Peer;

/// An accepted connection and its [`Peer`]. tonic puts the peer in every request's extensions
/// (it is this type's `ConnectInfo`); axum does so as `ConnectInfo<Peer>` with
/// `into_make_service_with_connect_info::<Peer>()`.
#[derive(Debug)]
pub struct MeshStream {
    io: Io,
    peer: Peer,
    /// Closes the connection once the port no longer admits it (see `ServerTls`).
    drain: Option<Drain>,
}

/// The listener's side of a connection that may have to be drained: once `closed` completes
/// (the grace after STRICT, a filter chain change or not serving ran out) every read and write
/// fails. Dropping it stops the task that watches the port.
pub(crate) struct Drain {
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    is_closed: bool,
    _stop_watching: DropGuard,
}

#[derive(Debug)]
enum Io {
    Plaintext(TcpStream),
    // Boxed: the TLS state is large, and most of a plaintext stream's size would be padding.
    Tls(Box<TlsStream<TcpStream>>),
}

// === impl MeshStream ===

impl MeshStream {
    pub(crate) fn plaintext(tcp: TcpStream, peer: Peer) -> Self {
        Self {
            io: Io::Plaintext(tcp),
            peer,
            drain: None,
        }
    }

    pub(crate) fn tls(tls: TlsStream<TcpStream>, peer: Peer) -> Self {
        Self {
            io: Io::Tls(Box::new(tls)),
            peer,
            drain: None,
        }
    }

    /// This stream, closed when `drain` says so.
    pub(crate) fn draining(mut self, drain: Drain) -> Self {
        self.drain = Some(drain);
        self
    }

    /// An error once the drain closed this connection; registers the waker otherwise, so an
    /// idle connection notices too.
    fn poll_drained(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let drain = self.drain.as_mut()?;
        if !drain.is_closed && drain.closed.as_mut().poll(cx).is_pending() {
            return None;
        }
        drain.is_closed = true;
        Some(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the port no longer admits this connection (its mTLS mode or filter chain changed): drained",
        ))
    }

    /// Who is on the other end.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.io, Io::Tls(_))
    }
}

impl AsyncRead for MeshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(error) = self.poll_drained(cx) {
            return Poll::Ready(Err(error));
        }
        match &mut self.io {
            Io::Plaintext(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MeshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.poll_drained(cx) {
            return Poll::Ready(Err(error));
        }
        match &mut self.io {
            Io::Plaintext(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.poll_drained(cx) {
            return Poll::Ready(Err(error));
        }
        match &mut self.io {
            Io::Plaintext(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plaintext(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plaintext(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plaintext(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

// === impl Drain ===

impl Drain {
    /// `close` is cancelled when the connection must close; `stop_watching` is cancelled when
    /// this is dropped (the connection is gone).
    pub(crate) fn new(close: CancellationToken, stop_watching: CancellationToken) -> Self {
        Self {
            closed: Box::pin(close.cancelled_owned()),
            is_closed: false,
            _stop_watching: stop_watching.drop_guard(),
        }
    }
}

impl fmt::Debug for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("is_closed", &self.is_closed)
            .finish_non_exhaustive()
    }
}

impl tonic::transport::server::Connected for MeshStream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}
