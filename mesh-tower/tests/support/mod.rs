//! Test fixtures: a real tonic Echo service on 127.0.0.1 (or on the in-memory network,
//! [`memnet`]), its client written exactly as tonic-build generates one, and Istio YAML for a
//! mesh of echo servers.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
};

use mesh_tower::{Mesh, mesh_core::istio};
use tokio::sync::Semaphore;
use tonic::{Status, body::Body, server::NamedService};

pub mod memnet;

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    /// The name of the server that answered (e.g. `v1`).
    #[prost(string, tag = "2")]
    pub served_by: String,
    /// The `x-config-version` request header the server saw.
    #[prost(string, tag = "3")]
    pub config_version: String,
}

type StdError = Box<dyn std::error::Error + Send + Sync>;

/// The client tonic-build would generate for `service Echo { rpc Say; rpc Shout; }`: the same
/// `GrpcService` bounds, so a mesh channel that satisfies it satisfies any generated client.
#[derive(Debug, Clone)]
pub struct EchoClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> EchoClient<T>
where
    T: tonic::client::GrpcService<Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<StdError> + Send,
{
    pub fn new(inner: T) -> Self {
        Self {
            inner: tonic::client::Grpc::new(inner),
        }
    }

    pub async fn say(
        &mut self,
        request: impl tonic::IntoRequest<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, Status> {
        self.call(request, "/echo.Echo/Say").await
    }

    pub async fn shout(
        &mut self,
        request: impl tonic::IntoRequest<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, Status> {
        self.call(request, "/echo.Echo/Shout").await
    }

    async fn call(
        &mut self,
        request: impl tonic::IntoRequest<EchoRequest>,
        path: &'static str,
    ) -> Result<tonic::Response<EchoReply>, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("Service was not ready: {}", e.into())))?;
        let codec = tonic_prost::ProstCodec::default();
        let path = http::uri::PathAndQuery::from_static(path);
        self.inner.unary(request.into_request(), path, codec).await
    }
}

/// What an echo server does besides echoing.
#[derive(Debug, Default)]
pub struct Behavior {
    /// Fail `n` of every `of` calls with UNAVAILABLE: `(n, of)`.
    pub fail: Option<(u32, u32)>,
    /// Each call takes a permit and holds it until the call ends; tests hand out permits to
    /// release held calls.
    pub hold: Option<Arc<Semaphore>>,
    /// First attempts (`x-envoy-attempt-count: 1`) fail at once with UNAVAILABLE; retries wait
    /// for a permit, then succeed. Lets a test count the retries in flight.
    pub hold_retries: Option<Arc<Semaphore>>,
    pub calls: AtomicU32,
    pub in_flight: AtomicU32,
}

#[derive(Clone, Debug)]
pub struct EchoServer {
    name: Arc<str>,
    behavior: Arc<Behavior>,
}

impl NamedService for EchoServer {
    const NAME: &'static str = "echo.Echo";
}

impl tower::Service<http::Request<Body>> for EchoServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let handler = Handler {
            name: self.name.clone(),
            behavior: self.behavior.clone(),
            shout: req.uri().path() == "/echo.Echo/Shout",
        };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(handler, req).await)
        })
    }
}

#[derive(Clone)]
struct Handler {
    name: Arc<str>,
    behavior: Arc<Behavior>,
    shout: bool,
}

impl tower::Service<tonic::Request<EchoRequest>> for Handler {
    type Response = tonic::Response<EchoReply>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<EchoRequest>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let b = &this.behavior;
            let n = b.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(sem) = &b.hold_retries {
                let attempt = req
                    .metadata()
                    .get("x-envoy-attempt-count")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("1");
                if attempt == "1" {
                    return Err(Status::unavailable("first attempts fail"));
                }
                b.in_flight.fetch_add(1, Ordering::SeqCst);
                sem.acquire().await.expect("semaphore open").forget();
                b.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            b.in_flight.fetch_add(1, Ordering::SeqCst);
            if let Some(sem) = &b.hold {
                // Each permit a test adds releases exactly one call.
                sem.acquire().await.expect("semaphore open").forget();
            }
            b.in_flight.fetch_sub(1, Ordering::SeqCst);
            if let Some((fail, of)) = b.fail
                && n % of < fail
            {
                return Err(Status::unavailable(format!(
                    "{} failing on purpose",
                    this.name
                )));
            }
            let config_version = req
                .metadata()
                .get("x-config-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let message = req.into_inner().message;
            Ok(tonic::Response::new(EchoReply {
                message: if this.shout {
                    message.to_uppercase()
                } else {
                    message
                },
                served_by: this.name.to_string(),
                config_version,
            }))
        })
    }
}

