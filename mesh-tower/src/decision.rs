//! What the route layer decided for a request, carried in its extensions to every later layer.

use std::{net::IpAddr, sync::Arc};

use mesh_core::{FaultPolicy, route::Forward};

use crate::cluster::ClusterEntry;

/// The route and cluster chosen for a request, from the one snapshot it was routed with.
///
/// Later layers read this instead of the live configuration, so a request never sees two
/// configuration versions. A per-attempt layer
/// ([`Mesh::channel_with_attempt_layer`](crate::Mesh::channel_with_attempt_layer)) finds it in
/// the request's extensions; it is read-only, so no layer changes what a later one sees.
#[derive(Clone, Debug)]
pub struct RouteDecision {
    /// The forwarding policy of the matched route.
    pub(crate) forward: Arc<Forward>,
    /// The fault policy in force: the weighted cluster's override, else the route's.
    pub(crate) fault: Option<Arc<FaultPolicy>>,
    /// Whether the caller speaks gRPC (decides how synthesized failures are encoded).
    pub(crate) is_grpc: bool,
    /// The route's name, when it has one.
    pub(crate) route_name: Option<Arc<str>>,
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

    /// The matched route's name, when it has one.
    pub fn route_name(&self) -> Option<&str> {
        self.route_name.as_deref()
    }

    /// The forwarding policy of the matched route (timeout, retries, header changes, ...).
    pub fn forward(&self) -> &Forward {
        &self.forward
    }

    /// The fault policy in force: the weighted cluster's override, else the route's.
    pub fn fault(&self) -> Option<&FaultPolicy> {
        self.fault.as_deref()
    }

    /// Whether the caller speaks gRPC (decides how the mesh's own answers are encoded).
    pub fn is_grpc(&self) -> bool {
        self.is_grpc
    }
}
