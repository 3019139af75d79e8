//! Why TLS material or a TLS configuration is unusable.

use std::{path::Path, sync::Arc};

/// TLS material could not be loaded, or a TLS configuration cannot be built from it. Every
/// variant names the file or the setting at fault; cheap to clone so a watcher can report its
/// last failure and a failed connect can answer every request that waited for it.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("TLS: reading {path}: {reason}")]
    Read {
        /// The file.
        path: Arc<str>,
        /// Why.
        reason: Arc<str>,
    },
    /// A file was read but its content is not what it should be.
    #[error("TLS: {path}: {reason}")]
    Invalid {
        /// The file.
        path: Arc<str>,
        /// Why.
        reason: Arc<str>,
    },
    /// The private key does not belong to the chain's leaf certificate.
    #[error("TLS: the private key {private_key} does not match the certificate {certificate}")]
    KeyMismatch {
        /// The certificate chain file.
        certificate: Arc<str>,
        /// The private key file.
        private_key: Arc<str>,
    },
    /// `ISTIO_MUTUAL` (or a server) needs the workload's identity and none was given.
    #[error(
        "TLS: no workload identity: ISTIO_MUTUAL and mTLS servers need one (Mesh::set_workload_identity)"
    )]
    NoWorkloadIdentity,
    /// A policy names a certificate-provider instance nobody registered.
    #[error(
        "TLS: certificate provider instance `{instance}` is not registered (CertificateProviders::register)"
    )]
    UnknownProvider {
        /// The instance name.
        instance: Arc<str>,
    },
    /// The material has no trust bundle, and verifying the peer needs one.
    #[error("TLS: {what} has no trust bundle (CA certificates) to verify the peer with")]
    NoTrustBundle {
        /// Which material.
        what: Arc<str>,
    },
    /// The material has no certificate and key, and presenting one is required.
    #[error("TLS: {what} has no certificate and private key to present")]
    NoCertificate {
        /// Which material.
        what: Arc<str>,
    },
    /// The policy itself cannot be honoured.
    #[error("TLS: {0}")]
    Policy(Arc<str>),
}

// === impl TlsError ===

impl TlsError {
    pub(crate) fn read(path: &Path, reason: impl std::fmt::Display) -> Self {
        Self::Read {
            path: path.display().to_string().into(),
            reason: reason.to_string().into(),
        }
    }

    pub(crate) fn invalid(path: &Path, reason: impl std::fmt::Display) -> Self {
        Self::Invalid {
            path: path.display().to_string().into(),
            reason: reason.to_string().into(),
        }
    }

    pub(crate) fn policy(reason: impl std::fmt::Display) -> Self {
        Self::Policy(reason.to_string().into())
    }
}
