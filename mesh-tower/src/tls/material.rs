//! Certificate material from PEM files: a certificate chain with its private key, and a trust
//! bundle (CA certificates).
//!
//! Loading is all-or-nothing: every named file must read and parse, the chain must hold at
//! least one certificate, and the key must be the leaf certificate's (compared by
//! SubjectPublicKeyInfo). Anything less is an error that names the file, so a half-written
//! rotation is never served.
//!
//! A rotation must also be able to serve: [`Material::check_rotation`] refuses a leaf that has
//! expired, is not valid yet (beyond [`DEFAULT_CLOCK_SKEW`]), or does not chain to the trust
//! bundle of the same files, since installing it would fail every later handshake.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustls::{
    RootCertStore,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject},
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
    sign::CertifiedKey,
};

use x509_parser::{certificate::X509Certificate, prelude::FromDer};

use super::TlsError;

/// How far in the future a rotated leaf's `notBefore` may be and still be installed: the
/// issuing CA's clock may run ahead of ours. Five minutes, as istio-agent and Envoy's SDS
/// consumers tolerate; peers with a clock as far behind fail the handshake until it passes,
/// which is no worse than keeping the certificate the rotation replaces.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

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

    /// Checks that this material, about to replace the current one, can serve at `now`: the
    /// leaf is within its validity window (`notBefore` up to `skew` ahead of `now` allowed;
    /// expired is expired) and, when the same files hold a trust bundle, the chain leads to
    /// it. Key and certificate were already matched by [`parse`](Self::parse). The error
    /// names the chain file and says what is wrong.
    pub(crate) fn check_rotation(
        &self,
        files: &CertificateFiles,
        now: SystemTime,
        skew: Duration,
    ) -> Result<(), TlsError> {
        let (Some(identity), Some((chain_path, _))) = (&self.identity, files.identity_files())
        else {
            return Ok(());
        };
        let Some((leaf, intermediates)) = identity.cert.split_first() else {
            return Ok(());
        };
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| {
            TlsError::invalid(
                chain_path,
                format!("the leaf certificate does not parse: {e}"),
            )
        })?;
        let validity = cert.validity();
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let window = Window {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        };
        window.check(now_secs, skew).map_err(|why| {
            TlsError::invalid(
                chain_path,
                format!(
                    "the rotated leaf certificate {why} (valid from {} to {})",
                    validity.not_before, validity.not_after
                ),
            )
        })?;
        if let (Some(verifier), Some(bundle)) = (&self.client_verifier, files.trust_bundle_file()) {
            // Verified at a moment inside the window, so a `notBefore` within the skew does
            // not fail the chain check the window check let through.
            let at = u64::try_from(now_secs.max(window.not_before)).unwrap_or(0);
            verifier
                .verify_client_cert(
                    leaf,
                    intermediates,
                    UnixTime::since_unix_epoch(Duration::from_secs(at)),
                )
                .map_err(|e| {
                    TlsError::invalid(
                        chain_path,
                        format!(
                            "the rotated leaf certificate does not verify against the trust bundle {}: {e}",
                            bundle.display()
                        ),
                    )
                })?;
        }
        Ok(())
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

/// A certificate's validity window, in seconds since the Unix epoch.
#[derive(Clone, Copy, Debug)]
struct Window {
    not_before: i64,
    not_after: i64,
}

impl Window {
    /// Whether the window holds `now`, allowing `notBefore` to be up to `skew` ahead; `Err`
    /// says why not.
    fn check(self, now: i64, skew: Duration) -> Result<(), &'static str> {
        let skew = i64::try_from(skew.as_secs()).unwrap_or(i64::MAX);
        if self.not_after <= now {
            return Err("has expired");
        }
        if self.not_before > now.saturating_add(skew) {
            return Err("is not valid yet");
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_allows_a_skewed_not_before_but_no_expiry() {
        let window = Window {
            not_before: 1_000,
            not_after: 2_000,
        };
        let skew = Duration::from_secs(300);
        assert_eq!(window.check(1_500, skew), Ok(()));
        assert_eq!(window.check(700, skew), Ok(()), "notBefore 300 s ahead");
        assert_eq!(window.check(699, skew), Err("is not valid yet"));
        assert_eq!(window.check(1_999, skew), Ok(()));
        assert_eq!(window.check(2_000, skew), Err("has expired"));
        assert_eq!(window.check(1_000, Duration::MAX), Ok(()));
    }
}
