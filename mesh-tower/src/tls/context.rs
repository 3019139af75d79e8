//! The mesh's TLS context: the workload identity, the certificate-provider registry, the
//! watchers of every file set in use, and the client configurations built from them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use mesh_core::{CertificateSource, TlsMode, UpstreamTls};
use rustls::{ClientConfig, client::Resumption, crypto::CryptoProvider};

use super::{
    CertificateFiles, CertificateProviders, CertificateWatcher, ServerTls, TlsError,
    resolve::CurrentCertificate,
    verify::{IdentityCheck, MeshServerVerifier},
    watch::DEFAULT_POLL_INTERVAL,
};
use mesh_core::MtlsMode;

/// ALPN for gRPC over TLS.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// The TLS side of a [`Mesh`](crate::Mesh): cheap to clone (shared).
///
/// Client configurations are built on first use per distinct [`UpstreamTls`] and cached: a
/// certificate rotation reaches them through their watchers, never by a rebuild. Setting the
/// workload identity or changing a provider instance drops the cache, so connections made from
/// then on use the new files; open connections keep what they negotiated.
#[derive(Clone, Debug)]
pub struct MeshTls {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    provider: Arc<CryptoProvider>,
    poll_interval: Duration,
    workload: RwLock<Option<CertificateWatcher>>,
    providers: CertificateProviders,
    watchers: Mutex<HashMap<CertificateFiles, CertificateWatcher>>,
    clients: Mutex<ClientCache>,
}

#[derive(Debug, Default)]
struct ClientCache {
    /// The provider generation the entries were built with.
    generation: u64,
    configs: HashMap<UpstreamTls, Arc<ClientConfig>>,
}

// === impl MeshTls ===

impl Default for MeshTls {
    fn default() -> Self {
        Self::new(DEFAULT_POLL_INTERVAL)
    }
}

