//! The server side: which connections get TLS, and what a client must prove.
//!
//! The mode is Istio's PeerAuthentication mode for the port (resolve it with
//! [`mesh_core::mtls_mode`], or let [`Mesh::server_tls`](crate::Mesh::server_tls) follow the configuration):
//!
//! | mode | first byte `0x16` (TLS ClientHello) | anything else |
//! |---|---|---|
//! | STRICT | mTLS, a client certificate required | refused (the TLS handshake fails) |
//! | PERMISSIVE | TLS, a client certificate verified when offered | plaintext |
//! | DISABLE | plaintext (the bytes reach the HTTP server, which refuses them) | plaintext |
//!
//! A PERMISSIVE TLS client without a certificate is let in without an identity: it proves no
//! less than the plaintext clients PERMISSIVE already accepts. Only a verified certificate sets
//! [`Peer::identity`](crate::Peer::identity).
//!
//! Both rustls configurations are built once; the certificate presented and the bundle clients
//! are verified with come from the watcher's current material on every handshake, and the mode
//! can change at run time ([`ServerTls::set_mode`]) for new connections.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use mesh_core::MtlsMode;
use rustls::{ServerConfig, server::NoServerSessionStorage};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::{
    CertificateWatcher, MeshStream, TlsError, context::ALPN_H2, identity::SubjectAltNames,
    resolve::CurrentCertificate, verify::MeshClientVerifier,
};
use crate::{Peer, peer::PeerIdentity};

/// Default bound on the TLS handshake (and, in PERMISSIVE, on the wait for the first byte):
/// Envoy's listener default for `transport_socket_connect_timeout` is 15 s; gRPC clients finish
/// in milliseconds, so a peer that takes 10 s is either broken or hostile.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS record type of a handshake message: a ClientHello starts with it.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How a server accepts connections: the mTLS mode and the material for it. Cheap to clone;
/// clones share the mode and the counters.
#[derive(Clone, Debug)]
pub struct ServerTls {
    mode: Arc<AtomicU8>,
    configs: Option<Configs>,
    handshake_timeout: Duration,
    stats: Arc<AcceptStats>,
}

#[derive(Clone, Debug)]
struct Configs {
    /// A client certificate required (STRICT).
    mutual: Arc<ServerConfig>,
    /// A client certificate verified when offered (PERMISSIVE).
    optional: Arc<ServerConfig>,
}

/// What the accept loop did with the connections it accepted.
#[derive(Debug, Default)]
pub struct AcceptStats {
    mtls: AtomicU64,
    tls_without_certificate: AtomicU64,
    plaintext: AtomicU64,
    handshake_failures: AtomicU64,
    handshake_timeouts: AtomicU64,
}

/// Why one connection was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcceptError {
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("reading the first byte failed: {0}")]
    Peek(std::io::Error),
    #[error("the client closed the connection before sending anything")]
    Closed,
    #[error("a TLS mode without TLS material")]
    NoMaterial,
    #[error("the verified client certificate does not parse: {0}")]
    Identity(String),
}

// === impl ServerTls ===

impl ServerTls {
    /// A server in `mode` presenting `identity`'s certificate and verifying clients with its
    /// trust bundle. Fails when the material has no certificate or no trust bundle.
    pub fn new(mode: MtlsMode, identity: CertificateWatcher) -> Result<Self, TlsError> {
        let material = identity.current();
        if material.identity.is_none() {
            return Err(TlsError::NoCertificate {
                what: identity.files().to_string().into(),
            });
        }
        if material.roots.is_none() {
            return Err(TlsError::NoTrustBundle {
                what: identity.files().to_string().into(),
            });
        }
        let config = |mandatory: bool| -> Result<Arc<ServerConfig>, TlsError> {
            let mut config = ServerConfig::builder_with_provider(identity.provider().clone())
                .with_safe_default_protocol_versions()
                .map_err(TlsError::policy)?
                .with_client_cert_verifier(Arc::new(MeshClientVerifier::new(
                    identity.clone(),
                    mandatory,
                )))
                .with_cert_resolver(Arc::new(CurrentCertificate(identity.clone())));
            // h2 for gRPC; http/1.1 for the axum routes of the same server.
            config.alpn_protocols = vec![ALPN_H2.to_vec(), b"http/1.1".to_vec()];
            // No resumption: every client is verified against the current trust bundle and
            // proves its current identity (see the client side).
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
            Ok(Arc::new(config))
        };
        Ok(Self {
            mode: Arc::new(AtomicU8::new(encode(mode))),
            configs: Some(Configs {
                mutual: config(true)?,
                optional: config(false)?,
            }),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            stats: Arc::default(),
        })
    }

