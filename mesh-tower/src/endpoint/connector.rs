//! How an endpoint opens the byte stream under its HTTP/2 connection: TCP by default, or a
//! connector the application gives the mesh.
//!
//! A connector is a `tower::Service<EndpointAddress>` answering with any
//! `AsyncRead + AsyncWrite` stream, as tonic's `Endpoint::connect_with_connector` and hyper-util's
//! `Client::builder(..).build(connector)` take one: a test's in-memory network (duplex pipes
//! under paused time, so retry, outlier and breaker tests need no sleeps), a Unix socket, a
//! tunnel. Only the transport is replaced: the mesh still runs the cluster's TLS over the stream
//! the connector returns (so mutual TLS can be tested in memory too), and the connect timeout
//! still bounds the connector and the handshake together. TCP options (`TCP_NODELAY`, the
//! cluster's TCP keepalive) are TCP's own and are the connector's business.
//!
//! The default costs nothing per request: an endpoint asks its connector only when it opens a
//! connection, and the TCP path is the same code, with the same stream types, as before the
//! seam existed. A custom connector's stream is boxed (one allocation per connection, a
//! virtual call per read or write).

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use futures::future::BoxFuture;
use mesh_core::EndpointAddress;
use tokio::io::{AsyncRead, AsyncWrite};
use tower::ServiceExt as _;

/// The error a custom connector may fail with: anything printable (it becomes the reason of the
/// request's connect failure).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A byte stream a custom connector opened.
pub(crate) type BoxedIo = Box<dyn Io>;

/// What the mesh needs of a connector's stream.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T> Io for T where T: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

/// How the mesh opens the transport to an endpoint (see [`Mesh::with_connector`]). Default is
/// TCP ([`Connector::tcp`]); cheap to clone.
///
/// # Example
///
/// Dialing every endpoint over an in-memory pipe (a real one would hand the other end to a
/// server):
///
/// ```
/// use mesh_tower::{Connector, Mesh, mesh_core::{EndpointAddress, MeshConfig}};
///
/// let connector = Connector::new(tower::service_fn(|address: EndpointAddress| async move {
///     let (client, _server) = tokio::io::duplex(64 * 1024);
///     Ok::<_, std::io::Error>(client)
/// }));
/// let mesh = Mesh::with_connector(MeshConfig::empty(), connector);
/// ```
///
/// [`Mesh::with_connector`]: crate::Mesh::with_connector
#[derive(Clone, Default)]
pub struct Connector {
    /// `None` is TCP, handled in place so the default path stays as it always was.
    custom: Option<Arc<dyn Connect>>,
}

/// A connector with its service type erased.
trait Connect: Send + Sync {
    fn connect(&self, address: EndpointAddress) -> BoxFuture<'static, Result<BoxedIo, BoxError>>;
}

/// A `tower::Service` as a [`Connect`]. The service is cloned for each connect (the way tower
/// shares a service between callers); the lock is held only for that clone, so the service
/// need not be `Sync`.
struct ServiceConnect<S>(Mutex<S>);

// === impl Connector ===

impl Connector {
    /// Plain TCP, as the mesh connects without a connector: the endpoint's IP, or its DNS name
    /// resolved at each connect, with `TCP_NODELAY` and the cluster's TCP keepalive.
    pub fn tcp() -> Self {
        Self::default()
    }

    /// Opens each endpoint's transport with `service`, called with the endpoint's address when
    /// a connection is needed. The stream it answers with carries the cluster's TLS, if any,
    /// then HTTP/2; an error fails the connect (the endpoint backs off as after a refused TCP
    /// connect).
    pub fn new<S>(service: S) -> Self
    where
        S: tower::Service<EndpointAddress> + Clone + Send + 'static,
        S::Response: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        Self {
            custom: Some(Arc::new(ServiceConnect(Mutex::new(service)))),
        }
    }

    /// The custom connection of `address`, or `None` to connect over TCP.
    pub(crate) fn custom(
        &self,
        address: &EndpointAddress,
    ) -> Option<BoxFuture<'static, Result<BoxedIo, BoxError>>> {
        self.custom.as_ref().map(|c| c.connect(address.clone()))
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.custom {
            None => "Connector(tcp)",
            Some(_) => "Connector(custom)",
        })
    }
}

// === impl ServiceConnect ===

impl<S> Connect for ServiceConnect<S>
where
    S: tower::Service<EndpointAddress> + Clone + Send + 'static,
    S::Response: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    fn connect(&self, address: EndpointAddress) -> BoxFuture<'static, Result<BoxedIo, BoxError>> {
        // Cloning cannot leave the service inconsistent: a poisoned lock is safe to use.
        let service = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Box::pin(async move {
            let io = service.oneshot(address).await.map_err(Into::into)?;
            Ok(Box::new(io) as BoxedIo)
        })
    }
}
