//! The echo service of every test: a real tonic `echo.Echo` server on 127.0.0.1 whose
//! [`Behavior`] knobs make it fail, hold, record or forward calls, its client written exactly as
//! tonic-build generates one, and Istio YAML for a mesh of echo servers.
//!
//! The messages keep the field numbers of `examples/proto/echo.proto` where they share a
//! meaning (the interop scripts in `mesh-xds/tests/interop` read them by number): `message` 1,
//! `service` 2, the version label (`served_by`) 3.

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

use mesh_tower::{Mesh, Peer, mesh_core::istio, tls::CertificateFiles};
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
    /// The service that answered: `echo`.
    #[prost(string, tag = "2")]
    pub service: String,
    /// The name of the server that answered (e.g. `v1`), its version label.
    #[prost(string, tag = "3")]
    pub served_by: String,
    /// The `x-config-version` request header the server saw.
    #[prost(string, tag = "7")]
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
    /// Called with each request as it arrives, before anything else.
    pub on_request: Option<OnRequest>,
    /// First attempts (an `x-envoy-attempt-count: 1` header) fail at once with UNAVAILABLE.
    pub fail_first_attempts: bool,
    /// Answers by calling the echo service ([`TARGET`]) through this mesh with the same
    /// message: the reply is the next hop's.
    pub forward: Option<Mesh>,
    /// Answers with who called: `message` is the caller's principal (empty without one),
    /// `served_by` its IP address, `config_version` `mtls` or `none`; fails with INTERNAL
    /// without a [`Peer`] in the request.
    pub who_am_i: bool,
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

/// A hook a test gives [`Behavior::on_request`].
#[derive(Clone)]
pub struct OnRequest(Arc<RequestHook>);

type RequestHook = dyn Fn(&http::Request<Body>) + Send + Sync;

impl OnRequest {
    pub fn new(hook: impl Fn(&http::Request<Body>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(hook))
    }
}

impl std::fmt::Debug for OnRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnRequest(..)")
    }
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
        if let Some(hook) = &self.behavior.on_request {
            (hook.0)(&req);
        }
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
            if b.fail_first_attempts
                && req
                    .metadata()
                    .get("x-envoy-attempt-count")
                    .is_some_and(|v| v == "1")
            {
                return Err(Status::unavailable("first attempts fail"));
            }
            if b.who_am_i {
                return who_am_i(&req);
            }
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
            if let Some(mesh) = &b.forward {
                return EchoClient::new(mesh.channel(TARGET))
                    .say(request(&message))
                    .await;
            }
            Ok(tonic::Response::new(EchoReply {
                message: if this.shout {
                    message.to_uppercase()
                } else {
                    message
                },
                service: "echo".into(),
                served_by: this.name.to_string(),
                config_version,
            }))
        })
    }
}

/// The reply of [`Behavior::who_am_i`].
fn who_am_i(req: &tonic::Request<EchoRequest>) -> Result<tonic::Response<EchoReply>, Status> {
    let peer = req
        .extensions()
        .get::<Peer>()
        .cloned()
        .ok_or_else(|| Status::internal("no Peer in the request's extensions"))?;
    Ok(tonic::Response::new(EchoReply {
        message: peer.principal().unwrap_or_default().to_owned(),
        served_by: peer.address.map(|a| a.ip().to_string()).unwrap_or_default(),
        config_version: if peer.identity.is_some() {
            "mtls"
        } else {
            "none"
        }
        .into(),
        ..EchoReply::default()
    }))
}

/// A running echo server.
pub struct Running {
    pub addr: SocketAddr,
    pub behavior: Arc<Behavior>,
    pub connections: Arc<Connections>,
}

/// Connections a server accepted, and how many are still open: the in-memory network's
/// counters, which the TCP servers here keep too.
pub use crate::memnet::Connections;

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

/// A ServiceEntry for `echo` (STATIC, inside the mesh) with `endpoints` (its `endpoints:`
/// list, indented by two spaces), and a DestinationRule whose `spec` goes on with
/// `destination_rule` after its `host:` (indented by two spaces; empty for none).
pub fn echo_yaml(endpoints: &str, destination_rule: &str) -> String {
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
{destination_rule}"
    )
}

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
    let mut subsets = String::from("  subsets:\n");
    for (version, _) in servers {
        subsets.push_str(&format!(
            "  - name: {version}\n    labels: {{version: {version}}}\n"
        ));
    }
    echo_yaml(&endpoints, &subsets)
}

/// A ServiceEntry for `echo` with one endpoint, `addr`, and a DestinationRule with `tls` as
/// its `trafficPolicy.tls` (flow style), or no traffic policy when `tls` is empty.
pub fn single_endpoint_yaml(addr: SocketAddr, tls: &str) -> String {
    let traffic_policy = if tls.is_empty() {
        String::new()
    } else {
        format!("  trafficPolicy:\n    tls: {tls}\n")
    };
    let endpoint = format!(
        "  - address: {}\n    ports: {{grpc: {}}}\n",
        addr.ip(),
        addr.port()
    );
    echo_yaml(&endpoint, &traffic_policy)
}

/// A mesh client of the echo server at `addr`: ISTIO_MUTUAL as `identity`, expecting the
/// server to be service account `ratings`, or plaintext without an identity.
pub fn istio_mutual_client(
    addr: SocketAddr,
    identity: Option<CertificateFiles>,
) -> EchoClient<mesh_tower::Channel> {
    let tls = if identity.is_some() {
        format!(
            "{{mode: ISTIO_MUTUAL, subjectAltNames: [\"{}\"]}}",
            crate::pki::spiffe("ratings")
        )
    } else {
        String::new()
    };
    let mesh = Mesh::new(config(&single_endpoint_yaml(addr, &tls)));
    if let Some(identity) = identity {
        mesh.set_workload_identity(identity).unwrap();
    }
    EchoClient::new(mesh.channel(TARGET))
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

/// The echo VirtualService with one route to every version and retries off, so each failure
/// is seen.
pub fn no_retries() -> String {
    virtual_service(&format!(
        "  - retries: {{attempts: 0}}\n    route:\n    - destination: {{host: {HOST}}}\n"
    ))
}

/// The echo VirtualService splitting traffic between subsets `v1` and `v2` by weight.
pub fn split(v1: u32, v2: u32) -> String {
    virtual_service(&format!(
        "  - route:
    - destination: {{host: {HOST}, subset: v1}}
      weight: {v1}
    - destination: {{host: {HOST}, subset: v2}}
      weight: {v2}
"
    ))
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
