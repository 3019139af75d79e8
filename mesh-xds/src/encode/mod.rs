//! Encoding a [`MeshConfig`] as Envoy v3 xDS resources, shaped as istiod generates them for
//! proxyless gRPC (`pilot/pkg/networking/grpcgen`): the inverse of [`crate::decode`].
//!
//! One `Listener` per target (`host:port`), an API listener whose `HttpConnectionManager`
//! names its `RouteConfiguration` over ADS as istiod does, `outbound|port||host`; one
//! `Cluster` per cluster (`outbound|port|subset|host`, as Istio YAML names them), EDS over
//! ADS, with the `ClusterLoadAssignment` of the same name. Every policy is written at the
//! route (never inherited from the virtual host), and every value whose Envoy default differs
//! from the model's (route timeout, retry count, backoff) is written explicitly.
//!
//! # Two shapes
//!
//! [`Shape::Istiod`] (what [`encode`] writes) is what istiod sends a proxyless gRPC client,
//! so gRPC's own clients accept every resource (C-core through grpcio and grpc-js-xds are
//! tested: `tests/grpcio_interop.rs`, `tests/grpcjs_interop.rs`):
//! listeners always carry the fault and router filters (istiod's `supportedFilters`), and a
//! cluster carries only what istiod translates from a DestinationRule for gRPC — the load
//! balancer (round robin, ring hash, least request), `http2MaxRequests` as the circuit
//! breaker's `max_requests`, and upstream TLS from certificate providers (ISTIO_MUTUAL). It
//! drops outlier detection, the other connection-pool limits, the connect and idle timeouts,
//! the panic threshold and locality weighting. Two things differ from istiod, both so that
//! no gRPC client NACKs and nothing falls back to plaintext:
//!
//! - Least request (and peak EWMA, sent as least request) is a `load_balancing_policy` list
//!   `[least_request, round_robin]` rather than istiod's `LEAST_REQUEST` enum, which gRPC
//!   C-core and grpc-js reject; a client without least request takes round robin (gRFC A52).
//!   Weighted random, which istiod does not translate, is round robin.
//! - A cluster whose TLS uses certificate files (DestinationRule SIMPLE/MUTUAL with
//!   `caCertificates`, `clientCertificate`) is not sent at all, nor its endpoints: istiod sends
//!   it without TLS, which would be plaintext; gRPC NACKs file-based TLS. Calls to it fail.
//!
//! [`Shape::MeshExtensions`] adds what only this mesh's client reads: the full circuit
//! breaker, retry budget, outlier detection, connect and idle timeouts, panic threshold,
//! locality weighting, weighted random and file-based TLS. `mesh-xds serve
//! --mesh-extensions` and [`crate::server::ControlPlane::with_mesh_extensions`] serve it.
//!
//! # What Envoy cannot carry
//!
//! In the [`Shape::MeshExtensions`] shape the property is `decode(encode_as(c,
//! MeshExtensions)) == canonical(c)`; [`canonical`] is the identity except for these, each of
//! which it rewrites to what xDS carries (and the tests pin down):
//!
//! - A route table is named after its listener's target as istiod names it,
//!   `outbound|port||host` (Istio YAML names tables by port, which many listeners share).
//! - [`PathRewrite::FullPath`] on a forward: Envoy's `RouteAction` has no full-path rewrite.
//!   Under an exact path match it is a `prefix_rewrite` (what istiod writes), otherwise a
//!   `regex_rewrite` of `^.*$`.
//! - [`TlsMode::IstioMutual`] and a missing trust bundle become explicit certificate-provider
//!   instances (`default` / `ROOTCA`, as istiod sends them), which decode as
//!   [`TlsMode::Mutual`] / [`TlsMode::Simple`] with [`CertificateSource::Provider`]. The mode
//!   follows the presence of a client certificate.
//! - [`LbPolicy::PeakEwma`] has no Envoy policy: it is sent as least request with 2 choices,
//!   its nearest relative.
//! - Outlier-detection enforcement and ejection percentages are whole percents in Envoy (the
//!   model has parts per million): they are rounded. A local-origin rule without
//!   `split_external_local_origin_errors` has no effect in Envoy and is dropped.
//! - A fault policy that injects nothing is no policy on a route, and "faults disabled" on a
//!   weighted cluster.
//! - Endpoints are grouped by (priority, locality) in order of first appearance; each group
//!   is one `LocalityLbEndpoints` whose weight is the sum of its endpoints' weights (gRPC
//!   ignores groups without a locality weight; the decoder checks the weights are
//!   proportional).
//! - Case-insensitivity of a regex (path, header, authority, method, query, SAN) is dropped:
//!   Envoy ignores it for regexes, and so does the model's matcher.
//! - A route scoped by its caller ([`RouteMatcher::source`](mesh_core::route::RouteMatcher::source), Istio's `sourceLabels` and
//!   `sourceNamespace`) is left out: istiod evaluates it per proxy and sends it only to the
//!   proxies it selects, while these resources are the same for every node. Leaving it out
//!   narrows (its callers take the next route), where sending it unscoped would widen it to
//!   every caller.
//! - A retriable status listed twice is listed once (the decoder reads the list as a set).
//! - The server-side policy ([`MeshConfig::server`]) and the version label are not part of
//!   the client resources.

