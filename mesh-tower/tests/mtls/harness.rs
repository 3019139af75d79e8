//! The harness: an echo server that reports its caller, mesh servers, a PKI and a TLS probe;
//! the mesh clients, shared with the security suite, come from `mesh_test_support::mtls`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use mesh_tower::{
    mesh_core::{MeshConfig, MtlsMode, UpstreamTls},
    tls::{CertificateFiles, MeshListener, MeshTls, ServerTls},
};
use tonic::{Code, Status};

pub(crate) use mesh_test_support::mtls::{client, client_config, istio_mutual, say, wait_for};

use crate::{
    certs::{Ca, Dir},
    support::{Behavior, EchoReply, echo_service},
};

/// Serves an echo service that answers with who called ([`Behavior::who_am_i`]) on 127.0.0.1
/// with `tls`.
pub(crate) async fn serve(tls: ServerTls) -> SocketAddr {
    let listener = MeshListener::bind("127.0.0.1:0", tls).await.unwrap();
    let addr = listener.local_addr();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(echo_service(
                "",
                Arc::new(Behavior {
                    who_am_i: true,
                    ..Behavior::default()
                }),
            ))
            .serve_with_incoming(listener),
    );
    addr
}

/// A TLS context that polls only when a test asks ([`CertificateWatcher::reload`]).
pub(crate) fn quiet_tls() -> MeshTls {
    MeshTls::new(Duration::from_secs(3600))
}

/// A server in `mode` with the identity in `files`.
pub(crate) async fn server(mode: MtlsMode, files: CertificateFiles) -> (SocketAddr, ServerTls) {
    let tls = quiet_tls();
    tls.set_workload_identity(files).unwrap();
    let server_tls = tls.server(mode).unwrap();
    (serve(server_tls.clone()).await, server_tls)
}

// === clients ===

/// `config` with every cluster's TLS replaced by `tls` (what the xDS decoder produces for
/// certificate-provider instances, which Istio YAML cannot express).
pub(crate) fn with_tls(config: &MeshConfig, tls: &UpstreamTls) -> MeshConfig {
    let clusters = config
        .clusters()
        .iter()
        .map(|(name, cluster)| {
            let mut cluster = (**cluster).clone();
            cluster.tls = tls.clone();
            (name.clone(), Arc::new(cluster))
        })
        .collect();
    MeshConfig::new(
        "with-tls",
        config.listeners().clone(),
        clusters,
        (**config.server()).clone(),
    )
    .unwrap()
}

/// Asserts a mesh-synthesized TLS failure: UNAVAILABLE, and a message that says TLS and
/// contains `why`.
pub(crate) fn assert_tls_failure(result: Result<EchoReply, Status>, why: &str) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("TLS") && status.message().contains(why),
        "the message should say TLS and `{why}`: {}",
        status.message()
    );
}

/// One CA, a server `server` and a client `client`, written to files.
pub(crate) struct Pki {
    pub(crate) dir: Dir,
    pub(crate) ca: Ca,
    pub(crate) server: CertificateFiles,
    pub(crate) client: CertificateFiles,
}

pub(crate) fn pki() -> Pki {
    let dir = Dir::new();
    let ca = Ca::new("mesh root");
    let server = dir.identity("server", &ca.workload("server"), &ca);
    let client = dir.identity("client", &ca.workload("client"), &ca);
    Pki {
        dir,
        ca,
        server,
        client,
    }
}

pub(crate) fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// The leaf certificate the server at `addr` presents to a fresh handshake.
pub(crate) async fn presented_certificate(addr: SocketAddr, pki: &Pki) -> Vec<u8> {
    use rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    };
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.pem().as_bytes()).unwrap())
        .unwrap();
    let chain = CertificateDer::pem_file_iter(pki.dir.path("client.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.dir.path("client.key")).unwrap();
    let config = ClientConfig::builder_with_provider(mesh_tower::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // rustls' stock verifier checks a name: the rotation test's server certificates carry
    // `localhost` beside their SPIFFE ID for this.
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    match tls {
        Ok(stream) => stream.get_ref().1.peer_certificates().unwrap()[0].to_vec(),
        Err(e) => panic!("handshake with {addr}: {e}"),
    }
}
