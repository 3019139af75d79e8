//! rcgen-made certificate authorities and workload certificates with SPIFFE URI SANs, written
//! to PEM files in a per-test directory.
//!
//! The one place the repository makes certificates: the examples' `Pki` (the demo's file
//! layout) issues through [`Ca::try_new`] and [`Ca::try_leaf`] too.

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
pub const TRUST_DOMAIN: &str = "cluster.local";

/// The SPIFFE ID of service account `sa` in namespace `default`.
pub fn spiffe(sa: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{sa}")
}

/// A certificate authority.
#[derive(Debug)]
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// When a leaf is valid.
#[derive(Clone, Copy, Debug)]
pub enum Validity {
    /// Valid today (rcgen's default window).
    Now,
    /// Valid in 2000 only.
    Expired,
    /// Valid from 2090.
    NotYetValid,
}

impl Ca {
    /// A self-signed CA with common name `name`; panics if rcgen refuses.
    pub fn new(name: &str) -> Self {
        Self::try_new(name).unwrap()
    }

    /// A self-signed CA with common name `name`.
    pub fn try_new(name: &str) -> Result<Self, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    /// The CA certificate (the trust bundle).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A workload certificate for service account `sa` (SPIFFE URI SAN), usable by clients and
    /// servers, as istiod issues them.
    pub fn workload(&self, sa: &str) -> Leaf {
        self.leaf(&[&spiffe(sa)], &[], Validity::Now)
    }

    /// A leaf with URI SANs `uris` and DNS SANs `dns`, usable by clients and servers; panics if
    /// rcgen refuses.
    pub fn leaf(&self, uris: &[&str], dns: &[&str], validity: Validity) -> Leaf {
        self.try_leaf(uris, dns, validity).unwrap()
    }

    /// A leaf with URI SANs `uris` and DNS SANs `dns`, usable by clients and servers.
    pub fn try_leaf(
        &self,
        uris: &[&str],
        dns: &[&str],
        validity: Validity,
    ) -> Result<Leaf, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = uris
            .iter()
            .map(|u| Ok(SanType::URI((*u).try_into()?)))
            .chain(dns.iter().map(|d| Ok(SanType::DnsName((*d).try_into()?))))
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        match validity {
            Validity::Now => {}
            Validity::Expired => {
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            }
            Validity::NotYetValid => {
                params.not_before = rcgen::date_time_ymd(2090, 1, 1);
                params.not_after = rcgen::date_time_ymd(2091, 1, 1);
            }
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A directory of PEM files, removed when dropped.
#[derive(Debug)]
pub struct Dir {
    path: PathBuf,
}

impl Default for Dir {
    fn default() -> Self {
        Self::new()
    }
}

impl Dir {
    /// A fresh directory under the system's temporary directory.
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "mesh-mtls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }

    /// The path of file `name` in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes file `name`; returns its path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Writes `leaf` and `ca` as `<name>.crt`, `<name>.key` and `<name>-ca.crt`; the files name
    /// an identity with its trust bundle.
    pub fn identity(&self, name: &str, leaf: &Leaf, ca: &Ca) -> CertificateFiles {
        let chain = self.write(&format!("{name}.crt"), &leaf.cert_pem);
        let key = self.write(&format!("{name}.key"), &leaf.key_pem);
        let bundle = self.write(&format!("{name}-ca.crt"), &ca.pem());
        CertificateFiles::identity(chain, key).with_trust_bundle(bundle)
    }

    /// Rewrites the chain and key of `name` (a rotation).
    pub fn rotate(&self, name: &str, leaf: &Leaf) {
        self.write(&format!("{name}.crt"), &leaf.cert_pem);
        self.write(&format!("{name}.key"), &leaf.key_pem);
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The path as YAML-safe text.
pub fn yaml_path(path: &Path) -> String {
    path.display().to_string()
}
