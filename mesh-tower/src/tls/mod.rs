//! Mutual TLS with SPIFFE identities, on rustls with the ring provider, for the client
//! (endpoint connections) and the server (an acceptor for tonic and axum).
//!
//! ```text
//! PEM files ──poll──▶ CertificateWatcher (ArcSwap<Material>) ──▶ resolvers + verifiers
//!                                                                   │ read per handshake
//!        MeshTls: workload identity, provider registry ─────▶ rustls ClientConfig / ServerConfig
//!                                                               (built once, never rebuilt)
//! ```
//!
//! - **Material** ([`CertificateFiles`], [`CertificateWatcher`]): a chain, its key and a CA
//!   bundle from PEM files, reloaded atomically when they change; a bad rotation (unparsable,
//!   a key that is not the leaf's, a leaf expired or not yet valid, a leaf that does not chain
//!   to the bundle) keeps the old material serving and is reported
//!   ([`CertificateWatcher::last_error`], [`CertificateWatcher::failures`], a `warn` log
//!   naming the file).
//! - **Verification** ([`MeshServerVerifier`], [`MeshClientVerifier`]): webpki chain validation
//!   against the current bundle, then Istio's identity rules (SAN matchers, e.g. a SPIFFE ID,
//!   instead of the host name).
//! - **Client**: a cluster's [`UpstreamTls`](mesh_core::UpstreamTls) picks the mode; ISTIO_MUTUAL
//!   uses the workload identity ([`MeshTls::set_workload_identity`]); certificate-provider
//!   instances from the xDS bootstrap resolve through [`CertificateProviders`]. Any TLS failure
//!   fails the request (`UNAVAILABLE`, "TLS …"), never falls back to plaintext.
//! - **Server** ([`ServerTls`], [`MeshListener`]): STRICT / PERMISSIVE / DISABLE on one port;
//!   the verified SPIFFE ID becomes [`Peer::identity`](crate::Peer::identity).
//!
//! One crypto provider, ring, is passed explicitly to every builder: the process-wide default
//! provider is never installed or relied on.

mod client;
mod context;
mod error;
mod identity;
mod listener;
mod material;
mod providers;
mod resolve;
mod server;
mod stream;
mod verify;
mod watch;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub(crate) use self::{client::UpstreamConnector, server::Admission};
pub use self::{
    context::MeshTls,
    error::TlsError,
    listener::MeshListener,
    material::{CertificateFiles, DEFAULT_CLOCK_SKEW, Material},
    providers::{CertificateProviders, ProviderFiles},
    server::{AcceptStats, DEFAULT_DRAIN_GRACE, DEFAULT_HANDSHAKE_TIMEOUT, ServerTls},
    stream::MeshStream,
    verify::{MeshClientVerifier, MeshServerVerifier},
    watch::{CertificateWatcher, DEFAULT_POLL_INTERVAL},
};

/// The crypto provider of every TLS configuration the mesh builds: rustls' *ring* provider.
///
/// The workspace uses one provider, ring, passed explicitly, so the build needs no C toolchain
/// beyond ring's and never depends on a process-wide default. rustls 0.23.48 deprecated
/// `ring::default_provider` because ring has no post-quantum key exchange; the replacement is
/// the aws-lc-rs provider, a different dependency with a CMake/C build. Until the mesh moves to
/// it, the deprecation is allowed here, in the one place the provider is made, so that a fresh
/// resolve of rustls builds without warnings. Tests and benchmarks that build their own rustls
/// configurations use this function too, so every peer speaks the same suites.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            #[allow(deprecated, clippy::disallowed_methods)]
            let provider = rustls::crypto::ring::default_provider();
            Arc::new(provider)
        })
        .clone()
}
