//! Mesh clients of the echo service over mTLS, shared by the mTLS and security suites: their
//! configuration (Istio YAML with a DestinationRule's TLS), the client, one call, and a bounded
//! wait for effects a server records after the client has seen a failure.

use std::{net::SocketAddr, time::Duration};

use mesh_tower::{Mesh, mesh_core::MeshConfig, tls::CertificateFiles};
use tonic::Status;

use crate::{
    echo::{self as support, EchoClient, EchoReply, HOST, TARGET, request},
    pki::spiffe,
};

/// Istio YAML for the echo service at `addr` with `tls` as the DestinationRule's
/// `trafficPolicy.tls` (flow style), or no TLS when empty.
pub fn client_config(addr: SocketAddr, tls: &str) -> MeshConfig {
    support::config(&format!(
        "{}---\n{}",
        support::single_endpoint_yaml(addr, tls),
        support::virtual_service(&format!(
            "  - route:\n    - destination: {{host: {HOST}}}\n"
        ))
    ))
}

/// ISTIO_MUTUAL expecting the server to be service account `server`.
pub fn istio_mutual(sa: &str) -> String {
    format!(
        "{{mode: ISTIO_MUTUAL, subjectAltNames: [\"{}\"]}}",
        spiffe(sa)
    )
}

/// A mesh client with workload identity `files` (when given) and `config`.
pub fn client(files: Option<CertificateFiles>, config: MeshConfig) -> Mesh {
    let mesh = Mesh::new(config);
    if let Some(files) = files {
        mesh.set_workload_identity(files).unwrap();
    }
    mesh
}

/// Calls the echo service at [`TARGET`] through `mesh`'s channel.
pub async fn say(mesh: &Mesh) -> Result<EchoReply, Status> {
    EchoClient::new(mesh.channel(TARGET))
        .say(request("hi"))
        .await
        .map(tonic::Response::into_inner)
}

/// Waits for `condition`, polling every 10 ms for at most 5 s: for effects the server records
/// after the client has already seen the connection fail.
pub async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}
