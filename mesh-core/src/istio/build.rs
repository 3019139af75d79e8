//! Cross-resource assembly: services, clusters and listeners from the parsed resources.
//!
//! This is where references are resolved (VirtualService → service and subset, DestinationRule →
//! service, ServiceEntry → WorkloadEntry) and where Istio's naming is applied, so both sources
//! of configuration yield the same cluster and listener names.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use yaml_serde::Value;

use super::{
    Meta, Resources,
    cursor::{Cx, Diags, Node},
    destination_rule::DestinationRule,
    kubernetes,
    service_entry::{Origin, RawEndpoint, Resolution, ServiceEntry, ServicePort, fqdn},
    virtual_service::{self, Registry, VirtualService},
};
use crate::{
    Cluster, DEFAULT_ROOT_NAMESPACE, Endpoint, MeshConfig, PathNormalizer, RouteTable,
    ServerPolicy,
    route::{Action, Domain, Forward, Route, RouteMatcher, VirtualHost, WeightedClusters},
    sidecar::{ClusterOrigin, ExportTo, ListenerOrigin, RoutedBy, RuleOrigin, Visibility},
};

/// Assembles the configuration; `None` when errors were reported.
pub(super) fn build(
    mut res: Resources<'_>,
    version: String,
    diags: &RefCell<Diags>,
) -> Option<MeshConfig> {
    // Kubernetes Services are registry entries like ServiceEntries.
    let kube_endpoints = std::mem::take(&mut res.kube_endpoints);
    for svc in std::mem::take(&mut res.kube_services) {
        res.service_entries
            .push(kubernetes::to_service_entry(svc, &kube_endpoints));
    }
    // Hosts that policies name but no registry entry defines are resolved through DNS.
    let unresolvable = dns_fallback(&mut res, diags);

    // Services: host → (ServiceEntry, resolved endpoints).
    let mut services: BTreeMap<String, &ServiceEntry> = BTreeMap::new();
    for se in &res.service_entries {
        let cx = se.meta.cx(diags);
        for (host, path) in &se.hosts {
            if let Some(other) = services.get(host) {
                if se.origin == Origin::KubernetesService && other.origin == Origin::ServiceEntry {
                    cx.warn(
                        path,
                        format!(
                            "host {host} is also defined by ServiceEntry {}, which takes precedence; ignored",
                            other.meta.name
                        ),
                    );
                    continue;
                }
                cx.error(
                    path,
                    format!(
                        "host {host} is already defined by ServiceEntry {}",
                        other.meta.name
                    ),
                );
                continue;
            }
            services.insert(host.clone(), se);
        }
    }

    // DestinationRules by host.
    let mut rules: BTreeMap<&str, &DestinationRule> = BTreeMap::new();
    for dr in &res.destination_rules {
        let cx = dr.meta.cx(diags);
        if !services.contains_key(&dr.host) {
            cx.warn(
                "spec.host",
                format!(
                    "host {} is not a known service (no ServiceEntry), the rule has no effect",
                    dr.host
                ),
            );
            continue;
        }
        if let Some(other) = rules.get(dr.host.as_str()) {
            cx.error(
                "spec.host",
                format!(
                    "host {} already has DestinationRule {}",
                    dr.host, other.meta.name
                ),
            );
            continue;
        }
        rules.insert(&dr.host, dr);
    }

    // Clusters, and what VirtualServices may refer to.
    let mut reg = Registry {
        unresolvable,
        ..Registry::default()
    };
    let mut clusters: BTreeMap<Arc<str>, Arc<Cluster>> = BTreeMap::new();
    let mut cluster_origins: BTreeMap<Arc<str>, ClusterOrigin> = BTreeMap::new();
    for (host, se) in &services {
        let origin = |rule: Option<(&DestinationRule, Option<&Cluster>)>| ClusterOrigin {
            host: host.as_str().into(),
            service_namespace: se.meta.namespace.clone(),
            rule: rule.map(|(dr, without)| RuleOrigin {
                name: dr.meta.name.clone(),
                namespace: dr.meta.namespace.clone(),
                export_to: dr.export_to.clone(),
                without: without.map(|c| Arc::new(c.clone())),
            }),
        };
        reg.services
            .insert(host.clone(), se.ports.iter().map(|p| p.number).collect());
        let raw = endpoints_of(se, host, &res);
        let dr = rules.get(host.as_str());
        if let Some(dr) = dr {
            reg.subsets.insert(
                host.clone(),
                dr.subsets.iter().map(|s| s.name.clone()).collect(),
            );
        }
        for port in &se.ports {
            let eps: Vec<(Endpoint, &RawEndpoint)> =
                raw.iter().map(|r| (endpoint(r, port), r)).collect();
            let name = format!("outbound|{}||{host}", port.number);
            let mut c = istio_cluster(&name, eps.iter().map(|(e, _)| e.clone()).collect());
            let mut port_origin = origin(None);
            if let Some(dr) = dr {
                port_origin = origin(Some((dr, Some(&c))));
                let g = dr.policy.on_port(port.number);
                g.apply(&mut c);
                if let Some(h) = g.hash() {
                    reg.hash.insert(name.clone(), h.clone());
                }
                for subset in &dr.subsets {
                    let sname = format!("outbound|{}|{}|{host}", port.number, subset.name);
                    let selected: Vec<Endpoint> = eps
                        .iter()
                        .filter(|(_, r)| r.labels.contains_all(&subset.labels))
                        .map(|(e, _)| e.clone())
                        .collect();
                    if selected.is_empty() && !eps.is_empty() {
                        let why = if eps.iter().all(|(_, r)| r.labels.is_empty()) {
                            "its endpoints (from DNS or Kubernetes endpoints) carry no labels; the subset is unresolvable until labelled endpoints (ServiceEntry endpoints or WorkloadEntries) are known"
                        } else {
                            "no endpoint has its labels"
                        };
                        dr.meta.cx(diags).warn(
                            "spec.subsets",
                            format!(
                                "subset `{}` of host {host} selects no endpoint: {why}",
                                subset.name
                            ),
                        );
                    }
                    let mut sc = istio_cluster(&sname, selected);
                    let mut g = dr.policy.on_port(port.number);
                    g.overlay(&subset.policy.on_port(port.number));
                    g.apply(&mut sc);
                    if let Some(h) = g.hash() {
                        reg.hash.insert(sname.clone(), h.clone());
                    }
                    let sname: Arc<str> = sname.into();
                    cluster_origins.insert(sname.clone(), origin(Some((dr, None))));
                    clusters.insert(sname, Arc::new(sc));
                }
            }
            let name: Arc<str> = name.into();
            cluster_origins.insert(name.clone(), port_origin);
            clusters.insert(name, Arc::new(c));
        }
    }

    // VirtualServices, now that references can be checked.
    let mut by_host: BTreeMap<String, Arc<VirtualService>> = BTreeMap::new();
    for (meta, spec) in res.virtual_services {
        let ctx = meta.ctx.clone();
        let cx = Cx { ctx: &ctx, diags };
        let Some(vs) = virtual_service::read(meta, Node::new(spec, "spec".into(), cx), &reg) else {
            continue;
        };
        let vs = Arc::new(vs);
        for (host, path) in &vs.hosts {
            if let Some(other) = by_host.get(host) {
                cx.error(
                    path,
                    format!("host {host} already has VirtualService {}", other.meta.name),
                );
                continue;
            }
            by_host.insert(host.clone(), vs.clone());
        }
    }

    // Listeners: one per service host × port, each with its origin for Sidecar scoping.
    let mut listeners = BTreeMap::new();
    let mut origins = BTreeMap::new();
    for (host, se) in &services {
        for port in &se.ports {
            let p = port.number;
            let target: Arc<str> = format!("{host}:{p}").into();
            let default_routes = || vec![default_route(&reg, &format!("outbound|{p}||{host}"))];
            let table = |routes: Vec<Route>| {
                VirtualHost::new(target.to_string(), domains(host, p), routes)
                    .and_then(|vh| RouteTable::new(p.to_string(), vec![vh]))
                    .map(Arc::new)
            };
            let cx = se.meta.cx(diags);
            let vs = by_host.get(host).filter(|vs| !vs.routes.is_empty());
            let routes = match vs {
                Some(vs) => vs
                    .routes
                    .iter()
                    .filter(|(only, _)| only.is_none_or(|o| o == p))
                    .map(|(_, r)| r.clone())
                    .collect(),
                None => default_routes(),
            };
            let routed_by = match vs.map(|vs| (vs, table(default_routes()))) {
                Some((vs, Ok(default_routes))) => Some(RoutedBy {
                    name: vs.meta.name.clone(),
                    namespace: vs.meta.namespace.clone(),
                    hosts: vs
                        .hosts
                        .iter()
                        .map(|(h, _)| Arc::from(h.as_str()))
                        .collect(),
                    export_to: vs.export_to.clone(),
                    default_routes,
                }),
                Some((_, Err(e))) => {
                    cx.error("spec.hosts", e.message());
                    None
                }
                None => None,
            };
            match table(routes) {
                Ok(table) => {
                    listeners.insert(target.clone(), table);
                }
                Err(e) => cx.error("spec.hosts", e.message()),
            }
            origins.insert(
                target,
                ListenerOrigin {
                    host: host.as_str().into(),
                    port: p,
                    namespace: se.meta.namespace.clone(),
                    registered: se.origin != Origin::Dns,
                    export_to: se.export_to.clone(),
                    routed_by,
                },
            );
        }
    }
    let visibility = Visibility {
        sidecars: res.sidecars.into(),
        origins,
        clusters: cluster_origins,
        root_namespace: DEFAULT_ROOT_NAMESPACE.into(),
    };

    let server = ServerPolicy {
        peer_authentication: res.peer_authentications.into(),
        authorization: res.authorization_policies.into(),
        fault: None,
        rate_limit: None,
        // Istio sets it mesh-wide in MeshConfig, which is not one of the loaded kinds.
        path_normalization: PathNormalizer::default(),
    };
    if !diags.borrow().errors.is_empty() {
        return None;
    }
    match MeshConfig::new(version, listeners, clusters, server) {
        Ok(c) => Some(c.with_visibility(visibility)),
        Err(e) => {
            let ctx = super::cursor::Ctx {
                file: "<all>".into(),
                document: 0,
                resource: None,
                positions: None,
            };
            Cx { ctx: &ctx, diags }.error("", e.message());
            None
        }
    }
}

