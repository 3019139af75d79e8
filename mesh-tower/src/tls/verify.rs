//! Peer-certificate verifiers with the mesh's semantics, reading the trust bundle of the
//! current material on every handshake (so a rotated bundle applies without a new config).
//!
//! - [`MeshServerVerifier`] (clients): the chain must lead to the trust bundle and be valid
//!   now (expired and not-yet-valid certificates fail); then the *identity* is checked: against
//!   the cluster's SAN matchers when it has any (Istio's `subjectAltNames`, Envoy's
//!   `match_typed_subject_alt_names`, typically the server's SPIFFE ID) instead of the host
//!   name, else against the name the client dialled (SIMPLE/MUTUAL from Istio YAML: the SNI, else
//!   the endpoint's host name or IP, like Istio's `VERIFY_CERTIFICATE_AT_CLIENT`), else, for
//!   ISTIO_MUTUAL and for xDS certificate-provider trust without matchers, not at all: workload
//!   certificates carry only a SPIFFE ID, and any workload the trust bundle validates is then
//!   acceptable, as with Envoy and gRPC's xDS credentials.
//! - [`MeshClientVerifier`] (servers): the client's chain must lead to the trust bundle; a
//!   client certificate is required (STRICT) or optional (the TLS half of PERMISSIVE).

use std::sync::Arc;

use mesh_core::SanMatcher;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme,
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor, verify_server_name,
    },
    crypto::{
        CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
    },
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::{
        ParsedCertificate,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

use super::{CertificateWatcher, identity::SubjectAltNames};

/// How a server's identity is checked once its chain is trusted.
#[derive(Clone, Debug)]
pub(crate) enum IdentityCheck {
    /// Some SAN must match one of these.
    San(Arc<[SanMatcher]>),
    /// The certificate must be valid for the name the client dialled.
    ServerName,
    /// Any certificate the trust bundle validates.
    TrustOnly,
}

/// Verifies a server's certificate chain against the trust bundle of a watcher's current
/// material, then its identity (see the module docs).
#[derive(Debug)]
pub struct MeshServerVerifier {
    trust: CertificateWatcher,
    identity: IdentityCheck,
    provider: Arc<CryptoProvider>,
}

/// Verifies a client's certificate chain against the trust bundle of a watcher's current
/// material.
#[derive(Debug)]
pub struct MeshClientVerifier {
    trust: CertificateWatcher,
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

/// The server certificate's SANs match none of the cluster's matchers.
#[derive(Debug, thiserror::Error)]
#[error("the server certificate's SANs ({sans}) match none of the cluster's subject_alt_names")]
struct SanMismatch {
    sans: String,
}

// === impl MeshServerVerifier ===

impl MeshServerVerifier {
    pub(crate) fn new(trust: CertificateWatcher, identity: IdentityCheck) -> Self {
        let provider = trust.provider().clone();
        Self {
            trust,
            identity,
            provider,
        }
    }
}

impl MeshServerVerifier {
    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        self.trust.with_current(|material| {
            let roots = material.roots.as_ref().ok_or_else(|| {
                Error::General("the client's TLS material has no trust bundle".into())
            })?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )
        })?;
        match &self.identity {
            IdentityCheck::San(matchers) => {
                let sans = SubjectAltNames::of(end_entity).map_err(|e| {
                    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                        std::io::Error::other(e),
                    ))))
                })?;
                if !sans.satisfies(matchers) {
                    return Err(Error::InvalidCertificate(CertificateError::Other(
                        OtherError(Arc::new(SanMismatch {
                            sans: sans.to_string(),
                        })),
                    )));
                }
            }
            IdentityCheck::ServerName => verify_server_name(&cert, server_name)?,
            IdentityCheck::TrustOnly => {}
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, self.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}

// === impl MeshClientVerifier ===

impl MeshClientVerifier {
    /// A verifier over `trust`'s bundle; `mandatory` refuses clients without a certificate.
    pub(crate) fn new(trust: CertificateWatcher, mandatory: bool) -> Self {
        let provider = trust.provider().clone();
        Self {
            trust,
            mandatory,
            provider,
        }
    }
}

impl MeshClientVerifier {
    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No CA-name hints: they are optional (RFC 8446 §4.2.4), mesh clients hold one
    /// certificate anyway, and the bundle they would name changes on rotation.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.trust.with_current(|material| {
            let verifier = material.client_verifier.as_ref().ok_or_else(|| {
                Error::General("the server's TLS material has no trust bundle".into())
            })?;
            verifier.verify_client_cert(end_entity, intermediates, now)
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, self.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}