/// A running echo server.
pub struct Running {
    pub addr: SocketAddr,
    pub behavior: Arc<Behavior>,
    pub connections: Arc<Connections>,
}

/// Connections a server accepted, and how many are still open: the in-memory network's
/// counters, which the TCP servers here keep too.
pub use mesh_test_support::memnet::Connections;

/// A server-side connection that keeps [`Connections::open`] honest.
struct Counted {
    inner: tokio::net::TcpStream,
    connections: Arc<Connections>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.connections.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The echo service named `name`, to serve yourself.
pub fn spawn_echo_service(name: &str) -> EchoServer {
    echo_service(name, Arc::new(Behavior::default()))
}

/// The echo service named `name` with `behavior`, to serve yourself.
pub fn echo_service(name: &str, behavior: Arc<Behavior>) -> EchoServer {
    EchoServer {
        name: name.into(),
        behavior,
    }
}

/// Starts an echo server named `name` on 127.0.0.1.
pub async fn spawn_echo(name: &str, behavior: Behavior) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let behavior = Arc::new(behavior);
    let server = EchoServer {
        name: name.into(),
        behavior: behavior.clone(),
    };
    let connections = Arc::new(Connections::default());
    let counting = connections.clone();
    let incoming = futures::stream::unfold(listener, move |listener| {
        let connections = counting.clone();
        async move {
            let accepted = listener.accept().await.map(|(inner, _)| {
                connections.accepted.fetch_add(1, Ordering::SeqCst);
                connections.open.fetch_add(1, Ordering::SeqCst);
                Counted { inner, connections }
            });
            Some((accepted, listener))
        }
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(incoming),
    );
    Running {
        addr,
        behavior,
        connections,
    }
}

/// A mesh-wide Sidecar (root namespace) refusing hosts not in the registry; without one,
/// Istio's default `ALLOW_ANY` passes them through by DNS.
pub const REGISTRY_ONLY: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";

pub const HOST: &str = "echo.default.svc.cluster.local";
pub const TARGET: &str = "echo.default.svc.cluster.local:50051";

/// A ServiceEntry for `echo` whose endpoints are the given servers, labelled `version: <name>`,
/// and a DestinationRule with one subset per version.
pub fn services_yaml(servers: &[(&str, SocketAddr)]) -> String {
    let mut endpoints = String::new();
    for (version, addr) in servers {
        endpoints.push_str(&format!(
            "  - address: {}\n    ports: {{grpc: {}}}\n    labels: {{version: {version}}}\n",
            addr.ip(),
            addr.port()
        ));
    }
    let mut subsets = String::new();
    for (version, _) in servers {
        subsets.push_str(&format!(
            "  - name: {version}\n    labels: {{version: {version}}}\n"
        ));
    }
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 50051, name: grpc, protocol: GRPC}}
  endpoints:
{endpoints}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo}}
spec:
  host: {HOST}
  subsets:
{subsets}"
    )
}

/// A VirtualService for the echo host with the given `http:` list (indented by two spaces).
pub fn virtual_service(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [{HOST}]
  http:
{http}"
    )
}

/// Loads YAML documents into a config, panicking with every diagnostic on error.
pub fn config(yaml: &str) -> mesh_tower::mesh_core::MeshConfig {
    match istio::load_str("test.yaml", yaml) {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("{e}"),
    }
}

/// A mesh serving the services plus `policy` YAML.
pub fn mesh(servers: &[(&str, SocketAddr)], policy: &str) -> Mesh {
    Mesh::new(config(&format!("{}---\n{policy}", services_yaml(servers))))
}

pub fn request(message: &str) -> tonic::Request<EchoRequest> {
    tonic::Request::new(EchoRequest {
        message: message.into(),
    })
}