/// A cluster with Istio's defaults: Envoy's, except circuit-breaker thresholds, which istiod
/// sets to the maximum so that only a DestinationRule limits concurrency.
fn istio_cluster(name: &str, endpoints: Vec<Endpoint>) -> Cluster {
    let mut c = Cluster::new(name, endpoints);
    c.breaker.max_connections = u32::MAX;
    c.breaker.max_pending_requests = u32::MAX;
    c.breaker.max_requests = u32::MAX;
    c.breaker.max_retries = u32::MAX;
    c
}

/// The route of a service without a VirtualService: everything to the port's cluster, with
/// Istio's default retries.
fn default_route(reg: &Registry, cluster: &str) -> Route {
    let mut fwd = Forward::to(WeightedClusters::single(cluster));
    fwd.retry = Some(Arc::new(virtual_service::default_retry()));
    fwd.hash_policy = virtual_service::hash_policy(reg, cluster);
    Route::new(RouteMatcher::default(), Action::Forward(Arc::new(fwd)))
}

/// The endpoints of a service host: its own, the WorkloadEntries it selects, or for DNS
/// resolution without either, the host name itself.
fn endpoints_of(se: &ServiceEntry, host: &str, res: &Resources<'_>) -> Vec<RawEndpoint> {
    if let Some(selector) = &se.selector {
        return res
            .workload_entries
            .iter()
            .filter(|we| {
                we.meta.namespace == se.meta.namespace && we.endpoint.labels.contains_all(selector)
            })
            .map(|we| we.endpoint.clone())
            .collect();
    }
    if se.endpoints.is_empty() && se.resolution == Resolution::Dns && !host.starts_with('*') {
        return vec![RawEndpoint {
            address: host.into(),
            ip: None,
            ports: Vec::new(),
            labels: crate::Labels::default(),
            weight: std::num::NonZeroU32::MIN,
            locality: crate::Locality::default(),
        }];
    }
    se.endpoints.clone()
}

