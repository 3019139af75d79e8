//! Cross-resource assembly: services, clusters and listeners from the parsed resources.
//!
//! This is where references are resolved (VirtualService → service and subset, DestinationRule →
//! service, ServiceEntry → WorkloadEntry) and where Istio's naming is applied, so both sources
//! of configuration yield the same cluster and listener names.

use std::{cell::RefCell, collections::BTreeMap, sync::Arc};

use super::{
    Resources,
    cursor::{Cx, Diags, Node},
    destination_rule::DestinationRule,
    service_entry::{RawEndpoint, Resolution, ServiceEntry, ServicePort},
    virtual_service::{self, Registry, VirtualService},
};
use crate::{
    Cluster, Endpoint, MeshConfig, PathNormalizer, RouteTable, ServerPolicy,
    route::{Action, Domain, Forward, Route, RouteMatcher, VirtualHost, WeightedClusters},
};

/// Assembles the configuration; `None` when errors were reported.
pub(super) fn build(
    res: Resources<'_>,
    version: String,
    diags: &RefCell<Diags>,
) -> Option<MeshConfig> {
    // Services: host → (ServiceEntry, resolved endpoints).
    let mut services: BTreeMap<String, &ServiceEntry> = BTreeMap::new();
    for se in &res.service_entries {
        let cx = se.meta.cx(diags);
        for (host, path) in &se.hosts {
            if let Some(other) = services.get(host) {
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
    let mut reg = Registry::default();
    let mut clusters: BTreeMap<Arc<str>, Arc<Cluster>> = BTreeMap::new();
    for (host, se) in &services {
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
            if let Some(dr) = dr {
                let g = dr.policy.on_port(port.number);
                g.apply(&mut c);
                if let Some(h) = g.hash() {
                    reg.hash.insert(name.clone(), h.clone());
                }
                for subset in &dr.subsets {
                    let sname = format!("outbound|{}|{}|{host}", port.number, subset.name);
                    let selected = eps
                        .iter()
                        .filter(|(_, r)| r.labels.contains_all(&subset.labels))
                        .map(|(e, _)| e.clone())
                        .collect();
                    let mut sc = istio_cluster(&sname, selected);
                    let mut g = dr.policy.on_port(port.number);
                    g.overlay(&subset.policy.on_port(port.number));
                    g.apply(&mut sc);
                    if let Some(h) = g.hash() {
                        reg.hash.insert(sname.clone(), h.clone());
                    }
                    clusters.insert(sname.into(), Arc::new(sc));
                }
            }
            clusters.insert(name.into(), Arc::new(c));
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

    // Listeners: one per service host × port.
    let mut listeners = BTreeMap::new();
    for (host, se) in &services {
        for port in &se.ports {
            let p = port.number;
            let target = format!("{host}:{p}");
            let routes: Vec<Route> = match by_host.get(host) {
                Some(vs) if !vs.routes.is_empty() => vs
                    .routes
                    .iter()
                    .filter(|(only, _)| only.is_none_or(|o| o == p))
                    .map(|(_, r)| r.clone())
                    .collect(),
                _ => vec![default_route(&reg, &format!("outbound|{p}||{host}"))],
            };
            let cx = se.meta.cx(diags);
            let vh = VirtualHost::new(target.clone(), domains(host, p), routes)
                .and_then(|vh| RouteTable::new(p.to_string(), vec![vh]));
            match vh {
                Ok(table) => {
                    listeners.insert(Arc::from(target), Arc::new(table));
                }
                Err(e) => cx.error("spec.hosts", e.message()),
            }
        }
    }

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
        Ok(c) => Some(c),
        Err(e) => {
            let ctx = super::cursor::Ctx {
                file: "<all>".into(),
                document: 0,
                resource: None,
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
