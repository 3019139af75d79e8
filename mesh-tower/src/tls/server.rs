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
//! On a port an xDS client serves ([`Mesh::server_tls`](crate::Mesh::server_tls)), the mode is
//! per connection: the one of the filter chain the inbound listener gives the connection's
//! addresses ([`InboundListener::select`]). A connection no chain takes, or any connection
//! while the port is not serving, is closed before a byte is sent (A36).
//!
//! Both rustls configurations are built once; the certificate presented and the bundle clients
//! are verified with come from the watcher's current material on every handshake, and the mode
//! can change at run time ([`ServerTls::set_mode`]).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use mesh_core::{InboundChain, InboundListener, MtlsMode};
use rustls::{ServerConfig, server::NoServerSessionStorage};
use tokio::{net::TcpStream, sync::watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{
    CertificateWatcher, MeshStream, TlsError, context::ALPN_H2, identity::SubjectAltNames,
    resolve::CurrentCertificate, stream::Drain, verify::MeshClientVerifier,
};
use crate::{Peer, peer::PeerIdentity};

/// Default bound on the TLS handshake (and, in PERMISSIVE, on the wait for the first byte):
/// Envoy's listener default for `transport_socket_connect_timeout` is 15 s; gRPC clients finish
/// in milliseconds, so a peer that takes 10 s is either broken or hostile.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default grace a connection the mode no longer admits gets before it is closed: Istio's
/// `drainDuration` (45 s), the drain time it runs Envoy with (Envoy's own default,
/// `--drain-time-s`, is 600 s, which is long for a connection that lost its right to be open).
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(45);

/// The TLS record type of a handshake message: a ClientHello starts with it.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How a server accepts connections: the mTLS mode and the material for it. Cheap to clone;
/// clones share the mode and the counters.
///
/// # Draining connections a new mode no longer admits
///
/// When the mode becomes STRICT, connections accepted earlier without a verified client
/// certificate (plaintext, or PERMISSIVE TLS without one) are drained, as Envoy drains the
/// connections of a listener whose filter chain changed. On an xDS-served port, a connection
/// is drained when the chain the current inbound listener gives it is not the one it was
/// accepted with (changed or removed), or the port stops serving; connections whose chain is
/// unchanged keep going (A36). From that moment the
/// [server layer](crate::server) refuses their requests when its configuration says STRICT
/// (the mode of [`Mesh::server_tls`](crate::Mesh::server_tls) comes from there), and
/// after a grace period ([`ServerTls::with_drain_grace`], default [`DEFAULT_DRAIN_GRACE`]) for
/// the requests in flight the connection itself is closed: its reads and writes fail, so the
/// HTTP server (tonic's, axum's or hyper's) drops it. An HTTP/2 GOAWAY would be gentler, but
/// the HTTP connection belongs to the server that runs it (tonic's `serve_with_incoming`,
/// `axum::serve`), out of the listener's reach; the close is what the listener can do, and a
/// client sees it as a connection reset and reconnects, now in the new mode.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// What new connections are accepted in; open connections watch it to drain.
    admission: Arc<watch::Sender<Admission>>,
    configs: Option<Configs>,
    handshake_timeout: Duration,
    drain_grace: Duration,
    stats: Arc<AcceptStats>,
}

#[derive(Clone, Debug)]
struct Configs {
    /// A client certificate required (STRICT).
    mutual: Arc<ServerConfig>,
    /// A client certificate verified when offered (PERMISSIVE).
    optional: Arc<ServerConfig>,
}

/// What decides how a connection is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// One mode for every connection (PeerAuthentication).
    Mode(MtlsMode),
    /// An xDS-served port: each connection gets its filter chain's mode.
    Chains(Arc<InboundListener>),
    /// An xDS-served port without a listener: connections are closed at once.
    NotServing,
}

