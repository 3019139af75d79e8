//! Servers (tonic, axum with and without connect info, hyper's `server::conn`) behind
//! `MeshListener` and `server_layer` on 127.0.0.1, and HTTPS / plaintext clients that present
//! a chosen client certificate.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, routing::get};
use bytes::Bytes;
use futures::StreamExt;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
use mesh_tower::{
    Mesh, Peer, ServerLayer, Workload,
    mesh_core::MtlsMode,
    tls::{CertificateFiles, MeshListener, ServerTls},
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};

use crate::{
    certs::{Ca, Dir, Leaf, Validity, spiffe},
    support::{self, HOST},
};

/// One CA and a server identity (`spiffe://cluster.local/ns/default/sa/server`, DNS
/// `localhost` for the plain rustls clients of these tests).
pub(crate) struct Pki {
    pub(crate) dir: Dir,
    pub(crate) ca: Ca,
    pub(crate) server: CertificateFiles,
}

/// A client certificate with its key, PEM.
pub(crate) struct Caller {
    leaf: Leaf,
    ca_pem: String,
}

pub(crate) fn pki() -> Pki {
    let dir = Dir::new();
    let ca = Ca::new("mesh root");
    let leaf = ca.leaf(&[&spiffe("server")], &["localhost"], Validity::Now);
    let server = dir.identity("server", &leaf, &ca);
    Pki { dir, ca, server }
}

impl Pki {
    /// A caller whose certificate carries exactly these URI SANs, signed by the mesh CA.
    pub(crate) fn caller(&self, uris: &[&str]) -> Caller {
        Caller {
            leaf: self.ca.leaf(uris, &[], Validity::Now),
            ca_pem: self.ca.pem(),
        }
    }

    /// A mesh serving `yaml` (server-side Istio documents) with the server identity.
    pub(crate) fn server_mesh(&self, yaml: &str) -> Mesh {
        let mesh = Mesh::new(support::config(yaml));
        mesh.set_workload_identity(self.server.clone()).unwrap();
        mesh
    }
}

/// The workload every server of this suite is.
pub(crate) fn workload() -> Workload {
    Workload::new("default", HOST, 50051)
}

/// An `AuthorizationPolicy` in namespace `default` with `spec` (YAML lines, indented by two).
pub(crate) fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: default}}
spec:
{spec}---
"
    )
}

/// A `PeerAuthentication` for namespace `default` in `mode`.
pub(crate) fn peer_authentication(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec:
  mtls: {{mode: {mode}}}
---
"
    )
}

/// How an axum server takes its connections.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Axum {
    /// `into_make_service_with_connect_info::<Peer>()`, as the README says.
    WithConnectInfo,
    /// `into_make_service()`: no connection facts reach the layers.
    WithoutConnectInfo,
}

fn app(layer: ServerLayer) -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .layer(layer)
}

/// An axum app (`GET /hello`) behind `layer` on a `MeshListener` with `tls`.
pub(crate) async fn serve_axum(layer: ServerLayer, tls: ServerTls, how: Axum) -> SocketAddr {
    let listener = MeshListener::bind("127.0.0.1:0", tls).await.unwrap();
    let addr = listener.local_addr();
    let app = app(layer);
    match how {
        Axum::WithConnectInfo => tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).await
        }),
        Axum::WithoutConnectInfo => {
            tokio::spawn(async move { axum::serve(listener, app.into_make_service()).await })
        }
    };
    addr
}

/// The same app served by hyper's `server::conn` (HTTP/1.1 or HTTP/2 as the client speaks)
/// on each `MeshListener` connection, with [`ServerLayer::for_connection`].
pub(crate) async fn serve_hyper(layer: ServerLayer, tls: ServerTls) -> SocketAddr {
    let mut listener = MeshListener::bind("127.0.0.1:0", tls).await.unwrap();
    let addr = listener.local_addr();
    tokio::spawn(async move {
        while let Some(Ok(stream)) = listener.next().await {
            // The layer meters tonic's and axum's request bodies; hyper's becomes axum's.
            let service = tower::ServiceBuilder::new()
                .map_request(|req: Request<Incoming>| req.map(axum::body::Body::new))
                .layer(layer.for_connection(stream.peer().clone()))
                .service(Router::new().route("/hello", get(|| async { "hello" })));
            tokio::spawn(async move {
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await
            });
        }
    });
    addr
}

/// The echo gRPC service behind `layer` on a `MeshListener` with `tls`.
pub(crate) async fn serve_tonic(layer: ServerLayer, tls: ServerTls) -> SocketAddr {
    let listener = MeshListener::bind("127.0.0.1:0", tls).await.unwrap();
    let addr = listener.local_addr();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(support::spawn_echo_service("server"))
            .serve_with_incoming(listener),
    );
    addr
}

/// The server's TLS in `mode`, with its identity.
pub(crate) fn server_tls(mesh: &Mesh, mode: MtlsMode) -> ServerTls {
    mesh.tls().server(mode).unwrap()
}

/// HTTP version of a client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    Http1,
    Http2,
}

/// A TLS connection to `addr` presenting `caller`'s certificate, offering `version` by ALPN.
pub(crate) async fn mtls_connect(
    addr: SocketAddr,
    caller: &Caller,
    version: Version,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(caller.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(caller.leaf.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(caller.leaf.key_pem.as_bytes()).unwrap();
    let mut config = ClientConfig::builder_with_provider(mesh_tower::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![match version {
        Version::Http1 => b"http/1.1".to_vec(),
        Version::Http2 => b"h2".to_vec(),
    }];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// `GET /hello` over a fresh mTLS connection presenting `caller`'s certificate; the status.
pub(crate) async fn https_get(addr: SocketAddr, caller: &Caller, version: Version) -> u16 {
    let tls = mtls_connect(addr, caller, version).await;
    get_hello(TokioIo::new(tls), version).await
}

/// One HTTP/2 connection kept open across requests.
pub(crate) struct H2 {
    send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    /// Ends when the connection does.
    pub(crate) connection: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

impl H2 {
    pub(crate) async fn open<T>(io: T) -> Self
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .unwrap();
        Self {
            send,
            connection: tokio::spawn(conn),
        }
    }

    /// `GET /hello` on this connection: the status, or the error that ended the connection.
    pub(crate) async fn get(&mut self) -> Result<u16, hyper::Error> {
        let request = Request::get("http://localhost/hello")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = self.send.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }
}

async fn get_hello<T>(io: TokioIo<T>, version: Version) -> u16
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let request = || {
        Request::get("http://localhost/hello")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let response = match version {
        Version::Http1 => {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send.send_request(request()).await.unwrap()
        }
        Version::Http2 => {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            send.send_request(request()).await.unwrap()
        }
    };
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

/// `GET /hello` over a fresh plaintext connection; the status.
pub(crate) async fn plaintext_get(addr: SocketAddr, version: Version) -> u16 {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    get_hello(TokioIo::new(tcp), version).await
}
