//! A small certificate authority for examples, demos and benchmarks: one workload certificate
//! per service account, with its SPIFFE URI SAN, as istiod would issue them, written as PEM
//! files the meshes load (and watch) like any mounted secret.
//!
//! The files are laid out as istio-agent mounts them, so another process can find an identity
//! from the directory alone ([`issued_files`]):
//!
//! ```text
//! <dir>/root-cert.pem                       the CA bundle
//! <dir>/<namespace>/<sa>/cert-chain.pem     the workload certificate
//! <dir>/<namespace>/<sa>/key.pem            its private key
//! ```

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use mesh_test_support::pki::{Ca, Validity};
use mesh_tower::tls::CertificateFiles;

/// The trust domain of every identity.
pub const TRUST_DOMAIN: &str = "cluster.local";

const BUNDLE_FILE: &str = "root-cert.pem";
const CHAIN_FILE: &str = "cert-chain.pem";
const KEY_FILE: &str = "key.pem";

/// A certificate authority and the directory of the files it writes.
#[derive(Debug)]
pub struct Pki {
    ca: Ca,
    dir: PathBuf,
    bundle: PathBuf,
    /// Whether the directory is removed on drop (it is for [`Pki::temporary`]).
    remove_on_drop: bool,
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
    /// A namespace or service account is not a Kubernetes name (a DNS-1123 label).
    #[error("`{0}` is not a valid namespace or service account name")]
    Name(String),
}

/// The principal (SPIFFE id without `spiffe://`) of service account `sa` in `namespace`.
pub fn principal(namespace: &str, sa: &str) -> String {
    format!("{TRUST_DOMAIN}/ns/{namespace}/sa/{sa}")
}

/// The files [`Pki::identity`] wrote for service account `sa` of `namespace` into `dir`, for
/// a process that did not issue them; whether they exist is checked when they are loaded.
pub fn issued_files(dir: &Path, namespace: &str, sa: &str) -> Result<CertificateFiles, PkiError> {
    Ok(files(&own_dir(dir, namespace, sa)?, &dir.join(BUNDLE_FILE)))
}

// === impl Pki ===

impl Pki {
    /// A new CA writing into a fresh temporary directory, removed when the CA is dropped.
    pub fn temporary() -> Result<Self, PkiError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mesh-pki-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut pki = Self::in_dir(dir)?;
        pki.remove_on_drop = true;
        Ok(pki)
    }

    /// A new CA writing into `dir` (created if missing), which outlives it: other processes
    /// load the files later. Its bundle replaces any bundle already there.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Result<Self, PkiError> {
        let dir = dir.into();
        create_dir(&dir)?;
        let ca = Ca::try_new("mesh-examples root CA")?;
        let bundle = dir.join(BUNDLE_FILE);
        write(&bundle, &ca.pem())?;
        Ok(Self {
            ca,
            dir,
            bundle,
            remove_on_drop: false,
        })
    }

    /// The directory the files are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issues a certificate to service account `sa` of `namespace` (SAN
    /// `spiffe://<`[`principal`]`>`, server and client auth) and writes it with its key; returns
    /// the identity files: chain, key and the CA bundle. Issuing again replaces the files.
    pub fn identity(&self, namespace: &str, sa: &str) -> Result<CertificateFiles, PkiError> {
        let own = own_dir(&self.dir, namespace, sa)?;
        let uri = format!("spiffe://{}", principal(namespace, sa));
        let leaf = self.ca.try_leaf(&[&uri], &[], Validity::Now)?;
        create_dir(&own)?;
        write(&own.join(CHAIN_FILE), &leaf.cert_pem)?;
        write(&own.join(KEY_FILE), &leaf.key_pem)?;
        Ok(files(&own, &self.bundle))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The directory of one identity's files; refuses names that are not Kubernetes names.
fn own_dir(dir: &Path, namespace: &str, sa: &str) -> Result<PathBuf, PkiError> {
    for name in [namespace, sa] {
        if !is_dns_label(name) {
            return Err(PkiError::Name(name.to_owned()));
        }
    }
    Ok(dir.join(namespace).join(sa))
}

fn files(own: &Path, bundle: &Path) -> CertificateFiles {
    CertificateFiles::identity(own.join(CHAIN_FILE), own.join(KEY_FILE)).with_trust_bundle(bundle)
}

/// Kubernetes' rule for namespaces and service accounts: 1 to 63 of `a-z`, `0-9` and `-`,
/// starting and ending alphanumeric. It also keeps the names from leaving the directory.
fn is_dns_label(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            bytes.len() <= 63
                && alnum(first)
                && alnum(last)
                && bytes.iter().all(|&b| alnum(b) || b == b'-')
        }
        _ => false,
    }
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })
}

fn write(path: &Path, pem: &str) -> Result<(), PkiError> {
    std::fs::write(path, pem).map_err(|source| PkiError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_found_again_from_the_directory_and_kept_after_drop() {
        let dir = std::env::temp_dir().join(format!("mesh-pki-test-{}", std::process::id()));
        let issued = Pki::in_dir(&dir)
            .and_then(|pki| pki.identity("bench", "echo"))
            .unwrap();
        let found = issued_files(&dir, "bench", "echo").unwrap();
        assert_eq!(found, issued);
        let (chain, key) = found.identity_files().unwrap();
        let pem = std::fs::read_to_string(chain).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        assert!(key.exists());
        assert!(found.trust_bundle_file().unwrap().exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_temporary_ca_removes_its_directory() {
        let pki = Pki::temporary().unwrap();
        let dir = pki.dir().to_owned();
        pki.identity("default", "reviews").unwrap();
        assert!(dir.join("default/reviews/key.pem").exists());
        drop(pki);
        assert!(!dir.exists());
    }

    #[test]
    fn names_that_are_not_kubernetes_names_are_refused() {
        let dir = Path::new("/nonexistent");
        for bad in ["", "..", "a/b", "Echo", "-echo", "echo-", &"a".repeat(64)] {
            assert!(
                matches!(issued_files(dir, "bench", bad), Err(PkiError::Name(_))),
                "{bad:?}"
            );
            assert!(
                matches!(issued_files(dir, bad, "echo"), Err(PkiError::Name(_))),
                "{bad:?}"
            );
        }
        assert!(issued_files(dir, "istio-system", "bookinfo-ratings-v1").is_ok());
    }
}
