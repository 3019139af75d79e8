//! VirtualService: ordered HTTP routes with matches, destinations and per-route policy.
//!
//! Each `http[]` entry becomes one [`Route`] per `match[]` entry (Istio ORs the matches), in
//! order, so first-match-wins is kept. References are checked here, against the services and
//! subsets already read, so a route never names a cluster that does not exist.

use std::{
    cell::Cell,
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use http::{HeaderName, HeaderValue};

use super::{
    Meta,
    cursor::{Node, Obj},
    service_entry::fqdn,
};
use crate::{
    AbortStatus, Backoff, FaultAbort, FaultDelay, FaultPolicy, GrpcCode, Labels, Percentage,
    RetryOn, RetryPolicy, SourceMatcher,
    matcher::{
        HeaderMatch, HeaderMatcher, PathMatch, PathMatcher, QueryParamMatcher, Regex, RegexRewrite,
        StringMatch, StringMatcher,
    },
    route::{
        Action, DirectResponse, Forward, HashPolicy, HashSource, HeaderMutations, Mirror,
        PathRewrite, Redirect, RedirectStatus, Route, RouteMatcher, WeightedCluster,
        WeightedClusters,
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

/// A string match before it is turned into a matcher.
enum Sm<'a> {
    Any,
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
}

/// One `match[]` entry.
struct MatchEntry {
    name: Option<String>,
    matcher: RouteMatcher,
    port: Option<u16>,
    exact_uri: bool,
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

/// A path rewrite before the match kind decides prefix or full-path.
enum Rewrite {
    Uri(String),
    Regex(RegexRewrite),
}

/// One `match[]` entry, or `None` when it is invalid or does not apply to mesh traffic.
/// `vs_for_mesh` is whether the VirtualService's own `gateways` include `mesh`; a match's own
/// `gateways` override them, as in Istio.
fn read_match(mut m: Obj<'_>, vs_for_mesh: bool) -> Option<MatchEntry> {
    let cx = m.cx();
    let errors = cx.error_count();
    let gateways = m.str_list("gateways");
    let for_mesh = if gateways.is_empty() {
        vs_for_mesh
    } else {
        let mesh = gateways.iter().any(|(_, g)| *g == "mesh");
        // In a gateway-only VirtualService the warning on `gateways` already says it.
        if !mesh && vs_for_mesh {
            m.warn(
                "gateways",
                "names only gateways, not `mesh`: this match never applies to mesh traffic",
            );
        }
        mesh
    };
    let source = read_source(&mut m);
    let name = m.str("name").map(str::to_string);
    let ignore_case = m.bool("ignoreUriCase").unwrap_or(false);
    let uri = m.node("uri").and_then(|n| string_match(&n));
    let exact_uri = matches!(uri, Some(Sm::Exact(_)));
    let path = match uri {
        None | Some(Sm::Any) => PathMatcher::any(),
        Some(Sm::Exact(s)) => PathMatcher::new(PathMatch::Exact(s.to_string()), ignore_case),
        Some(Sm::Prefix(s)) => PathMatcher::new(PathMatch::Prefix(s.to_string()), ignore_case),
        Some(Sm::Regex(s)) => match Regex::new(s) {
            Ok(re) => PathMatcher::new(PathMatch::Regex(re), ignore_case),
            Err(e) => {
                m.error("uri.regex", e.message());
                PathMatcher::any()
            }
        },
    };
    let method = m.node("method").and_then(|n| string_matcher(&n));
    let authority = m.node("authority").and_then(|n| string_matcher(&n));
    let mut headers = Vec::new();
    for (key, invert) in [("headers", false), ("withoutHeaders", true)] {
        let Some(mut hs) = m.obj(key) else { continue };
        for (name, n) in hs.entries() {
            let Ok(hn) = HeaderName::from_bytes(name.as_bytes()) else {
                n.error(format!("`{name}` is not a valid header name"));
                continue;
            };
            let kind = match string_match(&n) {
                None => continue,
                Some(Sm::Any) => HeaderMatch::Present(true),
                Some(sm) => match to_string_matcher(&n, sm) {
                    Some(s) => HeaderMatch::String(s),
                    None => continue,
                },
            };
            // `withoutHeaders` with a value means "no header with that value": a request
            // without the header qualifies, so a missing header is compared as empty. With
            // `{}` it means "the header is absent": Envoy's inverted presence match, which a
            // missing header satisfies on its own (compared as empty, it would be present).
            let missing_as_empty = invert && !matches!(kind, HeaderMatch::Present(_));
            match HeaderMatcher::new(hn, kind, invert) {
                Ok(hm) => headers.push(hm.with_treat_missing_as_empty(missing_as_empty)),
                Err(e) => n.error(e.message()),
            }
        }
    }
    let mut query = Vec::new();
    if let Some(mut qs) = m.obj("queryParams") {
        for (name, n) in qs.entries() {
            match string_match(&n) {
                None => {}
                Some(Sm::Any) => query.push(QueryParamMatcher::new(name, None)),
                Some(sm) => {
                    if let Some(s) = to_string_matcher(&n, sm) {
                        query.push(QueryParamMatcher::new(name, Some(s)));
                    }
                }
            }
        }
    }
    let port = m.port("port");
    m.unsupported("scheme");
    m.unsupported("statPrefix");
    drop(m);
    if cx.error_count() != errors || !for_mesh {
        return None;
    }
    Some(MatchEntry {
        name,
        matcher: RouteMatcher {
            path,
            headers: headers.into(),
            query: query.into(),
            method,
            authority,
            grpc_only: false,
            source,
        },
        port,
        exact_uri,
    })
}

/// `sourceNamespace` and `sourceLabels`: conditions on the calling workload, evaluated
/// against the local workload at request time; `None` when neither is set.
fn read_source(m: &mut Obj<'_>) -> Option<Arc<SourceMatcher>> {
    let namespace = m.str("sourceNamespace").map(Arc::from);
    let at = m.at("sourceLabels");
    let pairs = m.str_map("sourceLabels");
    let labels = match Labels::new(pairs) {
        Ok(labels) => labels,
        Err(e) => {
            m.cx().error(&at, e.message());
            Labels::default()
        }
    };
    if namespace.is_none() && labels.is_empty() {
        return None;
    }
    Some(Arc::new(SourceMatcher { namespace, labels }))
}

/// Istio's `StringMatch`: exactly one of `exact`, `prefix`, `regex`; `{}` is "any".
fn string_match<'a>(n: &Node<'a>) -> Option<Sm<'a>> {
    let mut o = n.obj()?;
    let exact = o.str("exact");
    let prefix = o.str("prefix");
    let regex = o.str("regex");
    let set = [exact.is_some(), prefix.is_some(), regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set > 1 {
        o.error_here("only one of exact, prefix or regex may be set");
        return None;
    }
    Some(match (exact, prefix, regex) {
        (Some(s), _, _) => Sm::Exact(s),
        (_, Some(s), _) => Sm::Prefix(s),
        (_, _, Some(s)) => Sm::Regex(s),
        _ => Sm::Any,
    })
}

fn to_string_matcher(n: &Node<'_>, sm: Sm<'_>) -> Option<StringMatcher> {
    Some(match sm {
        Sm::Any => return None,
        Sm::Exact(s) => StringMatcher::exact(s),
        Sm::Prefix(s) => StringMatcher::prefix(s),
        Sm::Regex(s) => match Regex::new(s) {
            Ok(re) => StringMatcher::new(StringMatch::Regex(re), false),
            Err(e) => {
                n.error(e.message());
                return None;
            }
        },
    })
}

fn string_matcher(n: &Node<'_>) -> Option<StringMatcher> {
    let sm = string_match(n)?;
    to_string_matcher(n, sm)
}

/// `{request: {set, add, remove}, response: {...}}`.
fn read_headers(mut o: Obj<'_>) -> (HeaderMutations, HeaderMutations) {
    let req = o.obj("request").map(read_mutations).unwrap_or_default();
    let resp = o.obj("response").map(read_mutations).unwrap_or_default();
    (req, resp)
}

fn read_mutations(mut o: Obj<'_>) -> HeaderMutations {
    let cx = o.cx();
    let pairs = |o: &mut Obj<'_>, key: &'static str| -> Vec<(HeaderName, HeaderValue)> {
        let path = o.at(key);
        let mut out = Vec::new();
        for (k, v) in o.str_map(key) {
            match (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(k), Ok(v)) => out.push((k, v)),
                (Err(_), _) => cx.error(&path, format!("`{k}` is not a valid header name")),
                (_, Err(_)) => cx.error(&path, format!("`{v}` is not a valid header value")),
            }
        }
        out
    };
    let set = pairs(&mut o, "set");
    let add = pairs(&mut o, "add");
    let mut remove = Vec::new();
    for (path, k) in o.str_list("remove") {
        match HeaderName::from_bytes(k.as_bytes()) {
            Ok(k) => remove.push(k),
            Err(_) => cx.error(&path, format!("`{k}` is not a valid header name")),
        }
    }
    HeaderMutations {
        set: set.into(),
        add: add.into(),
        remove: remove.into(),
    }
}

/// `{value: 12.5}` (Istio's `Percent`).
fn read_percentage(mut o: Obj<'_>) -> Option<Percentage> {
    let n = o.node("value")?;
    let v = n.f64()?;
    match Percentage::from_percent_f64(v) {
        Ok(p) => Some(p),
        Err(e) => {
            n.error(e.message());
            None
        }
    }
}

/// A fault's share: `percentage.value`, else the deprecated integer `percent`, else 100 %.
fn fault_percentage(o: &mut Obj<'_>) -> Percentage {
    if let Some(p) = o.obj("percentage") {
        return read_percentage(p).unwrap_or(Percentage::HUNDRED);
    }
    if let Some(n) = o.node("percent")
        && let Some(v) = n.uint(100)
    {
        return Percentage::from_percent(v as u32).unwrap_or(Percentage::HUNDRED);
    }
    Percentage::HUNDRED
}

fn read_fault(mut o: Obj<'_>) -> Option<FaultPolicy> {
    let cx = o.cx();
    let errors = cx.error_count();
    let mut fault = FaultPolicy::default();
    if let Some(mut d) = o.obj("delay") {
        let percentage = fault_percentage(&mut d);
        d.unsupported("exponentialDelay");
        match d.duration("fixedDelay") {
            Some(duration) => {
                fault.delay = Some(FaultDelay {
                    duration,
                    percentage,
                })
            }
            None if !d.has("fixedDelay") => d.error("fixedDelay", "required field is missing"),
            None => {}
        }
    }
    if let Some(mut a) = o.obj("abort") {
        let percentage = fault_percentage(&mut a);
        a.unsupported("http2Error");
        let status = if let Some(n) = a.node("httpStatus") {
            n.uint(u64::from(u16::MAX))
                .and_then(|s| match AbortStatus::http(s as u16) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        n.error(e.message());
                        None
                    }
                })
        } else if let Some(n) = a.node("grpcStatus") {
            n.str().and_then(|s| match s.parse::<GrpcCode>() {
                Ok(c) => Some(AbortStatus::Grpc(c)),
                Err(e) => {
                    n.error(e.message());
                    None
                }
            })
        } else {
            a.error_here("httpStatus or grpcStatus is required");
            None
        };
        if let Some(status) = status {
            fault.abort = Some(FaultAbort { status, percentage });
        }
    }
    drop(o);
    (cx.error_count() == errors).then_some(fault)
}