fn endpoint(r: &RawEndpoint, port: &ServicePort) -> Endpoint {
    let mut e = Endpoint::new(r.address_for(port));
    e.weight = r.weight;
    e.locality = r.locality.clone();
    e.labels = r.labels.clone();
    e
}

/// The domains Istio generates for a service host: the host and its Kubernetes short forms,
/// each also with the port.
fn domains(host: &str, port: u16) -> Vec<Domain> {
    let mut names = vec![host.to_string()];
    if let Some(short) = host.strip_suffix(".svc.cluster.local")
        && let Some((name, ns)) = short.split_once('.')
        && !ns.contains('.')
    {
        names.push(format!("{name}.{ns}.svc"));
        names.push(format!("{name}.{ns}"));
        names.push(name.to_string());
    }
    let mut out = Vec::new();
    for n in names {
        for d in [format!("{n}:{port}"), n] {
            if let Ok(d) = Domain::parse(&d)
                && !out.contains(&d)
            {
                out.push(d);
            }
        }
    }
    out
}

/// Whether a VirtualService `spec` may route mesh traffic: its `gateways` are absent or name
/// `mesh`, or one of its matches names `mesh` in its own `gateways`.
fn may_apply_to_mesh(spec: &Value) -> bool {
    let names_mesh = |gateways: Option<&Value>| {
        gateways
            .and_then(Value::as_sequence)
            .is_some_and(|g| g.iter().any(|g| g.as_str() == Some("mesh")))
    };
    let gateways = spec.get("gateways");
    let bound = gateways
        .and_then(Value::as_sequence)
        .is_some_and(|g| !g.is_empty());
    if !bound || names_mesh(gateways) {
        return true;
    }
    let http = spec.get("http").and_then(Value::as_sequence);
    http.into_iter()
        .flatten()
        .filter_map(|h| h.get("match").and_then(Value::as_sequence))
        .flatten()
        .any(|m| names_mesh(m.get("gateways")))
}

