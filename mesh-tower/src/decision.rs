//! What the route layer decided for a request, carried in its extensions to every later layer.

use std::{net::IpAddr, sync::Arc};

use mesh_core::{FaultPolicy, route::Forward};

use crate::{cluster::ClusterEntry, retry::replay::ReplaySource, trace::RequestTrace};

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
    /// The call's trace, pinned by the channel before its attempts (every attempt is a span of
    /// it). Carried here rather than as an extension of its own: one allocation per call less.
    pub(crate) trace: Option<RequestTrace>,
    /// Set by the retry layer on an attempt whose head the balancer is to hand back with a
    /// retriable answer (`retry::head`): the retry layer's replay buffer of the body, which the
    /// balancer resends from. Here rather than an extension of its own, as `trace`.
    pub(crate) hand_back: Option<ReplaySource>,
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

    /// The trace pinned to the call in `extensions`: the route decision's, else a
    /// [`RequestTrace`] of its own there.
    pub(crate) fn pinned_trace(extensions: &http::Extensions) -> Option<&RequestTrace> {
        extensions
            .get::<RouteDecision>()
            .and_then(|d| d.trace.as_ref())
            .or_else(|| extensions.get::<RequestTrace>())
    }
}