fn read_retries(mut o: Obj<'_>) -> Option<RetryPolicy> {
    let attempts = o.u32("attempts").unwrap_or(0);
    let per_try = o.duration("perTryTimeout").filter(|t| !t.is_zero());
    let mut policy = default_retry();
    if let Some(n) = o.node("retryOn")
        && let Some(s) = n.str()
    {
        match RetryOn::parse(s) {
            Ok((on, codes)) => {
                policy.retry_on = on;
                policy.retriable_status_codes = codes.into();
            }
            Err(e) => n.error(e.message()),
        }
    }
    // Istio maps this onto Envoy's `previous_priorities` retry priority, which needs a
    // locality-aware balancer; the mesh balances without localities, so it says so.
    if o.bool("retryRemoteLocalities") == Some(true) {
        o.warn("retryRemoteLocalities", "is not supported, ignored");
    }
    // Istio's `backoff` is Envoy's `retry_back_off.base_interval`; the max is Envoy's default
    // of 10 × base.
    if let Some(n) = o.node("backoff")
        && let Some(base) = n.duration()
    {
        match Backoff::with_base(base) {
            Ok(backoff) => policy.backoff = backoff,
            Err(e) => n.error(e.message()),
        }
    }
    // Istio: `true` keeps Envoy's `previous_hosts` predicate (its default), `false` drops it.
    if let Some(prefer_other) = o.bool("retryIgnorePreviousHosts") {
        policy.prefer_other_endpoint = prefer_other;
    }
    if attempts == 0 {
        return None;
    }
    policy.max_retries = attempts;
    policy.per_try_timeout = per_try;
    Some(policy)
}

