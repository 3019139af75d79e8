//! Mutual TLS over the in-memory network: the mesh runs a cluster's TLS over a custom
//! connector's stream exactly as over TCP, so TLS tests need no sockets either.

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use mesh_tower::Mesh;
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tower::ServiceExt as _;

use crate::{
    harness::*,
    support::{memnet::MemNet, spawn_echo_service},
};

/// Serves the echo service at a fresh address of `net` behind a TLS server presenting the
/// identity in `pki.dir`'s `server` files and requiring a client certificate of `pki.ca`;
/// counts the handshakes whose client presented one.
fn serve_mutual_tls(net: &MemNet, pki: &Pki) -> (std::net::SocketAddr, Arc<AtomicU32>) {
    let provider = mesh_tower::tls::crypto_provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.pem().as_bytes()).unwrap())
        .unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let chain = CertificateDer::pem_file_iter(pki.dir.path("server.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.dir.path("server.key")).unwrap();
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let mutual = Arc::new(AtomicU32::new(0));
    let counted = mutual.clone();
    let addr = net.next_addr();
    let mut listener = net.bind(addr);
    let echo = spawn_echo_service("in-memory")
        .map_request(|r: http::Request<hyper::body::Incoming>| r.map(tonic::body::Body::new));
    tokio::spawn(async move {
        while let Some(stream) = listener.accept().await {
            let (acceptor, echo, counted) = (acceptor.clone(), echo.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                if tls.get_ref().1.peer_certificates().is_some() {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(tls),
                            hyper_util::service::TowerToHyperService::new(echo),
                        )
                        .await;
            });
        }
    });
    (addr, mutual)
}

#[tokio::test(start_paused = true)]
async fn istio_mutual_runs_over_a_custom_connector() {
    let pki = pki();
    let net = MemNet::new();
    let (addr, mutual) = serve_mutual_tls(&net, &pki);
    let mesh = Mesh::with_connector(
        client_config(addr, &istio_mutual("server")),
        net.connector(),
    );
    mesh.set_workload_identity(pki.client.clone()).unwrap();
    let reply = say(&mesh).await.unwrap();
    assert_eq!(reply.served_by, "in-memory");
    assert_eq!(
        mutual.load(Ordering::SeqCst),
        1,
        "the client presented its identity"
    );

    // The cluster's SAN check applies as over TCP.
    let other = Mesh::with_connector(
        client_config(addr, &istio_mutual("someone-else")),
        net.connector(),
    );
    other.set_workload_identity(pki.client).unwrap();
    assert_tls_failure(
        say(&other).await,
        "SANs (URI:spiffe://cluster.local/ns/default/sa/server) match none",
    );
}
