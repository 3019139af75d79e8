//! VirtualService: ordered HTTP routes with matches, destinations and per-route policy.
//!
//! Each `http[]` entry becomes one [`Route`] per `match[]` entry (Istio ORs the matches), in
//! order, so first-match-wins is kept. References are checked here, against the services and
//! subsets already read, so a route never names a cluster that does not exist.

mod matching;
mod policy;

use std::{
    cell::Cell,
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use self::{
    matching::{MatchEntry, read_match},
    policy::{
        Rewrite, read_direct, read_fault, read_headers, read_percentage, read_redirect,
        read_retries, read_rewrite,
    },
};
use super::{
    Meta,
    cursor::{Node, Obj},
    service_entry::fqdn,
};
use crate::{
    Percentage, RetryOn, RetryPolicy,
    route::{
        Action, Forward, HashPolicy, HashSource, Mirror, PathRewrite, Route, RouteMatcher,
        WeightedCluster, WeightedClusters,
    },
    sidecar::ExportTo,
};

/// What a VirtualService may refer to.
#[derive(Debug, Default)]
pub(super) struct Registry {
    /// Service host → its ports.
    pub(super) services: BTreeMap<String, Vec<u16>>,
    /// Service host → subset names from its DestinationRule.
    pub(super) subsets: BTreeMap<String, Vec<String>>,
    /// Cluster name → the hash its consistent-hash load balancer needs.
    pub(super) hash: BTreeMap<String, HashSource>,
    /// Hosts with no registry entry and no known port: routes to them are skipped (a warning
    /// says why).
    pub(super) unresolvable: BTreeSet<String>,
}

/// A parsed VirtualService.
#[derive(Debug)]
pub(super) struct VirtualService {
    pub(super) meta: Meta,
    /// Service hosts, with the path each was read from.
    pub(super) hosts: Vec<(String, String)>,
    /// Routes in order, each with the only port it applies to (`match[].port`).
    pub(super) routes: Vec<(Option<u16>, Route)>,
    pub(super) export_to: ExportTo,
}

/// Istio's default retry policy, applied when a route says nothing about retries.
pub(super) fn default_retry() -> RetryPolicy {
    let mut r = RetryPolicy::new(
        2,
        RetryOn::CONNECT_FAILURE
            | RetryOn::REFUSED_STREAM
            | RetryOn::UNAVAILABLE
            | RetryOn::CANCELLED
            | RetryOn::RETRIABLE_STATUS_CODES,
    );
    r.retriable_status_codes = Arc::from([503]);
    r
}

/// The route hash policy for a cluster with consistent hashing.
pub(super) fn hash_policy(reg: &Registry, cluster: &str) -> Arc<[HashPolicy]> {
    match reg.hash.get(cluster) {
        Some(source) => Arc::from([HashPolicy {
            source: source.clone(),
            terminal: false,
        }]),
        None => Arc::from([]),
    }
}

struct Reader<'r> {
    reg: &'r Registry,
    ns: &'r str,
    /// A destination named an unresolvable host and was skipped.
    skipped: Cell<bool>,
    /// The VirtualService's own `gateways` include `mesh` (or are absent).
    for_mesh: bool,
}

/// Reads a VirtualService `spec`.
pub(super) fn read(meta: Meta, spec: Node<'_>, reg: &Registry) -> Option<VirtualService> {
    let cx = spec.cx;
    let errors = cx.error_count();
    let mut spec = spec.obj()?;
    // A VirtualService bound to gateways only (its `gateways` lack `mesh`) configures those
    // gateways, not sidecars: mesh traffic ignores it unless a match names `mesh` itself.
    let gateways = spec.str_list("gateways");
    let for_mesh = gateways.is_empty() || gateways.iter().any(|(_, g)| *g == "mesh");
    if !for_mesh {
        spec.warn(
            "gateways",
            "names only gateways, not `mesh`: its routes do not apply to mesh traffic \
             (except matches whose own `gateways` name `mesh`)",
        );
    }
    let r = Reader {
        reg,
        ns: &meta.namespace,
        skipped: Cell::new(false),
        for_mesh,
    };
    let mut hosts = Vec::new();
    for (path, h) in spec.str_list("hosts") {
        let host = fqdn(h, r.ns);
        if reg.unresolvable.contains(&host) {
            continue;
        }
        if !reg.services.contains_key(&host) {
            // A gateway's hosts are often external names no ServiceEntry defines.
            if !for_mesh {
                continue;
            }
            cx.error(
                &path,
                format!("host `{h}` ({host}) is not a known service: no ServiceEntry defines it"),
            );
            continue;
        }
        hosts.push((host, path));
    }
    if !spec.has("hosts") {
        spec.error("hosts", "at least one host is required");
    }
    spec.unsupported("tcp");
    spec.unsupported("tls");
    let export_to = super::read_export_to(&mut spec, r.ns, false);
    let mut routes = Vec::new();
    for n in spec.list("http") {
        if let Some(h) = n.obj() {
            r.read_http(h, &mut routes);
        }
    }
    drop(spec);
    if cx.error_count() != errors || (!for_mesh && routes.is_empty()) {
        return None;
    }
    Some(VirtualService {
        meta,
        hosts,
        routes,
        export_to,
    })
}

