//! Weighted cluster choice.

use std::sync::Arc;

use super::HeaderMutations;
use crate::{Error, FaultPolicy};

/// One weighted destination of a route.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WeightedCluster {
    /// The cluster's name, e.g. `outbound|9080|v2|reviews.default.svc.cluster.local`.
    pub name: Arc<str>,
    /// Relative weight; 0 takes no traffic.
    pub weight: u32,
    /// Request header changes for traffic sent here (Istio's per-destination `headers`).
    pub request_headers: HeaderMutations,
    /// Response header changes for traffic sent here.
    pub response_headers: HeaderMutations,
    /// A fault policy replacing the route's for traffic sent here (Envoy's per-cluster
    /// `typed_per_filter_config`); `None` keeps the route's.
    pub fault: Option<Arc<FaultPolicy>>,
}

/// A non-empty list of weighted destinations whose weights sum to a positive total.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WeightedClusters {
    clusters: Arc<[WeightedCluster]>,
    total: u32,
}

// === impl WeightedCluster ===

impl WeightedCluster {
    /// A destination with no header changes and no fault override.
    pub fn new(name: impl Into<Arc<str>>, weight: u32) -> Self {
        Self {
            name: name.into(),
            weight,
            request_headers: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
            fault: None,
        }
    }
}

// === impl WeightedClusters ===

impl WeightedClusters {
    /// Validates that there is at least one destination, that the weights sum to more than 0
    /// and that the sum fits in a `u32`.
    pub fn new(clusters: Vec<WeightedCluster>) -> Result<Self, Error> {
        if clusters.is_empty() {
            return Err(Error::invalid("a route needs at least one destination"));
        }
        let total: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
        let total = u32::try_from(total)
            .map_err(|_| Error::invalid(format!("weights sum to {total}, more than 2^32-1")))?;
        if total == 0 {
            return Err(Error::invalid(
                "weights sum to 0: no destination can take traffic",
            ));
        }
        Ok(Self {
            clusters: clusters.into(),
            total,
        })
    }

    /// A single destination taking all traffic.
    pub fn single(name: impl Into<Arc<str>>) -> Self {
        Self {
            clusters: Arc::from([WeightedCluster::new(name, 1)]),
            total: 1,
        }
    }

    /// The destinations.
    pub fn clusters(&self) -> &[WeightedCluster] {
        &self.clusters
    }

    /// The sum of the weights.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Picks a destination with probability `weight / total` from one uniform random draw.
    /// A zero-weight destination is never picked.
    pub fn pick(&self, random: u64) -> &WeightedCluster {
        let mut point = random % u64::from(self.total);
        for c in self.clusters.iter() {
            let w = u64::from(c.weight);
            if point < w {
                return c;
            }
            point -= w;
        }
        // Unreachable: `point < total` = Σ weights. The last destination with weight is a
        // correct answer anyway, so no panic path exists.
        self.clusters
            .iter()
            .rev()
            .find(|c| c.weight > 0)
            .unwrap_or(&self.clusters[0])
    }
}