/// What a connection was accepted with, to tell when it must be drained.
#[derive(Debug)]
struct Accepted {
    local: SocketAddr,
    remote: SocketAddr,
    chain: Option<Arc<InboundChain>>,
    verified: bool,
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
    #[error("the port is not serving (no inbound listener)")]
    NotServing,
    #[error("no filter chain of the inbound listener matches the connection")]
    NoFilterChain,
    #[error("the connection's local address is unknown: {0}")]
    LocalAddress(std::io::Error),
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
            admission: Arc::new(watch::Sender::new(Admission::Mode(mode))),
            configs: Some(Configs {
                mutual: config(true)?,
                optional: config(false)?,
            }),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            drain_grace: DEFAULT_DRAIN_GRACE,
            stats: Arc::default(),
        })
    }

    /// A plaintext-only server (DISABLE); it has no material, so it cannot switch to a TLS mode.
    pub fn plaintext() -> Self {
        Self {
            admission: Arc::new(watch::Sender::new(Admission::Mode(MtlsMode::Disable))),
            configs: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            drain_grace: DEFAULT_DRAIN_GRACE,
            stats: Arc::default(),
        }
    }

    /// Bounds the TLS handshake. Default is [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a connection the mode no longer admits stays open for its requests in flight
    /// before it is closed (see [`ServerTls`]). Default is [`DEFAULT_DRAIN_GRACE`].
    pub fn with_drain_grace(mut self, grace: Duration) -> Self {
        self.drain_grace = grace;
        self
    }

    /// The mode new connections are accepted in. On an xDS-served port the mode is per
    /// connection: STRICT or DISABLE when every filter chain says so, PERMISSIVE when chains
    /// differ, STRICT while the port is not serving (nothing is accepted in plaintext).
    pub fn mode(&self) -> MtlsMode {
        match &*self.admission.borrow() {
            Admission::Mode(mode) => *mode,
            Admission::Chains(listener) => listener.mtls_summary(),
            Admission::NotServing => MtlsMode::Strict,
        }
    }

    /// Changes the mode (a PeerAuthentication update): new connections are accepted in it, and
    /// open connections it no longer admits are drained (see [`ServerTls`]). A TLS
    /// mode on a [`plaintext`](Self::plaintext) server is refused.
    pub fn set_mode(&self, mode: MtlsMode) -> Result<(), TlsError> {
        self.set_admission(Admission::Mode(mode))
    }

    /// Changes what new connections are accepted in; open connections it no longer admits are
    /// drained. Unchanged admission wakes nobody. A TLS chain on a
    /// [`plaintext`](Self::plaintext) server is refused.
    pub(crate) fn set_admission(&self, admission: Admission) -> Result<(), TlsError> {
        let needs_material = match &admission {
            Admission::Mode(mode) => *mode != MtlsMode::Disable,
            Admission::Chains(listener) => listener.mtls_summary() != MtlsMode::Disable,
            Admission::NotServing => false,
        };
        if needs_material && self.configs.is_none() {
            return Err(TlsError::NoWorkloadIdentity);
        }
        self.admission.send_if_modified(|current| {
            let changed = *current != admission;
            *current = admission;
            changed
        });
        Ok(())
    }

    /// Whether new connections are accepted as `admission` says already.
    pub(crate) fn has_admission(&self, admission: &Admission) -> bool {
        *self.admission.borrow() == *admission
    }

    /// The drain of a connection: a task that waits until the admission no longer admits it,
    /// then for the grace, then closes the connection. The task ends early when the connection
    /// is dropped or the server is gone.
    fn drain(&self, accepted: Accepted) -> Drain {
        let close = CancellationToken::new();
        let gone = CancellationToken::new();
        let mut admission = self.admission.subscribe();
        let grace = self.drain_grace;
        let (close_task, gone_task) = (close.clone(), gone.clone());
        tokio::spawn(async move {
            let remote = accepted.remote;
            tokio::select! {
                () = gone_task.cancelled() => return,
                changed = admission.wait_for(|a| !admits(a, &accepted)) => {
                    let Ok(now) = changed else { return };
                    match &*now {
                        Admission::Mode(_) => tracing::info!(%remote, ?grace, "the port is STRICT now: draining a connection without a verified client certificate"),
                        Admission::Chains(_) => tracing::info!(%remote, ?grace, chain = ?accepted.chain.as_ref().map(|c| &c.name), "the connection's filter chain changed: draining it"),
                        Admission::NotServing => tracing::info!(%remote, ?grace, "the port stopped serving: draining a connection"),
                    }
                }
            }
            tokio::select! {
                () = gone_task.cancelled() => {}
                () = tokio::time::sleep(grace) => {
                    tracing::info!(%remote, "drained connection closed");
                    close_task.cancel();
                }
            }
        });
        Drain::new(close, gone)
    }

    /// The accept loop's counters.
    pub fn stats(&self) -> &AcceptStats {
        &self.stats
    }

    /// Whether only one handle (the caller's) is left: no listener accepts with it.
    pub(crate) fn is_unused(&self) -> bool {
        Arc::strong_count(&self.admission) <= 1
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
        let local = tcp.local_addr().map_err(AcceptError::LocalAddress)?;
        // Cloned out: the watch's guard must not be held across the handshake.
        let admission = self.admission.borrow().clone();
        let (mode, chain) = match admission {
            Admission::Mode(mode) => (mode, None),
            Admission::NotServing => return Err(AcceptError::NotServing),
            Admission::Chains(listener) => match listener.select(local, remote) {
                Some(chain) => (chain.mtls, Some(chain.clone())),
                None => return Err(AcceptError::NoFilterChain),
            },
        };
        let config = match (mode, &self.configs) {
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
        let mut accepted = Accepted {
            local,
            remote,
            chain,
            verified: false,
        };
        let Some(config) = config else {
            self.stats.plaintext.fetch_add(1, Ordering::Relaxed);
            let peer = Peer {
                address: Some(remote),
                local_address: Some(local),
                identity: None,
            };
            return Ok(MeshStream::plaintext(tcp, peer).draining(self.drain(accepted)));
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
        accepted.verified = identity.is_some();
        let peer = Peer {
            address: Some(remote),
            local_address: Some(local),
            identity,
        };
        Ok(MeshStream::tls(tls, peer).draining(self.drain(accepted)))
    }
}

/// Whether `admission` still admits a connection accepted as `accepted`: a connection keeps
/// the chain it was accepted with, or a verified identity under STRICT.
fn admits(admission: &Admission, accepted: &Accepted) -> bool {
    match admission {
        Admission::Mode(mode) => *mode != MtlsMode::Strict || accepted.verified,
        Admission::NotServing => false,
        Admission::Chains(listener) => {
            listener.select(accepted.local, accepted.remote) == accepted.chain.as_ref()
        }
    }
}

fn peer_identity(leaf: &[u8]) -> Result<PeerIdentity, AcceptError> {
    SubjectAltNames::of(leaf)
        .map(SubjectAltNames::into_identity)
        .map_err(AcceptError::Identity)
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
