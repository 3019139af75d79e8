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
    precedence::{self, Merged},
    service_entry::{Origin, RawEndpoint, Resolution, ServiceEntry, ServicePort, fqdn},
    virtual_service::{self, Registry, VirtualService},
};
use crate::{
    Cluster, DEFAULT_ROOT_NAMESPACE, Endpoint, MeshConfig, PathNormalizer, RouteTable,
    ServerPolicy,
    route::{
        Action, Domain, Forward, HashSource, Route, RouteMatcher, VirtualHost, WeightedClusters,
    },
    sidecar::{
        self, ClusterOrigin, ExportTo, HostRules, ListenerOrigin, RoutedBy, RuleEntry, Visibility,
    },
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

    // DestinationRules by host, in load order.
    let mut rules: BTreeMap<&str, Vec<&DestinationRule>> = BTreeMap::new();
    for dr in &res.destination_rules {
        if !services.contains_key(&dr.host) {
            dr.meta.cx(diags).warn(
                "spec.host",
                format!(
                    "host {} is not a known service (no ServiceEntry), the rule has no effect",
                    dr.host
                ),
            );
            continue;
        }
        rules.entry(&dr.host).or_default().push(dr);
    }

    // Clusters, and what VirtualServices may refer to.
    let mut reg = Registry {
        unresolvable,
        ..Registry::default()
    };
    let mut clusters: BTreeMap<Arc<str>, Arc<Cluster>> = BTreeMap::new();
    let mut cluster_origins: BTreeMap<Arc<str>, ClusterOrigin> = BTreeMap::new();
    let mut host_rules: BTreeMap<Arc<str>, HostRules> = BTreeMap::new();
    for (host, se) in &services {
        reg.services
            .insert(host.clone(), se.ports.iter().map(|p| p.number).collect());
        let raw = endpoints_of(se, host, &res);
        let drs = rules
            .get(host.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        // A VirtualService may name a subset of any rule: the rule a workload gets decides
        // whether the subset's cluster exists for it.
        let mut subsets: Vec<String> = Vec::new();
        for dr in drs {
            warn_empty_subsets(dr, host, &raw, diags);
            for subset in &dr.subsets {
                if !subsets.contains(&subset.name) {
                    subsets.push(subset.name.clone());
                }
            }
        }
        if !drs.is_empty() {
            reg.subsets.insert(host.clone(), subsets);
        }
        let base = shape(host, se, &raw, None);
        let merged =
            precedence::consolidate(host, drs, &se.meta.namespace, DEFAULT_ROOT_NAMESPACE, diags);
        let entries: Vec<RuleEntry> = merged
            .iter()
            .map(|m| RuleEntry {
                index: m.index,
                namespace: m.namespace(),
                names: m.names(),
                export_to: m.export_to(),
                clusters: shape(host, se, &raw, Some(m))
                    .into_iter()
                    .map(|(n, c, _)| (n, c))
                    .collect(),
            })
            .collect();
        let hr = HostRules {
            service_namespace: se.meta.namespace.clone(),
            base: base
                .iter()
                .map(|(n, c, _)| (n.clone(), c.clone()))
                .collect(),
            entries: entries.into(),
        };
        // The un-narrowed configuration has the rule of the service's own namespace.
        let chosen = hr
            .unnarrowed(DEFAULT_ROOT_NAMESPACE)
            .and_then(|e| hr.entries.iter().position(|x| x == e))
            .and_then(|i| merged.get(i));
        let shaped = match chosen {
            Some(m) => shape(host, se, &raw, Some(m)),
            None => base,
        };
        for (name, cluster, hash) in shaped {
            if let Some(h) = hash {
                reg.hash.insert(name.to_string(), h);
            }
            cluster_origins.insert(
                name.clone(),
                ClusterOrigin {
                    host: host.as_str().into(),
                    service_namespace: se.meta.namespace.clone(),
                },
            );
            clusters.insert(name, cluster);
        }
        if !hr.entries.is_empty() {
            host_rules.insert(host.as_str().into(), hr);
        }
    }

    // VirtualServices, now that references can be checked; several may name one host.
    let mut by_host: BTreeMap<String, Vec<Arc<VirtualService>>> = BTreeMap::new();
    let mut first_path: BTreeMap<String, String> = BTreeMap::new();
    for (meta, spec) in res.virtual_services {
        let ctx = meta.ctx.clone();
        let cx = Cx { ctx: &ctx, diags };
        let Some(vs) = virtual_service::read(meta, Node::new(spec, "spec".into(), cx), &reg) else {
            continue;
        };
        let vs = Arc::new(vs);
        for (host, path) in &vs.hosts {
            let list = by_host.entry(host.clone()).or_default();
            if list.iter().any(|other| Arc::ptr_eq(other, &vs)) {
                continue;
            }
            first_path
                .entry(host.clone())
                .or_insert_with(|| path.clone());
            list.push(vs.clone());
        }
    }
    for (host, list) in &by_host {
        let path = first_path.get(host).map(String::as_str).unwrap_or_default();
        precedence::warn_virtual_services(host, path, list, diags);
    }

    // Listeners: one per service host × port, each with its origin for Sidecar scoping.
    let mut listeners = BTreeMap::new();
    let mut origins = BTreeMap::new();
    for (host, se) in &services {
        for port in &se.ports {
            let p = port.number;
            let target: Arc<str> = format!("{host}:{p}").into();
            let table = |routes: Vec<Route>| {
                VirtualHost::new(target.to_string(), domains(host, p), routes)
                    .and_then(|vh| RouteTable::new(p.to_string(), vec![vh]))
                    .map(Arc::new)
            };
            let cx = se.meta.cx(diags);
            let default_routes =
                match table(vec![default_route(&reg, &format!("outbound|{p}||{host}"))]) {
                    Ok(t) => t,
                    Err(e) => {
                        cx.error("spec.hosts", e.message());
                        continue;
                    }
                };
            let mut candidates = Vec::new();
            for vs in by_host.get(host).into_iter().flatten() {
                if vs.routes.is_empty() {
                    continue;
                }
                let routes = vs
                    .routes
                    .iter()
                    .filter(|(only, _)| only.is_none_or(|o| o == p))
                    .map(|(_, r)| r.clone())
                    .collect();
                match table(routes) {
                    Ok(routes) => candidates.push(RoutedBy {
                        name: vs.meta.name.clone(),
                        namespace: vs.meta.namespace.clone(),
                        hosts: vs
                            .hosts
                            .iter()
                            .map(|(h, _)| Arc::from(h.as_str()))
                            .collect(),
                        export_to: vs.export_to.clone(),
                        default_routes: default_routes.clone(),
                        routes,
                    }),
                    Err(e) => cx.error("spec.hosts", e.message()),
                }
            }
            let routed_by =
                sidecar::unnarrowed_virtual_service(&candidates, &se.meta.namespace).cloned();
            let served = routed_by
                .as_ref()
                .map_or_else(|| default_routes.clone(), |vs| vs.routes.clone());
            listeners.insert(target.clone(), served);
            origins.insert(
                target,
                ListenerOrigin {
                    host: host.as_str().into(),
                    port: p,
                    namespace: se.meta.namespace.clone(),
                    registered: se.origin != Origin::Dns,
                    export_to: se.export_to.clone(),
                    routed_by,
                    candidates: candidates.into(),
                },
            );
        }
    }
    let visibility = Visibility {
        sidecars: res.sidecars.into(),
        origins,
        clusters: cluster_origins,
        rules: host_rules,
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

/// The clusters of `host` (one per port, and with a rule one per subset and port) shaped by
/// `rule`, each with the hash its consistent-hash balancer needs.
fn shape(
    host: &str,
    se: &ServiceEntry,
    raw: &[RawEndpoint],
    rule: Option<&Merged<'_>>,
) -> Vec<(Arc<str>, Arc<Cluster>, Option<HashSource>)> {
    let mut out = Vec::new();
    for port in &se.ports {
        let eps: Vec<(Endpoint, &RawEndpoint)> =
            raw.iter().map(|r| (endpoint(r, port), r)).collect();
        let name = format!("outbound|{}||{host}", port.number);
        let mut c = istio_cluster(&name, eps.iter().map(|(e, _)| e.clone()).collect());
        let Some(rule) = rule else {
            out.push((name.into(), Arc::new(c), None));
            continue;
        };
        let policy = rule.policy();
        let g = policy.map(|p| p.on_port(port.number)).unwrap_or_default();
        g.apply(&mut c);
        out.push((name.into(), Arc::new(c), g.hash().cloned()));
        for subset in rule.subsets() {
            let sname = format!("outbound|{}|{}|{host}", port.number, subset.name);
            let selected: Vec<Endpoint> = eps
                .iter()
                .filter(|(_, r)| r.labels.contains_all(&subset.labels))
                .map(|(e, _)| e.clone())
                .collect();
            let mut sc = istio_cluster(&sname, selected);
            let mut g = policy.map(|p| p.on_port(port.number)).unwrap_or_default();
            g.overlay(&subset.policy.on_port(port.number));
            g.apply(&mut sc);
            out.push((sname.into(), Arc::new(sc), g.hash().cloned()));
        }
    }
    out
}

/// Warns about each subset of `dr` that selects no endpoint of `host`.
fn warn_empty_subsets(
    dr: &DestinationRule,
    host: &str,
    raw: &[RawEndpoint],
    diags: &RefCell<Diags>,
) {
    if raw.is_empty() {
        return;
    }
    for subset in &dr.subsets {
        if raw.iter().any(|r| r.labels.contains_all(&subset.labels)) {
            continue;
        }
        let why = if raw.iter().all(|r| r.labels.is_empty()) {
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
