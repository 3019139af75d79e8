//! The immutable, versioned configuration snapshot the data plane reads.
//!
//! A [`MeshConfig`] is complete by construction: every cluster a route or mirror names exists.
//! It has parts that different sources own: the client half (listeners and clusters, from xDS
//! or Istio YAML), the local server policy ([`ServerPolicy`], from Istio YAML) and the xDS
//! server side ([`InboundListeners`], from an xDS client serving ports). A source replaces only
//! its part ([`MeshConfig::with_server`], [`MeshConfig::with_inbound`] keep the rest), so one
//! source's publish never drops what another set. The data plane loads the
//! combined snapshot once per request, so a request never sees two versions and never a
//! dangling reference.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use crate::{
    Action, Cluster, Error, InboundListeners, RouteTable, ServerPolicy, Workload,
    sidecar::{self, OutboundMode, OutboundScope, Visibility},
};

/// One complete configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeshConfig {
    version: Arc<str>,
    listeners: BTreeMap<Arc<str>, Arc<RouteTable>>,
    clusters: BTreeMap<Arc<str>, Arc<Cluster>>,
    server: Arc<ServerPolicy>,
    inbound: Arc<InboundListeners>,
    /// The Sidecars and listener origins of a configuration loaded from Istio YAML; `None`
    /// for one from xDS (istiod already narrowed it) or assembled by hand.
    visibility: Option<Arc<Visibility>>,
    /// What a target without a listener gets, once narrowed for a workload; `None`: no
    /// route (an xDS or hand-built configuration).
    outbound: Option<Arc<OutboundScope>>,
}

// === impl MeshConfig ===

impl MeshConfig {
    /// Builds a snapshot; every cluster referenced by a route or a mirror must be present.
    ///
    /// `listeners` maps a target (`host:port`, or `host` for every port) to its routes.
    pub fn new(
        version: impl Into<Arc<str>>,
        listeners: BTreeMap<Arc<str>, Arc<RouteTable>>,
        clusters: BTreeMap<Arc<str>, Arc<Cluster>>,
        server: ServerPolicy,
    ) -> Result<Self, Error> {
        for (target, table) in &listeners {
            for vh in table.virtual_hosts() {
                for (i, route) in vh.routes().iter().enumerate() {
                    let Action::Forward(fwd) = &route.action else {
                        continue;
                    };
                    let names = fwd
                        .clusters
                        .clusters()
                        .iter()
                        .map(|c| &c.name)
                        .chain(fwd.mirrors.iter().map(|m| &m.cluster));
                    for name in names {
                        if !clusters.contains_key(name) {
                            return Err(Error::invalid(format!(
                                "listener `{target}`, virtual host `{}`, route {i}: cluster `{name}` does not exist",
                                vh.name()
                            )));
                        }
                    }
                }
            }
        }
        Ok(Self {
            version: version.into(),
            listeners,
            clusters,
            server: Arc::new(server),
            inbound: Arc::default(),
            visibility: None,
            outbound: None,
        })
    }

    /// An empty snapshot: no listeners, no clusters, default server policy.
    pub fn empty() -> Self {
        Self {
            version: "".into(),
            listeners: BTreeMap::new(),
            clusters: BTreeMap::new(),
            server: Arc::default(),
            inbound: Arc::default(),
            visibility: None,
            outbound: None,
        }
    }

    /// The version label of the snapshot.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The routes for a target: `host:port` exactly, else the `host` entry that serves every
    /// port.
    pub fn listener(&self, target: &str) -> Option<&Arc<RouteTable>> {
        self.listeners.get(target).or_else(|| {
            let (host, port) = target.rsplit_once(':')?;
            port.parse::<u16>().ok()?;
            self.listeners.get(host)
        })
    }

