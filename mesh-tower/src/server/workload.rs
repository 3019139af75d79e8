//! The workload a server belongs to.

use std::sync::Arc;

use mesh_core::{DEFAULT_ROOT_NAMESPACE, Labels, TrustDomains};

/// The workload a server belongs to: what authorization and peer-authentication selectors
/// match, and the `destination_*` labels of its metrics.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Workload {
    /// The workload's name (Istio's `destination_workload`, e.g. `reviews-v1`).
    pub name: Arc<str>,
    /// Its namespace.
    pub namespace: Arc<str>,
    /// Its labels (`app`, `version`, ...): selectors match them, metrics read `app` and
    /// `version`.
    pub labels: Labels,
    /// The service host it serves (`reviews.default.svc.cluster.local`).
    pub service: Arc<str>,
    /// The port it listens on (authorization's `destination.port`, peer-authentication port
    /// overrides).
    pub port: u16,
    /// The cluster it runs in (`destination_cluster`). Default is `Kubernetes`, Istio's.
    pub cluster: Arc<str>,
    /// Its own SPIFFE identity without `spiffe://` (`destination_principal`), when it has one.
    pub principal: Option<Arc<str>>,
    /// The mesh's root namespace. Default is `istio-system`.
    pub root_namespace: Arc<str>,
    /// The mesh's trust domain and its aliases (Istio's `meshConfig.trustDomain` and
    /// `trustDomainAliases`): only their identities speak for a namespace, and a policy
    /// naming one of them matches the same identity under another. Default is
    /// `cluster.local` without aliases.
    pub trust_domains: TrustDomains,
}

// === impl Workload ===

impl Workload {
    /// A workload of `namespace` serving `service` on `port`. Its name defaults to the
    /// service's first DNS label, its labels to none, the cluster to `Kubernetes`, no principal,
    /// and the root namespace to `istio-system`.
    pub fn new(namespace: impl Into<Arc<str>>, service: impl Into<Arc<str>>, port: u16) -> Self {
        let service: Arc<str> = service.into();
        let name = service.split('.').next().unwrap_or_default().into();
        Self {
            name,
            namespace: namespace.into(),
            labels: Labels::default(),
            service,
            port,
            cluster: "Kubernetes".into(),
            principal: None,
            root_namespace: DEFAULT_ROOT_NAMESPACE.into(),
            trust_domains: TrustDomains::default(),
        }
    }

    /// Sets the mesh's trust domain and its aliases
    /// (`TrustDomains::new("new-td", ["old-td"])?`).
    pub fn with_trust_domains(mut self, trust_domains: TrustDomains) -> Self {
        self.trust_domains = trust_domains;
        self
    }

    /// Sets the workload name.
    pub fn with_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the labels.
    pub fn with_labels(mut self, labels: Labels) -> Self {
        self.labels = labels;
        self
    }

    /// Sets the workload's own principal (`cluster.local/ns/<ns>/sa/<sa>`).
    pub fn with_principal(mut self, principal: impl Into<Arc<str>>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// Sets the cluster name.
    pub fn with_cluster(mut self, cluster: impl Into<Arc<str>>) -> Self {
        self.cluster = cluster.into();
        self
    }

    /// The `app` label, else Kubernetes' `app.kubernetes.io/name`, else the workload name.
    pub fn app(&self) -> &str {
        self.labels
            .get("app")
            .or_else(|| self.labels.get("app.kubernetes.io/name"))
            .unwrap_or(&self.name)
    }

    /// The `version` label, else Kubernetes' `app.kubernetes.io/version`, else `unknown`.
    pub fn version(&self) -> &str {
        self.labels
            .get("version")
            .or_else(|| self.labels.get("app.kubernetes.io/version"))
            .unwrap_or("unknown")
    }

    /// Istio's canonical service (`*_canonical_service`): the `service.istio.io/canonical-name`
    /// label, else `app.kubernetes.io/name`, else `app`, else the workload name — the order
    /// istiod and its sidecar injector use.
    pub fn canonical_service(&self) -> &str {
        [
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ]
        .into_iter()
        .find_map(|key| self.labels.get(key))
        .unwrap_or(&self.name)
    }

    /// Istio's canonical revision (`*_canonical_revision`): the
    /// `service.istio.io/canonical-revision` label, else `app.kubernetes.io/version`, else
    /// `version`, else `latest`, as istiod defaults it.
    pub fn canonical_revision(&self) -> &str {
        [
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ]
        .into_iter()
        .find_map(|key| self.labels.get(key))
        .unwrap_or("latest")
    }
}
