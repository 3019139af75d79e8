//! Certificate material from PEM files: a certificate chain with its private key, and a trust
//! bundle (CA certificates).
//!
//! Loading is all-or-nothing: every named file must read and parse, the chain must hold at
//! least one certificate, and the key must be the leaf certificate's (compared by
//! SubjectPublicKeyInfo). Anything less is an error that names the file, so a half-written
//! rotation is never served.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    RootCertStore,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
    sign::CertifiedKey,
};

use super::TlsError;

/// Where a piece of certificate material lives on disk: a certificate chain and its private
/// key (the identity presented to peers), a trust bundle (the CAs peers are verified with), or
/// both. The files are PEM, as Istio's agent, cert-manager and gRPC's `file_watcher`
/// certificate provider write them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CertificateFiles {
    identity: Option<(PathBuf, PathBuf)>,
    trust_bundle: Option<PathBuf>,
}

/// One consistent set of loaded material, replaced as a whole on rotation.
pub struct Material {
    /// The chain and key presented to peers; `None` when the files name no identity.
    pub(crate) identity: Option<Arc<CertifiedKey>>,
    /// The trust anchors; `None` when the files name no trust bundle.
    pub(crate) roots: Option<Arc<RootCertStore>>,
    /// A client-certificate verifier over `roots`, built once per load (servers use it).
    pub(crate) client_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

// === impl CertificateFiles ===

impl CertificateFiles {
    /// An identity: a PEM certificate chain (leaf first) and its PEM private key (PKCS#8,
    /// PKCS#1 or SEC1).
    pub fn identity(chain: impl Into<PathBuf>, private_key: impl Into<PathBuf>) -> Self {
        Self {
            identity: Some((chain.into(), private_key.into())),
            trust_bundle: None,
        }
    }

    /// A trust bundle alone: PEM CA certificates.
    pub fn trust_bundle(ca_certificates: impl Into<PathBuf>) -> Self {
        Self {
            identity: None,
            trust_bundle: Some(ca_certificates.into()),
        }
    }

    /// Adds a trust bundle (PEM CA certificates) to these files.
    pub fn with_trust_bundle(mut self, ca_certificates: impl Into<PathBuf>) -> Self {
        self.trust_bundle = Some(ca_certificates.into());
        self
    }

    /// The certificate chain and private key files, when these files name an identity.
    pub fn identity_files(&self) -> Option<(&Path, &Path)> {
        self.identity
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()))
    }

    /// The trust bundle file, when there is one.
    pub fn trust_bundle_file(&self) -> Option<&Path> {
        self.trust_bundle.as_deref()
    }

    /// Every file, in a fixed order (chain, key, bundle), for change detection.
    pub(crate) fn paths(&self) -> Vec<&Path> {
        let mut paths = Vec::with_capacity(3);
        if let Some((chain, key)) = &self.identity {
            paths.push(chain.as_path());
            paths.push(key.as_path());
        }
        if let Some(bundle) = &self.trust_bundle {
            paths.push(bundle.as_path());
        }
        paths
    }
}

impl fmt::Display for CertificateFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some((chain, key)) = &self.identity {
            write!(f, "chain {}, key {}", chain.display(), key.display())?;
            sep = ", ";
        }
        if let Some(bundle) = &self.trust_bundle {
            write!(f, "{sep}trust bundle {}", bundle.display())?;
        }
        Ok(())
    }
}

// === impl Material ===

impl Material {
    /// Parses material from the contents of `files`, given in [`CertificateFiles::paths`]
    /// order.
    pub(crate) fn parse(
        files: &CertificateFiles,
        contents: &[Vec<u8>],
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let mut contents = contents.iter();
        let mut next = |path: &Path| {
            contents
                .next()
                .ok_or_else(|| TlsError::read(path, "no content was read"))
        };
        let identity = match &files.identity {
            Some((chain_path, key_path)) => {
                let chain = parse_chain(chain_path, next(chain_path)?)?;
                let key = parse_key(key_path, next(key_path)?)?;
                Some(Arc::new(certified_key(
                    chain, key, chain_path, key_path, provider,
                )?))
            }
            None => None,
        };
        let (roots, client_verifier) = match &files.trust_bundle {
            Some(path) => {
                let roots = Arc::new(parse_roots(path, next(path)?)?);
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                        .build()
                        .map_err(|e| TlsError::invalid(path, e))?;
                (Some(roots), Some(verifier))
            }
            None => (None, None),
        };
        Ok(Self {
            identity,
            roots,
            client_verifier,
        })
    }

    /// The leaf certificate presented to peers, when there is an identity.
    pub fn leaf_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.identity.as_ref()?.cert.first()
    }
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("identity", &self.identity.as_ref().map(|k| k.cert.len()))
            .field("roots", &self.roots.as_ref().map(|r| r.len()))
            .finish()
    }
}

fn parse_chain(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::invalid(path, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::invalid(path, "no PEM certificate found"));
    }
    Ok(chain)
}

fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            TlsError::invalid(path, "no PEM private key found")
        }
        e => TlsError::invalid(path, format!("not a PEM private key: {e}")),
    })
}

fn parse_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert =
            cert.map_err(|e| TlsError::invalid(path, format!("not a PEM CA bundle: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::invalid(path, format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError::invalid(path, "no PEM CA certificate found"));
    }
    Ok(roots)
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    chain_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::invalid(key_path, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                certificate: chain_path.display().to_string().into(),
                private_key: key_path.display().to_string().into(),
            })
        }
        // Unknown consistency is refused too: serving a key we cannot check against its
        // certificate would fail every handshake instead of failing the reload.
        Err(e) => Err(TlsError::invalid(
            chain_path,
            format!("cannot check the key against the leaf certificate: {e}"),
        )),
    }
}
