//! From cached resources to a [`MeshConfig`]: only complete targets are published.
//!
//! A watched target is *complete* when its Listener, its RouteConfiguration, every cluster its
//! routes name (weighted and mirrors) and the endpoints of every EDS cluster are cached. Only
//! then is its configuration (re)built; a target that is incomplete keeps serving the last
//! complete configuration it had, so a route never points at a cluster that has not arrived
//! and a pushed change never half-applies. Pure functions of the cache.

use std::{collections::BTreeMap, sync::Arc};

use mesh_core::{Cluster, MeshConfig, RouteTable, ServerPolicy};

use super::state::{AdsState, Resource, ResourceStatus, ResourceType, route_clusters};
use crate::decode::{EndpointSource, listener::ListenerRoutes, route::decode_route_configuration};

/// Everything one target needs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TargetConfig {
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) clusters: BTreeMap<Arc<str>, Arc<Cluster>>,
}

/// Where a target stands.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TargetState {
    /// Everything is here.
    Complete(TargetConfig),
    /// Something may still arrive.
    Waiting,
    /// The Listener does not exist: the target has no configuration.
    Gone,
    /// Something it needs does not exist or was rejected with no last good value; the last
    /// complete configuration (if any) keeps serving.
    Failed(String),
}

/// The state of `target`, whose Listener is `listener_name`.
pub(crate) fn target_state(state: &AdsState, listener_name: &str) -> TargetState {
    let listener = match need(state, ResourceType::Listener, listener_name) {
        Need::Value(Resource::Listener(l)) => l,
        Need::Value(_) => {
            return TargetState::Failed(format!("Listener {listener_name}: wrong kind"));
        }
        Need::Missing => return TargetState::Gone,
        Need::Failed(e) => return TargetState::Failed(e),
        Need::Waiting => return TargetState::Waiting,
    };
    let table = match &listener.routes {
        ListenerRoutes::Inline(table) => table.clone(),
        ListenerRoutes::Rds { route_config_name } => {
            match need(state, ResourceType::RouteConfiguration, route_config_name) {
                Need::Value(Resource::Route {
                    proto,
                    filters,
                    table,
                }) => {
                    if *filters == listener.filters {
                        table.clone()
                    } else {
                        match decode_route_configuration(proto, &listener.filters) {
                            Ok(d) => d.value,
                            Err(e) => return TargetState::Failed(e.to_string()),
                        }
                    }
                }
                Need::Value(_) => {
                    return TargetState::Failed(format!(
                        "RouteConfiguration {route_config_name}: wrong kind"
                    ));
                }
                Need::Missing => {
                    return TargetState::Failed(format!(
                        "RouteConfiguration {route_config_name} does not exist"
                    ));
                }
                Need::Failed(e) => return TargetState::Failed(e),
                Need::Waiting => return TargetState::Waiting,
            }
        }
    };
    let mut clusters = BTreeMap::new();
    for name in route_clusters(&table) {
        let decoded = match need(state, ResourceType::Cluster, &name) {
            Need::Value(Resource::Cluster(c)) => c,
            Need::Value(_) => return TargetState::Failed(format!("Cluster {name}: wrong kind")),
            Need::Missing => return TargetState::Failed(format!("Cluster {name} does not exist")),
            Need::Failed(e) => return TargetState::Failed(e),
            Need::Waiting => return TargetState::Waiting,
        };
        let mut cluster = decoded.cluster.clone();
        match &decoded.endpoints {
            EndpointSource::Inline { endpoints, .. } => {
                cluster.endpoints = endpoints.clone().into()
            }
            EndpointSource::Eds { service_name } => {
                match need(state, ResourceType::ClusterLoadAssignment, service_name) {
                    Need::Value(Resource::Endpoints(eps)) => cluster.endpoints = eps.clone().into(),
                    Need::Value(_) => {
                        return TargetState::Failed(format!(
                            "ClusterLoadAssignment {service_name}: wrong kind"
                        ));
                    }
                    // A cluster whose endpoints do not exist has none (its requests fail
                    // UNAVAILABLE), as in gRPC.
                    Need::Missing => cluster.endpoints = Arc::from([]),
                    Need::Failed(e) => return TargetState::Failed(e),
                    Need::Waiting => return TargetState::Waiting,
                }
            }
        }
        clusters.insert(Arc::from(name.as_str()), Arc::new(cluster));
    }
    TargetState::Complete(TargetConfig {
        routes: Arc::new(table),
        clusters,
    })
}

/// A MeshConfig of the given complete targets. A cluster shared by several targets is taken
/// from the first (in target order) — they were assembled from the same cache.
pub(crate) fn mesh_config(
    version: String,
    targets: &BTreeMap<String, TargetConfig>,
) -> Result<MeshConfig, mesh_core::Error> {
    let mut listeners = BTreeMap::new();
    let mut clusters = BTreeMap::new();
    for (target, config) in targets {
        listeners.insert(Arc::from(target.as_str()), config.routes.clone());
        for (name, c) in &config.clusters {
            clusters.entry(name.clone()).or_insert_with(|| c.clone());
        }
    }
    MeshConfig::new(version, listeners, clusters, ServerPolicy::default())
}

enum Need<'a> {
    Value(&'a Resource),
    Waiting,
    Missing,
    Failed(String),
}

fn need<'a>(state: &'a AdsState, ty: ResourceType, name: &str) -> Need<'a> {
    let Some(entry) = state.resource(ty, name) else {
        return Need::Waiting;
    };
    match (&entry.value, entry.status) {
        (Some(v), _) => Need::Value(v),
        (None, ResourceStatus::DoesNotExist) => Need::Missing,
        (None, ResourceStatus::Nacked) => Need::Failed(
            entry
                .error
                .clone()
                .unwrap_or_else(|| format!("{ty} {name} rejected")),
        ),
        (None, _) => Need::Waiting,
    }
}