    /// The routes for a target named the way a workload in `namespace` may name it: exactly
    /// ([`listener`](Self::listener)), else through Kubernetes' DNS search list for a pod in
    /// that namespace (`<ns>.svc.cluster.local`, `svc.cluster.local`, `cluster.local`), so
    /// `greeter:50051`, `greeter.prod:50051` and `greeter.prod.svc:50051` find the listener of
    /// `greeter.<ns>.svc.cluster.local:50051` and `greeter.prod.svc.cluster.local:50051`, as
    /// they would resolve in the cluster and as istiod lists them among a service's domains.
    pub fn listener_in(&self, target: &str, namespace: &str) -> Option<&Arc<RouteTable>> {
        if let Some(table) = self.listener(target) {
            return Some(table);
        }
        dns_search(target, namespace)?
            .iter()
            .find_map(|candidate| self.listener(candidate))
    }

    /// This configuration with the Sidecars and listener origins that
    /// [`for_workload`](Self::for_workload) narrows it by.
    pub fn with_visibility(self, visibility: Visibility) -> Self {
        Self {
            visibility: Some(Arc::new(visibility)),
            ..self
        }
    }

    /// The Sidecars and listener origins, for a configuration loaded from Istio YAML.
    pub fn visibility(&self) -> Option<&Arc<Visibility>> {
        self.visibility.as_ref()
    }

    /// What a target without a listener gets, once narrowed for a workload
    /// ([`for_workload`](Self::for_workload)); `None` answers it "no route".
    pub fn outbound(&self) -> Option<&Arc<OutboundScope>> {
        self.outbound.as_ref()
    }

    /// This configuration as istiod would generate it for `workload`'s proxy.
    ///
    /// The Sidecar that applies to it narrows it: listeners of services no `egress[].hosts`
    /// entry imports are removed, a listener whose VirtualService is not imported serves
    /// Istio's default route, and [`outbound`](Self::outbound) says what other targets get
    /// (`outboundTrafficPolicy.mode`, `ALLOW_ANY` by default). Under `REGISTRY_ONLY`, hosts
    /// only resolved through DNS (not in the registry) are removed too. `exportTo` narrows it
    /// the same way: a service not exported to the workload's namespace is removed, a
    /// VirtualService not exported leaves Istio's default route. The clusters of a removed
    /// service are removed too, so a visible route to one answers as a missing cluster (`NC`:
    /// gRPC `UNAVAILABLE`, HTTP 503), as Envoy does. Where several VirtualServices or
    /// DestinationRules name one host, the one istiod would give this workload applies
    /// (the workload's namespace first; see [`sidecar`](crate::sidecar)'s precedence rules); a
    /// host none applies to has the clusters without a rule, and no subset clusters.
    ///
    /// Without [`visibility`](Self::visibility) (xDS, hand-built), the configuration is
    /// returned as is. Always narrows the configuration as loaded, so it can be narrowed again
    /// for another workload.
    pub fn for_workload(&self, workload: &Workload) -> Self {
        let Some(visibility) = &self.visibility else {
            return self.clone();
        };
        let sidecar = sidecar::select(&visibility.sidecars, workload, &visibility.root_namespace);
        let mode = sidecar.map_or(OutboundMode::AllowAny, sidecar::Sidecar::mode);
        let own = &*workload.namespace;
        let (mut hidden, mut unrouted, mut routed) = (Vec::new(), Vec::new(), Vec::new());
        let mut listeners = BTreeMap::new();
        let mut visible_hosts = BTreeSet::new();
        for (target, table) in &self.listeners {
            let Some(origin) = visibility.origins.get(target) else {
                listeners.insert(target.clone(), table.clone());
                continue;
            };
            let imported =
                origin.export_to.includes(own) && sidecar.is_none_or(|s| s.imports(origin, own));
            if !imported || (!origin.registered && mode == OutboundMode::RegistryOnly) {
                hidden.push(target.clone());
                continue;
            }
            visible_hosts.insert(origin.host.clone());
            let chosen = sidecar::choose_virtual_service(&origin.candidates, own, |vs| {
                sidecar.is_none_or(|s| s.imports_virtual_service(vs, origin.port, own))
            });
            if origin.candidates.len() > 1 {
                routed.push((target.clone(), chosen.map(sidecar::RoutedBy::id)));
            }
            let table = match (chosen, &origin.routed_by) {
                (Some(vs), _) => vs.routes.clone(),
                (None, Some(vs)) => {
                    unrouted.push((target.clone(), vs.id()));
                    vs.default_routes.clone()
                }
                (None, None) => table.clone(),
            };
            listeners.insert(target.clone(), table);
        }
        let mut clusters = BTreeMap::new();
        let (mut hidden_clusters, mut unshaped, mut rules) = (Vec::new(), Vec::new(), Vec::new());
        for (name, cluster) in &self.clusters {
            let Some(origin) = visibility.clusters.get(name) else {
                clusters.insert(name.clone(), cluster.clone());
                continue;
            };
            if !visible_hosts.contains(&origin.host) {
                hidden_clusters.push(name.clone());
            } else if !visibility.rules.contains_key(&origin.host) {
                clusters.insert(name.clone(), cluster.clone());
            }
        }
        // A host with DestinationRules gets the clusters of the one that applies here.
        let root = &*visibility.root_namespace;
        for (host, host_rules) in &visibility.rules {
            if !visible_hosts.contains(host) {
                continue;
            }
            let chosen = host_rules.choose(own, root);
            rules.push((host.clone(), chosen.map(sidecar::RuleEntry::id)));
            let shaped = match chosen {
                Some(entry) => &entry.clusters,
                None => {
                    if let Some(default) = host_rules.unnarrowed(root) {
                        unshaped.extend(
                            default
                                .clusters
                                .iter()
                                .map(|(n, _)| (n.clone(), default.id())),
                        );
                    }
                    &host_rules.base
                }
            };
            clusters.extend(shaped.iter().map(|(n, c)| (n.clone(), c.clone())));
        }
        unshaped.sort();
        // `failoverPriority` ranks endpoints by the workload's labels, as istiod does per proxy.
        for cluster in clusters.values_mut() {
            if let Some(ranked) = rank_by_labels(cluster, &workload.labels) {
                *cluster = Arc::new(ranked);
            }
        }
        let outbound = OutboundScope {
            namespace: workload.namespace.clone(),
            sidecar: sidecar.map(sidecar::Sidecar::id),
            mode,
            hidden: hidden.into(),
            unrouted: unrouted.into(),
            hidden_clusters: hidden_clusters.into(),
            unshaped: unshaped.into(),
            rules: rules.into(),
            routed: routed.into(),
        };
        Self {
            listeners,
            clusters,
            outbound: Some(Arc::new(outbound)),
            ..self.clone()
        }
    }

