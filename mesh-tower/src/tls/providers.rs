//! Certificate-provider instances: named sets of certificate files that xDS TLS contexts refer
//! to by name.
//!
//! gRPC's xDS bootstrap declares them under `certificate_providers`, e.g.
//!
//! ```json
//! "certificate_providers": {
//!   "default": {
//!     "plugin_name": "file_watcher",
//!     "config": {
//!       "certificate_file": "/var/run/secrets/workload-spiffe-credentials/certificates.pem",
//!       "private_key_file": "/var/run/secrets/workload-spiffe-credentials/private_key.pem",
//!       "ca_certificate_file": "/var/run/secrets/workload-spiffe-credentials/ca_certificates.pem",
//!       "refresh_interval": "600s"
//!     }
//!   }
//! }
//! ```
//!
//! and a cluster's `UpstreamTlsContext` then names an instance (`CertificateSource::Provider`)
//! for its identity and for its trust bundle. Whoever reads the bootstrap (the xDS client)
//! calls [`CertificateProviders::register`] once per `file_watcher` instance; the TLS machinery
//! resolves names through this registry when it first needs the material, and watches the
//! files like any other (at the mesh's own poll interval; `refresh_interval` is not used).
//! `certificate_name` is ignored, as gRPC's `file_watcher` ignores it.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use super::{CertificateFiles, TlsError};

/// The files of one `file_watcher` certificate-provider instance; any may be absent, and
/// using an absent one is an error that names the instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProviderFiles {
    /// PEM certificate chain (`certificate_file`).
    pub certificate_file: Option<PathBuf>,
    /// PEM private key (`private_key_file`).
    pub private_key_file: Option<PathBuf>,
    /// PEM CA bundle (`ca_certificate_file`).
    pub ca_certificate_file: Option<PathBuf>,
}

/// The registry of certificate-provider instances, by name. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct CertificateProviders {
    instances: Arc<RwLock<HashMap<Arc<str>, ProviderFiles>>>,
    /// Bumped when an instance changes, so cached TLS configurations are rebuilt.
    generation: Arc<AtomicU64>,
}

// === impl ProviderFiles ===

impl ProviderFiles {
    /// The identity (certificate and key) of `instance`.
    pub(crate) fn identity(&self, instance: &str) -> Result<CertificateFiles, TlsError> {
        match (&self.certificate_file, &self.private_key_file) {
            (Some(cert), Some(key)) => Ok(CertificateFiles::identity(cert, key)),
            _ => Err(TlsError::policy(format!(
                "certificate provider instance `{instance}` has no certificate_file and private_key_file"
            ))),
        }
    }

    /// The trust bundle of `instance`.
    pub(crate) fn trust_bundle(&self, instance: &str) -> Result<CertificateFiles, TlsError> {
        self.ca_certificate_file
            .as_ref()
            .map(CertificateFiles::trust_bundle)
            .ok_or_else(|| {
                TlsError::policy(format!(
                    "certificate provider instance `{instance}` has no ca_certificate_file"
                ))
            })
    }
}

// === impl CertificateProviders ===

impl CertificateProviders {
    /// Registers (or replaces) the instance `name`; returns the files it had before. New
    /// connections use the new files; open ones keep theirs.
    pub fn register(
        &self,
        name: impl Into<Arc<str>>,
        files: ProviderFiles,
    ) -> Option<ProviderFiles> {
        let previous = self
            .instances
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.into(), files);
        self.changed();
        previous
    }

    /// Removes the instance `name`; returns its files.
    pub fn unregister(&self, name: &str) -> Option<ProviderFiles> {
        let previous = self
            .instances
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.changed();
        previous
    }

    /// The files of instance `name`.
    pub fn get(&self, name: &str) -> Result<ProviderFiles, TlsError> {
        self.instances
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| TlsError::UnknownProvider {
                instance: name.into(),
            })
    }

    /// Changes with every register and unregister.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}
