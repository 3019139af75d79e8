//! The mesh's trust domain and its aliases: which SPIFFE identities speak for this mesh.
//!
//! Istio names a workload `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`. Its
//! authorization treats the mesh's trust domain (`meshConfig.trustDomain`, default
//! `cluster.local`) and the aliases of a trust-domain migration
//! (`meshConfig.trustDomainAliases`) as one: a policy naming `old-td/ns/foo/sa/bar` also
//! matches `new-td/ns/foo/sa/bar` when both are in the set. A namespace is only vouched for
//! by an identity of this set: `spiffe://evil.example.org/ns/prod/...` is not a caller from
//! namespace `prod` of this mesh, even when a CA of the trust bundle signed it (a shared or
//! federated root).

use std::sync::Arc;

use crate::Error;

/// Istio's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// The mesh's trust domain and the aliases that count as it. Default is `cluster.local`
/// without aliases.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrustDomains {
    /// The mesh's own trust domain first, then the aliases.
    domains: Arc<[Arc<str>]>,
}

// === impl TrustDomains ===

impl TrustDomains {
    /// `domain` with `aliases` (Istio's `trustDomain` and `trustDomainAliases`). A trust
    /// domain is a non-empty name without `/`.
    pub fn new(
        domain: impl Into<Arc<str>>,
        aliases: impl IntoIterator<Item = impl Into<Arc<str>>>,
    ) -> Result<Self, Error> {
        let domains: Arc<[Arc<str>]> = std::iter::once(domain.into())
            .chain(aliases.into_iter().map(Into::into))
            .collect();
        for domain in domains.iter() {
            if domain.is_empty() || domain.contains('/') {
                return Err(Error::invalid(format!(
                    "trust domain `{domain}`: must be a non-empty name without `/`"
                )));
            }
        }
        Ok(Self { domains })
    }

    /// The mesh's own trust domain.
    pub fn domain(&self) -> &str {
        self.domains.first().map_or(DEFAULT_TRUST_DOMAIN, |d| d)
    }

    /// The aliases.
    pub fn aliases(&self) -> &[Arc<str>] {
        self.domains.get(1..).unwrap_or_default()
    }

    /// Whether `domain` is the mesh's trust domain or an alias.
    pub fn contains(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| **d == *domain)
    }

    /// Every trust domain of the set, the mesh's own first.
    pub(crate) fn all(&self) -> &[Arc<str>] {
        &self.domains
    }
}

impl Default for TrustDomains {
    fn default() -> Self {
        Self {
            domains: Arc::from([Arc::from(DEFAULT_TRUST_DOMAIN)]),
        }
    }
}