/// Registers, for every host a VirtualService or DestinationRule names without a registry
/// entry, an entry resolved through DNS on the ports its destinations name: what a plain gRPC
/// channel to that name would do. Returns the hosts for which no port is known; policies
/// naming them are skipped with a warning.
fn dns_fallback(res: &mut Resources<'_>, diags: &RefCell<Diags>) -> BTreeSet<String> {
    let registered: BTreeSet<String> = res
        .service_entries
        .iter()
        .flat_map(|se| se.hosts.iter().map(|(h, _)| h.clone()))
        .collect();
    // Host → (the ports destinations name, the resource that first named it).
    let mut named: BTreeMap<String, (BTreeSet<u16>, Meta)> = BTreeMap::new();
    let mut note = |host: &str, port: Option<u16>, meta: &Meta| {
        if host.contains('*') || registered.contains(host) {
            return;
        }
        let entry = named
            .entry(host.to_string())
            .or_insert_with(|| (BTreeSet::new(), meta.clone()));
        entry.0.extend(port);
    };
    for (meta, spec) in &res.virtual_services {
        // A VirtualService for gateways only names hosts the mesh never routes to.
        if !may_apply_to_mesh(spec) {
            continue;
        }
        let ns = &meta.namespace;
        let strs = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_sequence)
                .map(|s| {
                    s.iter()
                        .filter_map(Value::as_str)
                        .map(|h| fqdn(h, ns))
                        .collect()
                })
                .unwrap_or_default()
        };
        for host in strs(spec.get("hosts")) {
            note(&host, None, meta);
        }
        let http = spec.get("http").and_then(Value::as_sequence);
        for h in http.into_iter().flatten() {
            let mut destinations: Vec<&Value> = Vec::new();
            let routes = h.get("route").and_then(Value::as_sequence);
            destinations.extend(
                routes
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.get("destination")),
            );
            destinations.extend(h.get("mirror"));
            let mirrors = h.get("mirrors").and_then(Value::as_sequence);
            destinations.extend(
                mirrors
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m.get("destination")),
            );
            for d in destinations {
                let Some(host) = d.get("host").and_then(Value::as_str) else {
                    continue;
                };
                let port = d
                    .get("port")
                    .and_then(|p| p.get("number"))
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0);
                note(&fqdn(host, ns), port, meta);
            }
        }
    }
    for dr in &res.destination_rules {
        note(&dr.host, None, &dr.meta);
    }
    let mut unresolvable = BTreeSet::new();
    for (host, (ports, meta)) in named {
        let cx = meta.cx(diags);
        if ports.is_empty() {
            cx.warn(
                "",
                format!(
                    "host {host} has no registry entry (no Kubernetes Service or ServiceEntry) and no destination names its port: its routes are skipped until one defines it"
                ),
            );
            unresolvable.insert(host);
            continue;
        }
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        cx.warn(
            "",
            format!(
                "host {host} has no registry entry (no Kubernetes Service or ServiceEntry): resolved through DNS on port {}, as a plain gRPC channel would",
                list.join(", ")
            ),
        );
        res.service_entries.push(ServiceEntry {
            meta,
            origin: Origin::Dns,
            hosts: vec![(host, String::new())],
            ports: ports
                .into_iter()
                .map(|number| ServicePort {
                    number,
                    name: String::new(),
                    target_port: None,
                })
                .collect(),
            resolution: Resolution::Dns,
            endpoints: Vec::new(),
            selector: None,
            export_to: ExportTo::All,
        });
    }
    unresolvable
}
