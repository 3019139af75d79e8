//! The TLS of variant `d`. The baseline `d-tls`: plain tonic on both ends over rustls
//! (server-authenticated TLS 1.3, ring, ALPN `h2`), no mesh — what the mesh's mTLS is compared
//! against. And the certificates of `d-mtls`, whose TLS is the mesh's own
//! ([`mesh_tower::tls`]).
//!
//! The orchestrator writes the material into the work directory once, and the server and
//! client processes load it from there: for `d-tls` a self-signed certificate for `localhost`
//! (rcgen; the server loads the certificate and key, the client trusts the certificate), for
//! `d-mtls` a CA and one SPIFFE workload certificate each for the mesh client and server
//! ([`write_mesh_material`]). tonic's own TLS features stay off (the workspace keeps one way
//! to do TLS): the server's incoming stream and the client's connector of `d-tls` are built on
//! tokio-rustls here.

use std::{
    fs, io,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::Stream;
use hyper_util::rt::TokioIo;
use mesh_examples::pki::{self, Pki, PkiError};
use mesh_tower::tls::CertificateFiles;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::{
    Channel, Endpoint,
    server::{Connected, TcpConnectInfo},
};

use crate::variant::{MESH_CLIENT_SA, MESH_NAMESPACE, MESH_SERVER_SA};

/// The name the certificate is issued to and the client checks.
pub const SERVER_NAME: &str = "localhost";
const CERT_FILE: &str = "cert.der";
const KEY_FILE: &str = "key.der";
/// The subdirectory of the mesh's CA and workload certificates.
const MESH_DIR: &str = "mesh";

/// An error setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating the certificate failed.
    #[error("generating the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Issuing or naming the mesh's workload certificates failed.
    #[error("mesh workload certificates: {0}")]
    Pki(#[from] PkiError),
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Reading or writing the certificate files failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
}

/// Writes a fresh self-signed certificate for [`SERVER_NAME`] and its key into `dir`.
pub fn write_material(dir: &Path) -> Result<(), TlsError> {
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        fs::create_dir_all(dir)
            .and_then(|()| fs::write(&path, bytes))
            .map_err(|source| TlsError::Io {
                path: path.display().to_string(),
                source,
            })
    };
    write(CERT_FILE, certified.cert.der())?;
    write(KEY_FILE, &certified.signing_key.serialize_der())
}

/// Writes a fresh CA and the workload certificates of the mesh client ([`MESH_CLIENT_SA`]) and
/// server ([`MESH_SERVER_SA`]) of `d-mtls` into `dir`, for [`mesh_identity`] to find.
///
/// [`MESH_CLIENT_SA`]: crate::variant::MESH_CLIENT_SA
/// [`MESH_SERVER_SA`]: crate::variant::MESH_SERVER_SA
pub fn write_mesh_material(dir: &Path) -> Result<(), TlsError> {
    let pki = Pki::in_dir(dir.join(MESH_DIR))?;
    for sa in [MESH_CLIENT_SA, MESH_SERVER_SA] {
        pki.identity(MESH_NAMESPACE, sa)?;
    }
    Ok(())
}

/// The workload identity of service account `sa` that [`write_mesh_material`] wrote into
/// `dir`: its certificate chain, key and the CA bundle.
pub fn mesh_identity(dir: &Path, sa: &str) -> Result<CertificateFiles, TlsError> {
    Ok(pki::issued_files(&dir.join(MESH_DIR), MESH_NAMESPACE, sa)?)
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, TlsError> {
    let path = dir.join(name);
    fs::read(&path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The server side: the certificate and key in `dir`, ALPN `h2`.
pub fn server_config(dir: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert = CertificateDer::from(read(dir, CERT_FILE)?);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(read(dir, KEY_FILE)?));
    let mut config = ServerConfig::builder_with_provider(mesh_tower::tls::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The client side: trusts only the certificate in `dir`, ALPN `h2`.
pub fn client_config(dir: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(read(dir, CERT_FILE)?))?;
    let mut config = ClientConfig::builder_with_provider(mesh_tower::tls::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A tonic channel to loopback `port` over TLS, connected now.
pub async fn channel(
    config: Arc<ClientConfig>,
    port: u16,
) -> Result<Channel, tonic::transport::Error> {
    let connector = tower::service_fn(move |_: http::Uri| {
        let tls = TlsConnector::from(config.clone());
        async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(SERVER_NAME).map_err(io::Error::other)?;
            Ok::<_, io::Error>(TokioIo::new(tls.connect(name, tcp).await?))
        }
    });
    Endpoint::from_shared(format!("http://{SERVER_NAME}:{port}"))?
        .connect_with_connector(connector)
        .await
}

/// The TLS connections accepted on `listener`, handshakes done; a failed handshake is skipped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl Stream<Item = Result<TlsIo, io::Error>> {
    let acceptor = TlsAcceptor::from(config);
    futures::stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => return Some((Err(e), (listener, acceptor))),
            };
            let _ = tcp.set_nodelay(true);
            if let Ok(tls) = acceptor.accept(tcp).await {
                return Some((Ok(TlsIo(tls)), (listener, acceptor)));
            }
        }
    })
}

/// A server-side TLS connection tonic can serve (tonic implements [`Connected`] for rustls
/// streams only behind its own TLS features, which the workspace leaves off).
#[derive(Debug)]
pub struct TlsIo(tokio_rustls::server::TlsStream<TcpStream>);

// === impl TlsIo ===

impl Connected for TlsIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_material_makes_matching_server_and_client_configs() {
        let dir = std::env::temp_dir().join(format!("mesh-bench-tls-{}", std::process::id()));
        write_material(&dir).unwrap();
        assert_eq!(
            server_config(&dir).unwrap().alpn_protocols,
            [b"h2".to_vec()]
        );
        assert_eq!(
            client_config(&dir).unwrap().alpn_protocols,
            [b"h2".to_vec()]
        );
        let _ = fs::remove_dir_all(&dir);
        assert!(matches!(server_config(&dir), Err(TlsError::Io { .. })));
    }
}