// === impl Reader ===

impl Reader<'_> {
    fn read_http(&self, mut h: Obj<'_>, out: &mut Vec<(Option<u16>, Route)>) {
        let cx = h.cx();
        let errors = cx.error_count();
        let name = h.str("name");
        let mut matches = Vec::new();
        for n in h.list("match") {
            if let Some(m) = n.obj() {
                matches.extend(read_match(m, self.for_mesh));
            }
        }
        // Without matches the route inherits the VirtualService's binding; an empty list left
        // by gateway-only matches must stay empty (no route), never widen to "match all".
        if !h.has("match") && self.for_mesh {
            matches.push(MatchEntry {
                name: None,
                matcher: RouteMatcher::default(),
                port: None,
                exact_uri: false,
            });
        }
        if matches.is_empty() && cx.error_count() == errors {
            // Every match is for gateways only: nothing here applies to mesh traffic, and its
            // destinations (often gateway-side names) are not checked.
            h.ignore_rest();
            return;
        }
        h.unsupported("delegate");
        h.unsupported("corsPolicy");
        h.unsupported("mirror_percent");
        h.unsupported("mirrorPercent");
        let (request_headers, response_headers) =
            h.obj("headers").map(read_headers).unwrap_or_default();
        let fault = h.obj("fault").and_then(read_fault).map(Arc::new);

        let actions = ["route", "redirect", "directResponse"]
            .iter()
            .filter(|k| h.has(k))
            .count();
        if actions != 1 {
            h.error_here(if actions == 0 {
                "one of route, redirect or directResponse is required"
            } else {
                "route, redirect and directResponse are mutually exclusive"
            });
        }
        let redirect = h.obj("redirect").and_then(read_redirect);
        let direct = h.obj("directResponse").and_then(read_direct);
        let forward = if h.has("route") {
            self.read_forward(&mut h)
        } else {
            for key in ["rewrite", "timeout", "retries", "mirror", "mirrors"] {
                if h.has(key) {
                    h.warn(key, "has no effect without route, ignored");
                }
            }
            h.skip("rewrite");
            h.skip("timeout");
            h.skip("retries");
            h.skip("mirror");
            h.skip("mirrors");
            h.skip("mirrorPercentage");
            None
        };
        drop(h);
        if cx.error_count() != errors {
            return;
        }
        for m in matches {
            let action = if let Some((fwd, rewrite)) = &forward {
                let mut fwd = fwd.clone();
                fwd.path_rewrite = match rewrite {
                    Some(Rewrite::Uri(uri)) if m.exact_uri => {
                        Some(PathRewrite::FullPath(uri.clone()))
                    }
                    Some(Rewrite::Uri(uri)) => Some(PathRewrite::Prefix(uri.clone())),
                    Some(Rewrite::Regex(re)) => Some(PathRewrite::Regex(re.clone())),
                    None => None,
                };
                Action::Forward(Arc::new(fwd))
            } else if let Some(r) = &redirect {
                Action::Redirect(Arc::new(r.clone()))
            } else if let Some(d) = &direct {
                Action::DirectResponse(Arc::new(d.clone()))
            } else {
                return;
            };
            let route_name = match (name, &m.name) {
                (Some(h), Some(m)) => Some(format!("{h}.{m}")),
                (Some(h), None) => Some(h.to_string()),
                (None, Some(m)) => Some(m.clone()),
                (None, None) => None,
            };
            let mut route = Route::new(m.matcher, action);
            route.name = route_name.map(Arc::from);
            route.request_headers = request_headers.clone();
            route.response_headers = response_headers.clone();
            route.fault = fault.clone();
            out.push((m.port, route));
        }
    }

    /// `route`, `rewrite`, `timeout`, `retries`, mirrors.
    fn read_forward(&self, h: &mut Obj<'_>) -> Option<(Forward, Option<Rewrite>)> {
        let cx = h.cx();
        let errors = cx.error_count();
        let route_path = h.at("route");
        let mut dests = Vec::new();
        let mut weights: Vec<u32> = Vec::new();
        for n in h.list("route") {
            let Some(mut d) = n.obj() else { continue };
            let cluster = d.obj("destination").and_then(|dst| self.destination(dst));
            let weight = d
                .node("weight")
                .and_then(|w| w.uint(u64::from(u32::MAX)))
                .and_then(|w| u32::try_from(w).ok());
            let (req, resp) = d.obj("headers").map(read_headers).unwrap_or_default();
            if let Some(c) = cluster {
                let mut wc = WeightedCluster::new(c, 0);
                wc.request_headers = req;
                wc.response_headers = resp;
                dests.push(wc);
                weights.push(weight.unwrap_or(0));
            }
        }
        // Weights are relative: "a destination will receive weight/(sum of all weights)
        // requests"; a lone destination receives everything, whatever its weight. A sum of 0
        // is refused by `WeightedClusters::new` below.
        if let [only] = dests.as_mut_slice() {
            only.weight = 100;
        } else {
            for (d, w) in dests.iter_mut().zip(&weights) {
                d.weight = *w;
            }
        }
        let first = dests.first().map(|d| d.name.to_string());
        let rewrite = h.obj("rewrite").and_then(read_rewrite);
        let timeout = h.duration("timeout").filter(|t| !t.is_zero());
        let retry = match h.obj("retries") {
            Some(r) => read_retries(r),
            None if h.has("retries") => None,
            None => Some(default_retry()),
        };
        let mut mirrors = Vec::new();
        if let Some(m) = h.obj("mirror") {
            let pct = h
                .obj("mirrorPercentage")
                .and_then(read_percentage)
                .unwrap_or(Percentage::HUNDRED);
            if let Some(c) = self.destination(m) {
                mirrors.push(Mirror {
                    cluster: c.into(),
                    percentage: pct,
                });
            }
        } else if h.has("mirrorPercentage") {
            h.skip("mirrorPercentage");
            h.warn("mirrorPercentage", "has no effect without mirror, ignored");
        }
        for n in h.list("mirrors") {
            let Some(mut m) = n.obj() else { continue };
            let pct = m
                .obj("percentage")
                .and_then(read_percentage)
                .unwrap_or(Percentage::HUNDRED);
            if !m.has("destination") {
                m.error("destination", "required field is missing");
            }
            if let Some(c) = m.obj("destination").and_then(|d| self.destination(d)) {
                mirrors.push(Mirror {
                    cluster: c.into(),
                    percentage: pct,
                });
            }
        }
        if cx.error_count() != errors || (dests.is_empty() && self.skipped.get()) {
            return None;
        }
        let clusters = match WeightedClusters::new(dests) {
            Ok(c) => c,
            Err(e) => {
                cx.error(&route_path, e.message());
                return None;
            }
        };
        let (path_rewrite, authority) = match rewrite {
            Some((p, a)) => (p, a),
            None => (None, None),
        };
        let mut fwd = Forward::to(clusters);
        fwd.authority_rewrite = authority;
        fwd.timeout = timeout;
        fwd.retry = retry.map(Arc::new);
        fwd.mirrors = mirrors.into();
        fwd.hash_policy = first
            .map(|c| hash_policy(self.reg, &c))
            .unwrap_or_else(|| Arc::from([]));
        Some((fwd, path_rewrite))
    }

    /// A `Destination`: the cluster name it selects, after checking host, subset and port.
    fn destination(&self, mut d: Obj<'_>) -> Option<String> {
        let host_raw = d.req_str("host")?;
        let host = fqdn(host_raw, self.ns);
        let subset = d.str("subset");
        let port = d.obj("port").and_then(|mut p| p.port("number"));
        if self.reg.unresolvable.contains(&host) {
            // Warned about once, where the host was found unresolvable.
            d.skip("subset");
            self.skipped.set(true);
            return None;
        }
        let Some(ports) = self.reg.services.get(&host) else {
            d.error(
                "host",
                format!(
                    "host `{host_raw}` ({host}) is not a known service: no ServiceEntry defines it"
                ),
            );
            return None;
        };
        let subset = match subset {
            Some(s) => {
                let known = self
                    .reg
                    .subsets
                    .get(&host)
                    .is_some_and(|subsets| subsets.iter().any(|x| x == s));
                if !known {
                    d.error(
                        "subset",
                        format!(
                            "unknown subset `{s}` of host {host}: no DestinationRule defines it"
                        ),
                    );
                    return None;
                }
                s
            }
            None => "",
        };
        let port = match (port, ports.as_slice()) {
            (Some(p), _) if ports.contains(&p) => p,
            (Some(p), _) => {
                d.error(
                    "port.number",
                    format!("port {p} is not a port of service {host}"),
                );
                return None;
            }
            (None, [only]) => *only,
            (None, _) => {
                d.error_here(format!(
                    "service {host} has several ports: port.number is required"
                ));
                return None;
            }
        };
        Some(format!("outbound|{port}|{subset}|{host}"))
    }
}
