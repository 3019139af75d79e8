//! Fixtures for the server-stack tests: a tonic echo server and an axum app behind
//! `mesh.server_layer(..)` on 127.0.0.1, with a stand-in for the mTLS acceptor, and clients.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{Router, routing::get};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use mesh_tower::{
    Mesh, Peer, ServerLayer,
    mesh_core::{MeshConfig, ServerPolicy},
    peer::PeerIdentity,
};
use tonic::server::NamedService;
use tower::util::MapRequestLayer;

use crate::echo::{Behavior, EchoClient, EchoServer, echo_service};

/// The header the stand-in acceptor reads the caller's principal from. The real mTLS acceptor
/// takes it from the verified certificate; these tests are about what happens after.
pub const PRINCIPAL: &str = "x-test-principal";

/// What the TLS acceptor does: put the peer (address and verified identity) in the request.
pub fn accept_as<B>(mut req: Request<B>) -> Request<B> {
    let address = req
        .extensions()
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|i| i.remote_addr)
        .or_else(|| {
            req.extensions()
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|i| i.0)
        });
    if let Some(principal) = req.headers().get(PRINCIPAL).and_then(|v| v.to_str().ok()) {
        let peer = Peer {
            address,
            local_address: None,
            identity: Some(PeerIdentity {
                principal: Some(principal.into()),
                principals: Arc::from([Arc::from(principal)]),
                dns_names: Arc::from([]),
            }),
        };
        req.extensions_mut().insert(peer);
    }
    req
}

/// The echo service, also answering as `grpc.health.v1.Health` (the codec does not care).
#[derive(Clone, Debug)]
pub struct Health(pub EchoServer);

impl NamedService for Health {
    const NAME: &'static str = "grpc.health.v1.Health";
}

impl tower::Service<Request<tonic::body::Body>> for Health {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = <EchoServer as tower::Service<Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        self.0.call(req)
    }
}

/// `echo.Trailers/Fail`: one empty message, then `grpc-status: 13` in real trailers (what a
/// handler failing mid-stream sends), unlike tonic's trailers-only errors.
#[derive(Clone, Debug)]
pub struct FailInTrailers;

impl NamedService for FailInTrailers {
    const NAME: &'static str = "echo.Trailers";
}

impl tower::Service<Request<tonic::body::Body>> for FailInTrailers {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<tonic::body::Body>) -> Self::Future {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
        trailers.insert("grpc-message", http::HeaderValue::from_static("boom"));
        let frames = vec![
            Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        let response = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::new(body))
            .unwrap();
        std::future::ready(Ok(response))
    }
}

/// A tonic echo server (with a health service) behind `layer`, on 127.0.0.1.
pub async fn spawn_grpc(layer: ServerLayer) -> SocketAddr {
    spawn_grpc_with(layer, Arc::new(Behavior::default())).await
}

/// A tonic echo server whose echo behaves as `behavior`, plus `grpc.health.v1.Health` and
/// `echo.Trailers`, behind `layer`, on 127.0.0.1.
pub async fn spawn_grpc_with(layer: ServerLayer, behavior: Arc<Behavior>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = echo_service("server", behavior);
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(MapRequestLayer::new(accept_as::<tonic::body::Body>))
            .layer(layer)
            .add_service(echo.clone())
            .add_service(Health(echo))
            .add_service(FailInTrailers)
            .serve_with_incoming(incoming),
    );
    addr
}

/// An axum app (`GET|POST /hello`, `GET /healthz`, `GET /fail` → 503) behind `layer`.
pub async fn spawn_http(layer: ServerLayer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/hello",
            get(|| async { "hello" }).post(|| async { "posted" }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/fail",
            get(|| async { (http::StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .layer(layer)
        .layer(MapRequestLayer::new(accept_as::<axum::body::Body>));
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    addr
}

/// A tonic client of the echo server at `addr`.
pub async fn grpc_client(addr: SocketAddr) -> EchoClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    EchoClient::new(channel)
}

/// A request with the caller's principal, if any.
pub fn grpc_request(principal: Option<&str>) -> tonic::Request<crate::echo::EchoRequest> {
    let mut req = crate::echo::request("hi");
    if let Some(p) = principal {
        req.metadata_mut().insert(PRINCIPAL, p.parse().unwrap());
    }
    req
}

/// An HTTP/1 client.
pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `method path` with `headers`, returns the status and body.
pub async fn http_call(
    client: &HttpClient,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `config` with its server policy changed by `edit`.
pub fn with_server(config: MeshConfig, edit: impl FnOnce(&mut ServerPolicy)) -> MeshConfig {
    let mut server = (**config.server()).clone();
    edit(&mut server);
    MeshConfig::new(
        config.version(),
        config.listeners().clone(),
        config.clusters().clone(),
        server,
    )
    .unwrap()
}

/// A mesh with only these server-side YAML documents.
pub fn mesh(yaml: &str) -> Mesh {
    Mesh::new(crate::echo::config(yaml))
}