impl MeshTls {
    /// A context whose certificate files are polled every `poll_interval`.
    pub fn new(poll_interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                provider: super::crypto_provider(),
                poll_interval,
                workload: RwLock::new(None),
                providers: CertificateProviders::default(),
                watchers: Mutex::new(HashMap::new()),
                clients: Mutex::new(ClientCache::default()),
            }),
        }
    }

    /// Sets the workload's own identity: its certificate chain and key, and the mesh trust
    /// bundle (`files` should name both). Used by ISTIO_MUTUAL clients, by SIMPLE/MUTUAL
    /// clients without their own trust bundle, and by mTLS servers. Loaded now: on error the
    /// previous identity (if any) stays. Later rotations of the files are picked up by polling.
    pub fn set_workload_identity(&self, files: CertificateFiles) -> Result<(), TlsError> {
        let watcher = self.watcher(files)?;
        *self
            .inner
            .workload
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(watcher);
        self.lock_clients().configs.clear();
        Ok(())
    }

    /// The workload identity's watcher (status, reload), when one is set.
    pub fn workload_identity(&self) -> Option<CertificateWatcher> {
        self.inner
            .workload
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The certificate-provider instances that `CertificateSource::Provider` names resolve
    /// through; the xDS bootstrap fills it.
    pub fn certificate_providers(&self) -> &CertificateProviders {
        &self.inner.providers
    }

    /// The server side for `mode`, presenting the workload identity and verifying clients
    /// against its trust bundle (see [`ServerTls`]).
    pub fn server(&self, mode: MtlsMode) -> Result<ServerTls, TlsError> {
        match self.workload_identity() {
            Some(workload) => ServerTls::new(mode, workload),
            None if mode == MtlsMode::Disable => Ok(ServerTls::plaintext()),
            None => Err(TlsError::NoWorkloadIdentity),
        }
    }

    /// The client configuration for `policy` (not `Disable`), built on first use.
    pub(crate) fn client_config(
        &self,
        policy: &UpstreamTls,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let generation = self.inner.providers.generation();
        {
            let mut cache = self.lock_clients();
            if cache.generation != generation {
                cache.configs.clear();
                cache.generation = generation;
            }
            if let Some(config) = cache.configs.get(policy) {
                return Ok(config.clone());
            }
        }
        let config = Arc::new(self.build_client_config(policy)?);
        self.lock_clients()
            .configs
            .insert(policy.clone(), config.clone());
        Ok(config)
    }

    fn build_client_config(&self, policy: &UpstreamTls) -> Result<ClientConfig, TlsError> {
        let workload = || self.workload_identity().ok_or(TlsError::NoWorkloadIdentity);
        let (identity, trust) = match policy.mode {
            TlsMode::Disable => {
                return Err(TlsError::policy("mode DISABLE has no TLS configuration"));
            }
            TlsMode::Simple => {
                let identity = match &policy.client_certificate {
                    Some(source) => Some(self.identity_source(source)?),
                    None => None,
                };
                (identity, self.trust_or_workload(policy)?)
            }
            TlsMode::Mutual => {
                let source = policy
                    .client_certificate
                    .as_ref()
                    .ok_or_else(|| TlsError::policy("mode MUTUAL without a client certificate"))?;
                (
                    Some(self.identity_source(source)?),
                    self.trust_or_workload(policy)?,
                )
            }
            TlsMode::IstioMutual => {
                let workload = workload()?;
                (Some(workload.clone()), workload)
            }
        };
        if trust.current().roots.is_none() {
            return Err(TlsError::NoTrustBundle {
                what: trust.files().to_string().into(),
            });
        }
        let from_xds = matches!(
            policy.trust_bundle,
            Some(CertificateSource::Provider { .. })
        );
        let check = if !policy.san_matchers.is_empty() {
            IdentityCheck::San(policy.san_matchers.clone())
        } else if policy.mode == TlsMode::IstioMutual || from_xds {
            // Mesh certificates carry a SPIFFE ID, not host names; gRPC's xDS credentials
            // likewise accept any certificate the provider's CA validates when no SAN matcher
            // is given.
            IdentityCheck::TrustOnly
        } else {
            IdentityCheck::ServerName
        };
        let builder = ClientConfig::builder_with_provider(self.inner.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::policy)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(MeshServerVerifier::new(trust, check)));
        let mut config = match identity {
            Some(identity) => {
                if identity.current().identity.is_none() {
                    return Err(TlsError::NoCertificate {
                        what: identity.files().to_string().into(),
                    });
                }
                builder.with_client_cert_resolver(Arc::new(CurrentCertificate(identity)))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        // Every connection does a full handshake, so a rotated certificate or trust bundle
        // applies to every new connection (a resumed session would carry the old identity).
        // Connections are long-lived (one per endpoint): resumption would save little.
        config.resumption = Resumption::disabled();
        Ok(config)
    }

    /// The policy's own trust bundle, else the workload's (the mesh trust bundle).
    fn trust_or_workload(&self, policy: &UpstreamTls) -> Result<CertificateWatcher, TlsError> {
        match &policy.trust_bundle {
            Some(source) => self.trust_source(source),
            None => self
                .workload_identity()
                .ok_or_else(|| TlsError::NoTrustBundle {
                    what: "the cluster's TLS settings (no caCertificates, no workload identity)"
                        .into(),
                }),
        }
    }

    fn identity_source(&self, source: &CertificateSource) -> Result<CertificateWatcher, TlsError> {
        let files = match source {
            CertificateSource::Files {
                certificate,
                private_key: Some(key),
            } => CertificateFiles::identity(certificate, key),
            CertificateSource::Files {
                certificate,
                private_key: None,
            } => {
                return Err(TlsError::policy(format!(
                    "client certificate {certificate} has no private key"
                )));
            }
            CertificateSource::Provider { instance, .. } => {
                self.inner.providers.get(instance)?.identity(instance)?
            }
        };
        self.watcher(files)
    }

    fn trust_source(&self, source: &CertificateSource) -> Result<CertificateWatcher, TlsError> {
        let files = match source {
            CertificateSource::Files { certificate, .. } => {
                CertificateFiles::trust_bundle(certificate)
            }
            CertificateSource::Provider { instance, .. } => {
                self.inner.providers.get(instance)?.trust_bundle(instance)?
            }
        };
        self.watcher(files)
    }

    /// The one watcher of `files`, loading and watching them on first use.
    fn watcher(&self, files: CertificateFiles) -> Result<CertificateWatcher, TlsError> {
        let mut watchers = self
            .inner
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(w) = watchers.get(&files) {
            return Ok(w.clone());
        }
        let watcher =
            CertificateWatcher::load_with_provider(files.clone(), self.inner.provider.clone())?;
        watcher.watch(self.inner.poll_interval);
        watchers.insert(files, watcher.clone());
        Ok(watcher)
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, ClientCache> {
        self.inner.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}
