//! The demo's certificate authority: one workload certificate per service account, with its
//! SPIFFE URI SAN, as istiod would issue them, written as PEM files the meshes load (and watch)
//! like any mounted secret. The directory is removed when the demo ends.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use mesh_tower::tls::CertificateFiles;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// The trust domain of every identity.
pub(crate) const TRUST_DOMAIN: &str = "cluster.local";

/// A certificate authority and the directory of the files it wrote.
#[derive(Debug)]
pub(crate) struct Pki {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    bundle: PathBuf,
}

/// Making or writing certificates failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters.
    #[error("making a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The principal (SPIFFE id without `spiffe://`) of service account `sa` in `default`.
pub(crate) fn principal(sa: &str) -> String {
    format!("{TRUST_DOMAIN}/ns/default/sa/{sa}")
}

// === impl Pki ===

impl Pki {
    /// A new CA whose bundle is written to a fresh temporary directory.
    pub(crate) fn new() -> Result<Self, PkiError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mesh-demo-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|source| PkiError::Write {
            path: dir.clone(),
            source,
        })?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "mesh-demo root CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let bundle = dir.join("root-cert.pem");
        write(&bundle, &issuer.pem())?;
        Ok(Self {
            issuer,
            dir,
            bundle,
        })
    }

    /// The identity files of service account `sa`: chain, key and the CA bundle.
    pub(crate) fn identity(&self, sa: &str) -> Result<CertificateFiles, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let uri = format!("spiffe://{}", principal(sa));
        params.subject_alt_names = vec![SanType::URI(uri.as_str().try_into()?)];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = self.dir.join(format!("{sa}-cert-chain.pem"));
        let private_key = self.dir.join(format!("{sa}-key.pem"));
        write(&chain, &cert.pem())?;
        write(&private_key, &key.serialize_pem())?;
        Ok(CertificateFiles::identity(chain, private_key).with_trust_bundle(&self.bundle))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, pem: &str) -> Result<(), PkiError> {
    std::fs::write(path, pem).map_err(|source| PkiError::Write {
        path: path.to_owned(),
        source,
    })
}
