//! The client side: TLS over an endpoint's transport (TCP, or a custom connector's stream), as
//! the cluster's [`UpstreamTls`] says.
//!
//! Every failure (no material, unreadable files, a refused handshake) is a connect error whose
//! message starts with `TLS` and says why; the request fails with it (gRPC `UNAVAILABLE`). There
//! is no path from a TLS cluster to a plaintext connection.

use mesh_core::{EndpointAddress, UpstreamTls};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::MeshTls;

/// Makes the TLS connections of the endpoints of one cluster.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamConnector {
    policy: UpstreamTls,
    tls: MeshTls,
}

// === impl UpstreamConnector ===

impl UpstreamConnector {
    pub(crate) fn new(policy: UpstreamTls, tls: MeshTls) -> Self {
        Self { policy, tls }
    }

    /// Runs the TLS handshake over `transport`; the error is the reason for a connect error.
    pub(crate) async fn connect<T>(
        &self,
        address: &EndpointAddress,
        transport: T,
    ) -> Result<TlsStream<T>, String>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self
            .tls
            .client_config(&self.policy)
            .map_err(|e| e.to_string())?;
        let name = server_name(self.policy.sni.as_deref(), address)?;
        TlsConnector::from(config)
            .connect(name, transport)
            .await
            .map_err(|e| format!("TLS handshake failed: {}", describe(&e)))
    }
}

/// The handshake error, with the mesh's own certificate errors (SAN mismatch) shown by their
/// message: rustls prints `CertificateError::Other` with `Debug`.
fn describe(error: &std::io::Error) -> String {
    let rustls_error = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
            format!("invalid peer certificate: {}", other.0)
        }
        _ => error.to_string(),
    }
}

/// The name sent as SNI and checked when the cluster has no SAN matchers: the configured SNI,
/// else the endpoint's host name, else its IP address (no SNI is sent for an IP).
fn server_name(
    sni: Option<&str>,
    address: &EndpointAddress,
) -> Result<ServerName<'static>, String> {
    let name = match (sni, address) {
        (Some(sni), _) => sni.to_owned(),
        (None, EndpointAddress::Dns { host, .. }) => host.to_string(),
        (None, EndpointAddress::Socket(addr)) => return Ok(ServerName::from(addr.ip())),
    };
    ServerName::try_from(name.clone())
        .map_err(|e| format!("TLS: `{name}` is not a valid server name: {e}"))
}

#[cfg(test)]
mod tests {
    use mesh_core::EndpointAddress;
    use rustls::pki_types::ServerName;

    use super::server_name;

    #[test]
    fn the_sni_wins_then_the_host_name_then_the_ip() {
        let dns = EndpointAddress::Dns {
            host: "reviews.default.svc".into(),
            port: 9080,
        };
        let ip = EndpointAddress::Socket("10.0.0.7:9080".parse().unwrap());
        let name = |sni, address| server_name(sni, address).unwrap().to_str().into_owned();
        assert_eq!(
            name(Some("outbound_.9080_._.reviews"), &ip),
            "outbound_.9080_._.reviews"
        );
        assert_eq!(name(None, &dns), "reviews.default.svc");
        assert!(matches!(
            server_name(None, &ip).unwrap(),
            ServerName::IpAddress(_)
        ));
        let error = server_name(Some("not a name!"), &ip).unwrap_err();
        assert!(error.starts_with("TLS: `not a name!`"), "{error}");
    }
}