fn read_redirect(mut o: Obj<'_>) -> Option<Redirect> {
    let cx = o.cx();
    let errors = cx.error_count();
    let path = o.str("uri").map(|u| PathRewrite::FullPath(u.to_string()));
    let host = o.str("authority").map(str::to_string);
    let port = o.port("port");
    let scheme = o.str("scheme").map(str::to_string);
    o.unsupported("derivePort");
    let status = match o.node("redirectCode") {
        Some(n) => n
            .uint(u64::from(u16::MAX))
            .and_then(|c| match RedirectStatus::new(c as u16) {
                Ok(s) => Some(s),
                Err(e) => {
                    n.error(e.message());
                    None
                }
            }),
        None => Some(RedirectStatus::default()),
    };
    drop(o);
    if cx.error_count() != errors {
        return None;
    }
    Some(Redirect {
        scheme,
        host,
        port,
        path,
        strip_query: false,
        status: status?,
    })
}

fn read_direct(mut o: Obj<'_>) -> Option<DirectResponse> {
    let status_node = o.node("status");
    let mut body = None;
    if let Some(mut b) = o.obj("body") {
        body = b.str("string").map(Arc::from);
        b.unsupported("bytes");
    }
    let Some(n) = status_node else {
        o.error("status", "required field is missing");
        return None;
    };
    let status = n.uint(u64::from(u16::MAX))?;
    match DirectResponse::new(status as u16, body) {
        Ok(d) => Some(d),
        Err(e) => {
            n.error(e.message());
            None
        }
    }
}

