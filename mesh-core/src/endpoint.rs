//! Endpoints: where a cluster's traffic can go.

use std::{fmt, net::SocketAddr, num::NonZeroU32, sync::Arc};

use crate::Error;

/// One upstream endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Where to connect.
    pub address: EndpointAddress,
    /// Load-balancing weight. Default is 1.
    pub weight: NonZeroU32,
    /// Where it runs.
    pub locality: Locality,
    /// Failover tier: 0 is used first; higher tiers take traffic as lower ones lose health.
    pub priority: u32,
    /// Health reported by the control plane.
    pub health: HealthStatus,
    /// Labels (e.g. `version: v2`) used for subsets; sorted by key.
    pub labels: Labels,
}

/// An endpoint address: an IP and port, or a DNS name resolved by the data plane.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EndpointAddress {
    /// An IP address and port.
    Socket(SocketAddr),
    /// A host name and port (Istio `resolution: DNS`).
    Dns {
        /// Host name.
        host: Arc<str>,
        /// Port.
        port: u16,
    },
}

/// Region / zone / sub-zone.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locality {
    /// Region.
    pub region: Arc<str>,
    /// Zone.
    pub zone: Arc<str>,
    /// Sub-zone.
    pub sub_zone: Arc<str>,
}

/// Health as reported by the control plane (Envoy's `HealthStatus`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// Not known: treated as healthy, as in Envoy.
    #[default]
    Unknown,
    /// Healthy.
    Healthy,
    /// Unhealthy: takes no traffic unless the cluster is in panic.
    Unhealthy,
    /// Draining: takes no new traffic unless the cluster is in panic.
    Draining,
    /// Health check timed out: unhealthy.
    Timeout,
    /// Degraded: used only when not enough healthy endpoints exist.
    Degraded,
}

/// A set of [`HealthStatus`]es (Envoy's `HealthStatusSet`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HealthStatusSet(u8);

/// Endpoint labels, sorted by key, keys unique.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(Arc<[(Arc<str>, Arc<str>)]>);

// === impl Endpoint ===

impl Endpoint {
    /// A healthy, weight-1, priority-0 endpoint without locality or labels.
    pub fn new(address: EndpointAddress) -> Self {
        Self {
            address,
            weight: NonZeroU32::MIN,
            locality: Locality::default(),
            priority: 0,
            health: HealthStatus::Unknown,
            labels: Labels::default(),
        }
    }

    /// Whether the control plane allows traffic to it outside panic mode.
    pub fn is_healthy(&self) -> bool {
        matches!(self.health, HealthStatus::Unknown | HealthStatus::Healthy)
    }
}

// === impl HealthStatus ===

impl HealthStatus {
    fn bit(self) -> u8 {
        match self {
            Self::Unknown => 1,
            Self::Healthy => 1 << 1,
            Self::Unhealthy => 1 << 2,
            Self::Draining => 1 << 3,
            Self::Timeout => 1 << 4,
            Self::Degraded => 1 << 5,
        }
    }
}

// === impl HealthStatusSet ===

impl HealthStatusSet {
    /// No status: session overrides are ignored (Envoy's explicitly empty set).
    pub const EMPTY: Self = Self(0);

    /// This set and `status`.
    #[must_use]
    pub fn with(self, status: HealthStatus) -> Self {
        Self(self.0 | status.bit())
    }

    /// Whether `status` is in the set.
    pub fn contains(self, status: HealthStatus) -> bool {
        self.0 & status.bit() != 0
    }
}

impl Default for HealthStatusSet {
    /// Envoy's default when `override_host_status` is unset: unknown, healthy, degraded.
    fn default() -> Self {
        Self::EMPTY
            .with(HealthStatus::Unknown)
            .with(HealthStatus::Healthy)
            .with(HealthStatus::Degraded)
    }
}

impl FromIterator<HealthStatus> for HealthStatusSet {
    fn from_iter<I: IntoIterator<Item = HealthStatus>>(iter: I) -> Self {
        iter.into_iter().fold(Self::EMPTY, Self::with)
    }
}

impl fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Socket(addr) => addr.fmt(f),
            Self::Dns { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

// === impl Labels ===

impl Labels {
    /// Labels from pairs; a repeated key is an error.
    pub fn new<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self, Error>
    where
        K: Into<Arc<str>>,
        V: Into<Arc<str>>,
    {
        let mut v: Vec<(Arc<str>, Arc<str>)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        v.sort();
        if let Some(w) = v.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::invalid(format!("label `{}` is repeated", w[0].0)));
        }
        Ok(Self(v.into()))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    /// Whether every pair of `selector` is among these labels (subset selection).
    pub fn contains_all(&self, selector: &Labels) -> bool {
        selector.iter().all(|(k, v)| self.get(k) == Some(v))
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_select_subsets() {
        let l = Labels::new([("version", "v2"), ("app", "reviews")]).unwrap();
        assert_eq!(l.get("version"), Some("v2"));
        assert!(l.contains_all(&Labels::new([("version", "v2")]).unwrap()));
        assert!(!l.contains_all(&Labels::new([("version", "v1")]).unwrap()));
        assert!(l.contains_all(&Labels::default()));
        assert!(Labels::new([("a", "1"), ("a", "2")]).is_err());
    }
}