    /// A plaintext-only server (DISABLE); it has no material, so it cannot switch to a TLS mode.
    pub fn plaintext() -> Self {
        Self {
            mode: Arc::new(AtomicU8::new(encode(MtlsMode::Disable))),
            configs: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            stats: Arc::default(),
        }
    }

    /// Bounds the TLS handshake. Default is [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The mode new connections are accepted in.
    pub fn mode(&self) -> MtlsMode {
        decode(self.mode.load(Ordering::Acquire))
    }

    /// Changes the mode for new connections (a PeerAuthentication update); open connections
    /// are kept. A TLS mode on a [`plaintext`](Self::plaintext) server is refused.
    pub fn set_mode(&self, mode: MtlsMode) -> Result<(), TlsError> {
        if mode != MtlsMode::Disable && self.configs.is_none() {
            return Err(TlsError::NoWorkloadIdentity);
        }
        self.mode.store(encode(mode), Ordering::Release);
        Ok(())
    }

    /// The accept loop's counters.
    pub fn stats(&self) -> &AcceptStats {
        &self.stats
    }

    /// Whether only one handle (the caller's) is left: no listener accepts with it.
    pub(crate) fn is_unused(&self) -> bool {
        Arc::strong_count(&self.mode) <= 1
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Accepts one connection in the current mode.
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
        remote: SocketAddr,
    ) -> Result<MeshStream, AcceptError> {
        let config = match (self.mode(), &self.configs) {
            (MtlsMode::Disable, _) => None,
            // Unreachable through `set_mode`; refused rather than served in plaintext.
            (_, None) => return Err(AcceptError::NoMaterial),
            (MtlsMode::Strict, Some(c)) => Some(c.mutual.clone()),
            (MtlsMode::Permissive, Some(c)) => {
                let mut first = [0u8; 1];
                match tcp.peek(&mut first).await {
                    Ok(0) => return Err(AcceptError::Closed),
                    Ok(_) if first[0] == TLS_HANDSHAKE_RECORD => Some(c.optional.clone()),
                    Ok(_) => None,
                    Err(e) => return Err(AcceptError::Peek(e)),
                }
            }
        };
        let Some(config) = config else {
            self.stats.plaintext.fetch_add(1, Ordering::Relaxed);
            return Ok(MeshStream::plaintext(
                tcp,
                Peer {
                    address: Some(remote),
                    identity: None,
                },
            ));
        };
        let tls = TlsAcceptor::from(config)
            .accept(tcp)
            .await
            .map_err(AcceptError::Handshake)?;
        let identity = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            Some(leaf) => Some(peer_identity(leaf)?),
            None => None,
        };
        let counter = match identity {
            Some(_) => &self.stats.mtls,
            None => &self.stats.tls_without_certificate,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(MeshStream::tls(
            tls,
            Peer {
                address: Some(remote),
                identity,
            },
        ))
    }
}

fn peer_identity(leaf: &[u8]) -> Result<PeerIdentity, AcceptError> {
    SubjectAltNames::of(leaf)
        .map(SubjectAltNames::into_identity)
        .map_err(AcceptError::Identity)
}

fn encode(mode: MtlsMode) -> u8 {
    match mode {
        MtlsMode::Strict => 0,
        MtlsMode::Permissive => 1,
        MtlsMode::Disable => 2,
    }
}

fn decode(mode: u8) -> MtlsMode {
    match mode {
        0 => MtlsMode::Strict,
        2 => MtlsMode::Disable,
        _ => MtlsMode::Permissive,
    }
}

// === impl AcceptStats ===

impl AcceptStats {
    /// Connections accepted with a verified client certificate.
    pub fn mtls(&self) -> u64 {
        self.mtls.load(Ordering::Relaxed)
    }

    /// PERMISSIVE connections accepted with TLS but no client certificate.
    pub fn tls_without_certificate(&self) -> u64 {
        self.tls_without_certificate.load(Ordering::Relaxed)
    }

    /// Connections accepted in plaintext.
    pub fn plaintext(&self) -> u64 {
        self.plaintext.load(Ordering::Relaxed)
    }

    /// Connections refused because their handshake failed (bad or missing certificate,
    /// plaintext to STRICT, …).
    pub fn handshake_failures(&self) -> u64 {
        self.handshake_failures.load(Ordering::Relaxed)
    }

    /// Connections dropped because their handshake took longer than the timeout.
    pub fn handshake_timeouts(&self) -> u64 {
        self.handshake_timeouts.load(Ordering::Relaxed)
    }

    pub(crate) fn count_failure(&self) {
        self.handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_timeout(&self) {
        self.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
    }
}
