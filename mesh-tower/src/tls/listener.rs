//! The accept loop: TCP connections in, [`MeshStream`]s out, for tonic and for axum.
//!
//! Each accepted connection gets its own task for the mode decision and the TLS handshake,
//! bounded by the handshake timeout, so a slow or silent client never delays the next accept.
//! A failed or timed-out handshake is logged and counted ([`AcceptStats`](super::AcceptStats))
//! and only that connection is closed; accept errors (e.g. out of file descriptors) are logged
//! and retried after a short pause, like axum's own listener.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use tokio::{
    net::{TcpListener, ToSocketAddrs},
    sync::mpsc,
    task::JoinHandle,
};

use super::{MeshStream, ServerTls};
use crate::Peer;

/// Connections that finished their handshake and wait for the server to take them.
const ACCEPTED_BACKLOG: usize = 128;

/// Pause after an accept error that is not about one connection (e.g. `EMFILE`).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A listening socket that accepts connections as its [`ServerTls`] says.
///
/// - tonic: `Server::builder().add_service(..).serve_with_incoming(listener)` (it is a
///   `Stream` of [`MeshStream`]); handlers read `request.extensions().get::<Peer>()`.
/// - axum: `axum::serve(listener, router.into_make_service_with_connect_info::<Peer>())`;
///   handlers take `ConnectInfo<Peer>`. Plain `into_make_service()` drops the peer: axum
///   offers a listener no other way into the request, so the server layer then refuses
///   requests it would have to judge by identity (see [`crate::server`]).
/// - hyper's `server::conn`: take the [`MeshStream`]s and build each connection's service with
///   [`ServerLayer::for_connection`](crate::ServerLayer::for_connection).
///
/// Dropping it stops accepting; connections already handed out are unaffected.
///
/// # Example
///
/// ```no_run
/// use mesh_tower::{Peer, Workload, mesh_core::Labels, tls::{CertificateFiles, MeshListener}};
///
/// # async fn run(mesh: mesh_tower::Mesh) -> Result<(), Box<dyn std::error::Error>> {
/// // The workload identity, as the Istio agent or cert-manager write it (polled for rotation).
/// mesh.set_workload_identity(
///     CertificateFiles::identity("cert-chain.pem", "key.pem").with_trust_bundle("root-cert.pem"),
/// )?;
/// // The mode follows the PeerAuthentication policies of the served configuration.
/// let tls = mesh.server_tls("default", Labels::default(), 9080)?;
/// let listener = MeshListener::bind("0.0.0.0:9080", tls).await?;
///
/// let layer = mesh.server_layer(Workload::new("default", "reviews.default.svc.cluster.local", 9080));
/// let router = axum::Router::new()
///     .route(
///         "/whoami",
///         axum::routing::get(|axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<Peer>| async move {
///             // e.g. `cluster.local/ns/default/sa/productpage`
///             peer.principal().unwrap_or("no verified identity").to_owned()
///         }),
///     )
///     .layer(layer);
/// axum::serve(listener, router.into_make_service_with_connect_info::<Peer>()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MeshListener {
    local_addr: SocketAddr,
    accepted: mpsc::Receiver<MeshStream>,
    accept_loop: JoinHandle<()>,
    tls: ServerTls,
}

// === impl MeshListener ===

impl MeshListener {
    /// Binds `addr` and starts accepting.
    pub async fn bind(addr: impl ToSocketAddrs, tls: ServerTls) -> io::Result<Self> {
        Self::new(TcpListener::bind(addr).await?, tls)
    }

    /// Starts accepting on `listener`. Fails outside a tokio runtime.
    pub fn new(listener: TcpListener, tls: ServerTls) -> io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let local_addr = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
        let accept_loop = runtime.spawn(accept_loop(listener, tls.clone(), tx));
        Ok(Self {
            local_addr,
            accepted,
            accept_loop,
            tls,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TLS settings (mode, counters) connections are accepted with.
    pub fn tls(&self) -> &ServerTls {
        &self.tls
    }
}

impl Drop for MeshListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl Stream for MeshListener {
    type Item = io::Result<MeshStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.accepted.poll_recv(cx).map(|s| s.map(Ok))
    }
}

impl axum::serve::Listener for MeshListener {
    type Io = MeshStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (MeshStream, Peer) {
        match self.accepted.recv().await {
            Some(stream) => {
                let peer = stream.peer().clone();
                (stream, peer)
            }
            // The accept loop never ends while the listener lives; if it did, there is nothing
            // more to accept.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            address: Some(self.local_addr),
            local_address: Some(self.local_addr),
            identity: None,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, MeshListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, MeshListener>) -> Self {
        stream.remote_addr().clone()
    }
}

async fn accept_loop(listener: TcpListener, tls: ServerTls, accepted: mpsc::Sender<MeshStream>) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed; retrying");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if accepted.is_closed() {
            return;
        }
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let accepted = accepted.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(tls.handshake_timeout(), tls.accept(tcp, remote)).await {
                Ok(Ok(stream)) => {
                    // The server is gone when this fails; the connection just closes.
                    let _ = accepted.send(stream).await;
                }
                Ok(Err(error)) => {
                    tls.stats().count_failure();
                    tracing::warn!(%remote, mode = ?tls.mode(), %error, "inbound connection refused");
                }
                Err(_) => {
                    tls.stats().count_timeout();
                    tracing::warn!(%remote, mode = ?tls.mode(), timeout = ?tls.handshake_timeout(), "inbound TLS handshake timed out");
                }
            }
        });
    }
}

/// Errors about one connection (it was reset before we took it), as opposed to the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