use std::{collections::BTreeMap, sync::Arc};

use envoy_types::pb::{
    envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        route::v3::RouteConfiguration,
    },
    google::protobuf::Any,
};
use mesh_core::{
    Action, CertificateSource, LbPolicy, MeshConfig, RouteTable, TlsMode,
    route::{Forward, PathRewrite},
};

mod cluster;
mod endpoint;
mod inbound;
mod listener;
mod route;
#[cfg(test)]
mod tests;

pub use self::cluster::{
    IstiodView, ROOT_CA_CERTIFICATE, WORKLOAD_CERTIFICATE, WORKLOAD_PROVIDER, istiod_view,
};
pub use self::inbound::{
    InboundView, RBAC_ALLOW_FILTER, RBAC_DENY_FILTER, Workload, encode_inbound, inbound_address,
    inbound_view, not_enforced,
};

/// Type URL of `Listener` (LDS).
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Type URL of `RouteConfiguration` (RDS).
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Type URL of `Cluster` (CDS).
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Type URL of `ClusterLoadAssignment` (EDS).
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The four resource types, in the order a client needs them.
pub const TYPE_URLS: [&str; 4] = [LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE];

/// Every xDS resource of one configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// One API listener per target.
    pub listeners: Vec<Listener>,
    /// One route configuration per listener, named like it.
    pub routes: Vec<RouteConfiguration>,
    /// One EDS cluster per cluster.
    pub clusters: Vec<Cluster>,
    /// One load assignment per cluster, named like it.
    pub load_assignments: Vec<ClusterLoadAssignment>,
}

/// Which resources the encoder writes (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Shape {
    /// What istiod sends a proxyless gRPC client: every gRPC client accepts it.
    #[default]
    Istiod,
    /// Istiod's shapes plus the cluster policies only this mesh's client reads (outlier
    /// detection, every circuit-breaker limit, timeouts, file-based TLS, ...).
    MeshExtensions,
}

/// Encodes `config` as istiod would for a gRPC client ([`Shape::Istiod`]).
pub fn encode(config: &MeshConfig) -> Resources {
    encode_as(config, Shape::Istiod)
}

/// Encodes `config` in `shape` (see the module docs for what changes on the way).
pub fn encode_as(config: &MeshConfig, shape: Shape) -> Resources {
    let mut out = Resources::default();
    for (target, table) in config.listeners() {
        let (l, rc) = listener::encode(target, table, shape);
        out.listeners.push(l);
        out.routes.push(rc);
    }
    for cluster in config.clusters().values() {
        let encoded = match shape {
            Shape::Istiod => cluster::encode_istiod(cluster),
            Shape::MeshExtensions => Some(cluster::encode(cluster)),
        };
        // A cluster istiod's shape cannot secure is not sent (see the module docs).
        if let Some(c) = encoded {
            out.clusters.push(c);
            out.load_assignments.push(endpoint::encode(cluster));
        }
    }
    out
}

