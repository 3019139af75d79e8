//! Certificate resolvers that present the current material of a watcher: the configuration is
//! built once, the certificate is picked per handshake.

use std::sync::Arc;

use rustls::{
    SignatureScheme,
    client::ResolvesClientCert,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::CertificateWatcher;

/// Presents the identity of a watcher's current material, client or server side.
#[derive(Debug)]
pub(crate) struct CurrentCertificate(pub(crate) CertificateWatcher);

// === impl CurrentCertificate ===

impl CurrentCertificate {
    fn key(&self) -> Option<Arc<CertifiedKey>> {
        self.0.with_current(|m| m.identity.clone())
    }
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key()
    }
}

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}
