//! Encoding a [`MeshConfig`] as Envoy v3 xDS resources, shaped as istiod generates them for
//! proxyless gRPC: the inverse of [`crate::decode`].
//!
//! One `Listener` per target (`host:port`), an API listener whose `HttpConnectionManager`
//! names a `RouteConfiguration` of the same name over ADS and whose filter chain is the fault
//! filter (only when some route injects faults) then the router; one `Cluster` per cluster,
//! EDS over ADS, with the `ClusterLoadAssignment` of the same name. Every policy is written at
//! the route (never inherited from the virtual host), and every value whose Envoy default
//! differs from the model's (route timeout, connect timeout, idle timeout, retry count,
//! backoff) is written explicitly, so decoding needs no knowledge of the source.
//!
//! # What Envoy cannot carry
//!
//! The property is `decode(encode(c)) == canonical(c)`; [`canonical`] is the identity except
//! for these, each of which it rewrites to what xDS carries (and the tests pin down):
//!
//! - A route table is named after its listener's target (RDS names must be unique per
//!   listener; Istio YAML names tables by port, which many listeners share).
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
mod listener;
mod route;
#[cfg(test)]
mod tests;

pub use self::cluster::{ROOT_CA_CERTIFICATE, WORKLOAD_CERTIFICATE, WORKLOAD_PROVIDER};

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

/// Encodes `config` (see the module docs for what changes on the way).
pub fn encode(config: &MeshConfig) -> Resources {
    let mut out = Resources::default();
    for (target, table) in config.listeners() {
        let (l, rc) = listener::encode(target, table);
        out.listeners.push(l);
        out.routes.push(rc);
    }
    for cluster in config.clusters().values() {
        out.clusters.push(cluster::encode(cluster));
        out.load_assignments.push(endpoint::encode(cluster));
    }
    out
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
    RouteTable::new(target, hosts).unwrap_or_else(|_| table.clone())
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
