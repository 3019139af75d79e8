//! What the route layer decided for a request, carried in its extensions to every later layer.

use std::{net::IpAddr, sync::Arc};

use mesh_core::{FaultPolicy, route::Forward};

use crate::cluster::ClusterEntry;

/// The route and cluster chosen for a request, from the one snapshot it was routed with.
///
/// Later layers read this instead of the live configuration, so a request never sees two
/// configuration versions.
#[derive(Clone, Debug)]
pub struct RouteDecision {
    /// The forwarding policy of the matched route.
    pub forward: Arc<Forward>,
    /// The fault policy in force: the weighted cluster's override, else the route's.
    pub fault: Option<Arc<FaultPolicy>>,
    /// Whether the caller speaks gRPC (decides how synthesized failures are encoded).
    pub is_grpc: bool,
    /// The route's name, when it has one.
    pub route_name: Option<Arc<str>>,
    pub(crate) cluster: ClusterEntry,
    /// The local workload's address: the source a sidecar would see, for `useSourceIp`.
    pub(crate) source_ip: Option<IpAddr>,
}

// === impl RouteDecision ===

impl RouteDecision {
    /// The chosen cluster's name.
    pub fn cluster_name(&self) -> &str {
        &self.cluster.policy.name
    }
}
