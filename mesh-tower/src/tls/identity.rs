//! What a certificate says about its holder: its subject alternative names, the SPIFFE ID among
//! them, and whether they satisfy a cluster's SAN matchers.

use std::{net::IpAddr, sync::Arc};

use mesh_core::{SanKind, SanMatcher};
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

use crate::peer::PeerIdentity;

/// The `spiffe://` scheme of a SPIFFE ID.
const SPIFFE_SCHEME: &str = "spiffe://";

/// A certificate's subject alternative names, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SubjectAltNames {
    pub(crate) dns: Vec<String>,
    pub(crate) uris: Vec<String>,
    pub(crate) emails: Vec<String>,
    pub(crate) ips: Vec<IpAddr>,
}

// === impl SubjectAltNames ===

impl SubjectAltNames {
    /// The SANs of a DER certificate; an error says why it does not parse.
    pub(crate) fn of(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("the certificate does not parse: {e}"))?;
        let mut sans = Self::default();
        let ext = cert
            .subject_alternative_name()
            .map_err(|e| format!("invalid subjectAltName extension: {e}"))?;
        for name in ext.iter().flat_map(|ext| ext.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(d) => sans.dns.push((*d).to_string()),
                GeneralName::URI(u) => sans.uris.push((*u).to_string()),
                GeneralName::RFC822Name(e) => sans.emails.push((*e).to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        sans.ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        sans.ips.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
        Ok(sans)
    }

    /// Whether any matcher matches a SAN of its kind (Envoy's `match_typed_subject_alt_names`:
    /// any one suffices).
    pub(crate) fn satisfies(&self, matchers: &[SanMatcher]) -> bool {
        matchers.iter().any(|m| match m.kind {
            SanKind::Dns => self.dns.iter().any(|v| m.matcher.matches(v)),
            SanKind::Uri => self.uris.iter().any(|v| m.matcher.matches(v)),
            SanKind::Email => self.emails.iter().any(|v| m.matcher.matches(v)),
            SanKind::IpAddress => self.ips.iter().any(|v| m.matcher.matches(&v.to_string())),
        })
    }

    /// The identity a peer proved: its SPIFFE IDs (`spiffe://` URI SANs, scheme stripped;
    /// the first is Istio's *principal*) and its DNS names.
    pub(crate) fn into_identity(self) -> PeerIdentity {
        let principals: Arc<[Arc<str>]> = self
            .uris
            .iter()
            .filter_map(|u| u.strip_prefix(SPIFFE_SCHEME))
            .map(Arc::<str>::from)
            .collect();
        PeerIdentity {
            principal: principals.first().cloned(),
            principals,
            dns_names: self.dns.into_iter().map(Arc::<str>::from).collect(),
        }
    }
}

impl std::fmt::Display for SubjectAltNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self
            .uris
            .iter()
            .map(|u| format!("URI:{u}"))
            .chain(self.dns.iter().map(|d| format!("DNS:{d}")))
            .chain(self.emails.iter().map(|e| format!("email:{e}")))
            .chain(self.ips.iter().map(|i| format!("IP:{i}")))
            .collect();
        if all.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&all.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::{
        SanKind, SanMatcher,
        matcher::{StringMatch, StringMatcher},
    };
    use rcgen::{CertificateParams, KeyPair, SanType};

    use super::SubjectAltNames;

    fn sans() -> SubjectAltNames {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![
            SanType::URI(
                "spiffe://cluster.local/ns/prod/sa/reviews"
                    .try_into()
                    .unwrap(),
            ),
            SanType::DnsName("reviews.prod.svc".try_into().unwrap()),
            SanType::Rfc822Name("ops@example.com".try_into().unwrap()),
            SanType::IpAddress("10.1.2.3".parse().unwrap()),
            SanType::IpAddress("fd00::1".parse().unwrap()),
        ];
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        SubjectAltNames::of(cert.der()).unwrap()
    }

    fn matcher(kind: SanKind, matcher: StringMatcher) -> SanMatcher {
        SanMatcher { kind, matcher }
    }

    #[test]
    fn each_kind_matches_only_its_own_sans() {
        let sans = sans();
        let exact = StringMatcher::exact;
        for (kind, value) in [
            (SanKind::Uri, "spiffe://cluster.local/ns/prod/sa/reviews"),
            (SanKind::Dns, "reviews.prod.svc"),
            (SanKind::Email, "ops@example.com"),
            (SanKind::IpAddress, "10.1.2.3"),
            (SanKind::IpAddress, "fd00::1"),
        ] {
            assert!(sans.satisfies(&[matcher(kind, exact(value))]), "{value}");
        }
        // The right value under the wrong kind does not match.
        assert!(!sans.satisfies(&[matcher(SanKind::Dns, exact("ops@example.com"))]));
        assert!(!sans.satisfies(&[matcher(
            SanKind::Uri,
            exact("spiffe://cluster.local/ns/prod/sa/ratings")
        )]));
        // Any one matcher suffices; none matches nothing.
        assert!(sans.satisfies(&[
            matcher(SanKind::Dns, exact("nope")),
            matcher(
                SanKind::Uri,
                StringMatcher::new(
                    StringMatch::Prefix("spiffe://cluster.local/ns/prod/".into()),
                    false
                )
            ),
        ]));
        assert!(!sans.satisfies(&[]));
    }

    #[test]
    fn the_principal_is_the_spiffe_id_without_its_scheme() {
        let identity = sans().into_identity();
        assert_eq!(
            identity.principal.as_deref(),
            Some("cluster.local/ns/prod/sa/reviews")
        );
        assert_eq!(&*identity.dns_names, &["reviews.prod.svc".into()]);
        assert_eq!(
            sans().to_string(),
            "URI:spiffe://cluster.local/ns/prod/sa/reviews, DNS:reviews.prod.svc, email:ops@example.com, IP:10.1.2.3, IP:fd00::1"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(SubjectAltNames::of(b"not a certificate").is_err());
        assert!(SubjectAltNames::of(&[]).is_err());
    }
}