/// The name of the `RouteConfiguration` of `target`, as istiod names it for gRPC:
/// `outbound|port||host` for a `host:port` target (the name of the service's cluster), the
/// target itself otherwise.
pub fn route_config_name(target: &str) -> String {
    match target.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            format!("outbound|{port}||{host}")
        }
        _ => target.to_string(),
    }
}

// === impl Resources ===

impl Resources {
    /// The resources of one type URL by name, packed as `Any`; empty for an unknown type.
    pub fn by_type(&self, type_url: &str) -> BTreeMap<String, Any> {
        fn pack<M: prost::Name>(items: &[M], name: impl Fn(&M) -> &str) -> BTreeMap<String, Any> {
            items
                .iter()
                .map(|m| (name(m).to_string(), any(m)))
                .collect()
        }
        match type_url {
            LISTENER_TYPE => pack(&self.listeners, |l| &l.name),
            ROUTE_TYPE => pack(&self.routes, |r| &r.name),
            CLUSTER_TYPE => pack(&self.clusters, |c| &c.name),
            ENDPOINT_TYPE => pack(&self.load_assignments, |c| &c.cluster_name),
            _ => BTreeMap::new(),
        }
    }
}

/// `m` packed as an `Any` with its type URL.
pub(crate) fn any<M: prost::Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// `config` as xDS carries it: [`encode`] followed by decoding yields exactly this. See the
/// module docs for each difference.
pub fn canonical(config: &MeshConfig) -> MeshConfig {
    let listeners = config
        .listeners()
        .iter()
        .map(|(target, table)| (target.clone(), Arc::new(canonical_table(target, table))))
        .collect();
    let clusters = config
        .clusters()
        .iter()
        .map(|(name, c)| (name.clone(), Arc::new(cluster::canonical(c))))
        .collect();
    // The input was complete and names are unchanged, so the snapshot stays complete.
    MeshConfig::new(
        config.version(),
        listeners,
        clusters,
        (**config.server()).clone(),
    )
    .unwrap_or_else(|_| config.clone())
}

fn canonical_table(target: &str, table: &RouteTable) -> RouteTable {
    let hosts: Vec<_> = table
        .virtual_hosts()
        .iter()
        .map(|vh| {
            let routes = vh
                .routes()
                .iter()
                .filter(|r| r.matcher.source.is_none())
                .map(|r| {
                    let mut r = r.clone();
                    route::canonical_route(&mut r);
                    if let Action::Forward(fwd) = &r.action
                        && let Some(PathRewrite::FullPath(p)) = &fwd.path_rewrite
                    {
                        let mut f: Forward = (**fwd).clone();
                        f.path_rewrite = Some(route::full_path_rewrite(&r.matcher, p));
                        r.action = Action::Forward(Arc::new(f));
                    }
                    r
                })
                .collect();
            mesh_core::route::VirtualHost::new(vh.name(), vh.domains().to_vec(), routes)
                .unwrap_or_else(|_| vh.clone())
        })
        .collect();
    RouteTable::new(route_config_name(target), hosts).unwrap_or_else(|_| table.clone())
}

/// The policy Envoy carries for `lb`.
pub(crate) fn canonical_lb(lb: &LbPolicy) -> LbPolicy {
    match lb {
        LbPolicy::PeakEwma { .. } => LbPolicy::LeastRequest { choice_count: 2 },
        other => other.clone(),
    }
}

/// The mode a decoded TLS context has: it follows the client certificate.
pub(crate) fn canonical_mode(mode: TlsMode, client: &Option<CertificateSource>) -> TlsMode {
    match (mode, client) {
        (TlsMode::Disable, _) => TlsMode::Disable,
        (_, Some(_)) => TlsMode::Mutual,
        (_, None) => TlsMode::Simple,
    }
}