    /// All listeners by target.
    pub fn listeners(&self) -> &BTreeMap<Arc<str>, Arc<RouteTable>> {
        &self.listeners
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }

    /// All clusters by name.
    pub fn clusters(&self) -> &BTreeMap<Arc<str>, Arc<Cluster>> {
        &self.clusters
    }

    /// The server-side policy.
    pub fn server(&self) -> &Arc<ServerPolicy> {
        &self.server
    }

    /// The xDS server side: the inbound listener state of each xDS-driven port. A port it
    /// does not list follows [`server`](Self::server).
    pub fn inbound(&self) -> &Arc<InboundListeners> {
        &self.inbound
    }

    /// This snapshot with `server` as its local server policy, everything else kept. Needs no
    /// validation again: server policy names no cluster.
    pub fn with_server(&self, server: Arc<ServerPolicy>) -> Self {
        Self {
            server,
            ..self.clone()
        }
    }

    /// This snapshot with `inbound` as its xDS server side, everything else kept.
    pub fn with_inbound(&self, inbound: Arc<InboundListeners>) -> Self {
        Self {
            inbound,
            ..self.clone()
        }
    }
}

/// `cluster` with each endpoint's priority its `failoverPriority` rank for a workload with
/// `labels`; `None` when the cluster has no `failoverPriority` in effect or the workload no
/// labels.
fn rank_by_labels(cluster: &Cluster, labels: &crate::Labels) -> Option<Cluster> {
    let order = &cluster.locality_failover.priority_labels;
    if !cluster.locality_weighted || order.is_empty() || labels.is_empty() {
        return None;
    }
    let mut ranked = cluster.clone();
    let mut endpoints = ranked.endpoints.to_vec();
    for e in &mut endpoints {
        e.priority = crate::lb::label_priority(order, labels, &e.labels)?;
    }
    ranked.endpoints = endpoints.into();
    Some(ranked)
}