/// `rewrite`: the path rewrite and the authority rewrite.
fn read_rewrite(mut o: Obj<'_>) -> Option<(Option<Rewrite>, Option<HeaderValue>)> {
    let cx = o.cx();
    let errors = cx.error_count();
    let uri = o.str("uri");
    let authority = o.node("authority").and_then(|n| {
        let s = n.str()?;
        match HeaderValue::from_str(s) {
            Ok(v) => Some(v),
            Err(_) => {
                n.error(format!("`{s}` is not a valid authority"));
                None
            }
        }
    });
    let mut regex = None;
    if let Some(mut r) = o.obj("uriRegexRewrite") {
        let pattern = r.req_str("match");
        let rewrite = r.req_str("rewrite");
        if let (Some(p), Some(s)) = (pattern, rewrite) {
            match RegexRewrite::new(p, s) {
                Ok(re) => regex = Some(re),
                Err(e) => r.error("match", e.message()),
            }
        }
    }
    if uri.is_some() && o.has("uriRegexRewrite") {
        o.error_here("uri and uriRegexRewrite are mutually exclusive");
    }
    drop(o);
    if cx.error_count() != errors {
        return None;
    }
    let path = match (uri, regex) {
        (Some(u), _) => Some(Rewrite::Uri(u.to_string())),
        (None, Some(re)) => Some(Rewrite::Regex(re)),
        (None, None) => None,
    };
    Some((path, authority))
}
