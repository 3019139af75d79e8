//! The local workload: who this process is, for policy scoped by the caller.
//!
//! A sidecar learns its workload's namespace and labels from istio-agent's bootstrap (node
//! metadata `NAMESPACE` and `LABELS`) and istiod evaluates `sourceLabels` / `sourceNamespace`
//! against them when it generates that proxy's routes. A proxyless mesh reads Istio YAML
//! itself, so it evaluates those conditions at request time against this description of its
//! own workload ([`RequestHead::source`](crate::route::RequestHead::source)).

use std::{net::IpAddr, sync::Arc};

use crate::Labels;

/// The namespace, labels and address of the workload this process runs as.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Workload {
    /// Its Kubernetes namespace.
    pub namespace: Arc<str>,
    /// Its pod labels.
    pub labels: Labels,
    /// Its IP address: the source address a sidecar would see for its application, hashed
    /// by `consistentHash.useSourceIp`; `None` when unknown.
    pub address: Option<IpAddr>,
}

/// A condition on the calling workload (Istio's `sourceNamespace` and `sourceLabels`); every
/// part that is set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceMatcher {
    /// The caller's namespace; `None` is any.
    pub namespace: Option<Arc<str>>,
    /// Labels the caller must carry, each with this value; empty is any.
    pub labels: Labels,
}

// === impl Workload ===

impl Workload {
    /// A workload in `namespace` with `labels` and no known address.
    pub fn new(namespace: impl Into<Arc<str>>, labels: Labels) -> Self {
        Self {
            namespace: namespace.into(),
            labels,
            address: None,
        }
    }
}

// === impl SourceMatcher ===

impl SourceMatcher {
    /// Whether `source` satisfies the condition. An unknown caller (`None`) satisfies none:
    /// a route meant for some callers must not widen to every caller.
    pub fn matches(&self, source: Option<&Workload>) -> bool {
        let Some(source) = source else {
            return false;
        };
        self.namespace
            .as_deref()
            .is_none_or(|ns| ns == &*source.namespace)
            && source.labels.contains_all(&self.labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().map(|(k, v)| (*k, *v))).unwrap()
    }

    #[test]
    fn every_set_part_must_hold() {
        let me = Workload::new("prod", labels(&[("app", "web"), ("version", "v1")]));
        let by_labels = SourceMatcher {
            namespace: None,
            labels: labels(&[("app", "web")]),
        };
        assert!(by_labels.matches(Some(&me)));
        let other_app = SourceMatcher {
            namespace: None,
            labels: labels(&[("app", "batch")]),
        };
        assert!(!other_app.matches(Some(&me)));
        let both = SourceMatcher {
            namespace: Some("prod".into()),
            labels: labels(&[("version", "v1")]),
        };
        assert!(both.matches(Some(&me)));
        let other_ns = SourceMatcher {
            namespace: Some("dev".into()),
            labels: Labels::default(),
        };
        assert!(!other_ns.matches(Some(&me)));
        assert!(!by_labels.matches(None), "an unknown caller never matches");
    }
}