/// The names Kubernetes' DNS search list tries for `target` (`host:port`) from a pod in
/// `namespace`; `None` for a fully qualified or port-less target.
pub(crate) fn dns_search(target: &str, namespace: &str) -> Option<[String; 3]> {
    let (host, port) = target.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    if host.ends_with(".cluster.local") || host.ends_with('.') {
        return None;
    }
    Some([
        format!("{host}.{namespace}.svc.cluster.local:{port}"),
        format!("{host}.svc.cluster.local:{port}"),
        format!("{host}.cluster.local:{port}"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{
        Domain, Forward, Mirror, Route, RouteMatcher, VirtualHost, WeightedCluster,
        WeightedClusters,
    };

    fn table(clusters: &[&str], mirror: Option<&str>) -> Arc<RouteTable> {
        let mut fwd = Forward::to(
            WeightedClusters::new(
                clusters
                    .iter()
                    .map(|c| WeightedCluster::new(*c, 1))
                    .collect(),
            )
            .unwrap(),
        );
        fwd.mirrors = mirror
            .map(|m| {
                Arc::from([Mirror {
                    cluster: m.into(),
                    percentage: crate::Percentage::HUNDRED,
                }])
            })
            .unwrap_or_else(|| Arc::from([]));
        let route = Route::new(RouteMatcher::default(), Action::Forward(Arc::new(fwd)));
        let vh = VirtualHost::new(
            "reviews",
            vec![Domain::parse("reviews").unwrap()],
            vec![route],
        )
        .unwrap();
        Arc::new(RouteTable::new("reviews:9080", vec![vh]).unwrap())
    }

    fn clusters(names: &[&str]) -> BTreeMap<Arc<str>, Arc<Cluster>> {
        names
            .iter()
            .map(|n| (Arc::from(*n), Arc::new(Cluster::new(*n, vec![]))))
            .collect()
    }

    #[test]
    fn a_route_never_points_at_a_missing_cluster() {
        let listeners = BTreeMap::from([(Arc::from("reviews:9080"), table(&["v1", "v2"], None))]);
        let err = MeshConfig::new(
            "1",
            listeners.clone(),
            clusters(&["v1"]),
            ServerPolicy::default(),
        )
        .unwrap_err();
        assert!(
            err.message().contains("cluster `v2` does not exist"),
            "{err}"
        );
        let ok = MeshConfig::new(
            "1",
            listeners,
            clusters(&["v1", "v2"]),
            ServerPolicy::default(),
        )
        .unwrap();
        assert_eq!(ok.version(), "1");
    }

    #[test]
    fn mirrors_must_exist_too() {
        let listeners =
            BTreeMap::from([(Arc::from("reviews:9080"), table(&["v1"], Some("shadow")))]);
        assert!(
            MeshConfig::new("1", listeners, clusters(&["v1"]), ServerPolicy::default()).is_err()
        );
    }

    #[test]
    fn with_server_replaces_only_the_server_half() {
        let listeners = BTreeMap::from([(Arc::from("reviews:9080"), table(&["v1"], None))]);
        let config =
            MeshConfig::new("7", listeners, clusters(&["v1"]), ServerPolicy::default()).unwrap();
        let server = Arc::new(ServerPolicy {
            rate_limit: Some(
                crate::LocalRateLimit::new(1, 1, std::time::Duration::from_secs(1)).unwrap(),
            ),
            ..ServerPolicy::default()
        });
        let combined = config.with_server(server.clone());
        assert!(Arc::ptr_eq(combined.server(), &server));
        assert_eq!(combined.version(), "7");
        assert_eq!(combined.listeners(), config.listeners());
        assert_eq!(combined.clusters(), config.clusters());
    }

    #[test]
    fn a_portless_listener_serves_every_port() {
        let listeners = BTreeMap::from([(Arc::from("reviews"), table(&["v1"], None))]);
        let config =
            MeshConfig::new("1", listeners, clusters(&["v1"]), ServerPolicy::default()).unwrap();
        assert!(config.listener("reviews:9080").is_some());
        assert!(config.listener("reviews").is_some());
        assert!(config.listener("ratings:9080").is_none());
        assert!(config.listener("reviews:notaport").is_none());
    }
}
