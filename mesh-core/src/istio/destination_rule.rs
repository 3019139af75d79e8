//! DestinationRule: subsets and traffic policy (load balancing, connection pool, outlier
//! detection, upstream TLS).
//!
//! A traffic policy is kept as four optional field groups because that is Istio's merge unit:
//! a port-level setting replaces the top-level group of the same kind, and a subset's policy
//! replaces the DestinationRule's, group by group.

use std::{sync::Arc, time::Duration};

use super::{
    Meta,
    cursor::Obj,
    service_entry::{fqdn, read_labels},
};
use crate::{
    CertificateSource, Cluster, ConsecutiveRule, Labels, LbPolicy, OutlierDetection, Percentage,
    SanKind, SanMatcher, TcpKeepalive, TlsMode, UpstreamTls, lb::LocalityFailover,
    matcher::StringMatcher, route::HashSource, sidecar::ExportTo,
};

/// Istio's default ring size for consistent hashing.
const DEFAULT_MIN_RING_SIZE: u64 = 1024;
/// Envoy's cap on ring size.
const MAX_RING_SIZE: u64 = 8_388_608;

/// A parsed DestinationRule.
#[derive(Debug)]
pub(super) struct DestinationRule {
    pub(super) meta: Meta,
    pub(super) host: String,
    pub(super) policy: TrafficPolicy,
    /// Whether `trafficPolicy` is set: istiod merging rules of one namespace takes a later
    /// rule's policy only when the earlier has none.
    pub(super) has_policy: bool,
    pub(super) subsets: Vec<Subset>,
    pub(super) export_to: ExportTo,
}

/// One subset.
#[derive(Debug)]
pub(super) struct Subset {
    pub(super) name: String,
    pub(super) labels: Labels,
    pub(super) policy: TrafficPolicy,
}

/// A traffic policy with its per-port overrides.
#[derive(Clone, Debug, Default)]
pub(super) struct TrafficPolicy {
    pub(super) groups: Groups,
    pub(super) ports: Vec<(u16, Groups)>,
}

/// The field groups Istio merges as units.
#[derive(Clone, Debug, Default)]
pub(super) struct Groups {
    pub(super) lb: Option<Lb>,
    pub(super) pool: Option<Pool>,
    pub(super) outlier: Option<(OutlierDetection, Percentage)>,
    pub(super) tls: Option<UpstreamTls>,
}

/// `loadBalancer`.
#[derive(Clone, Debug)]
pub(super) struct Lb {
    pub(super) policy: LbPolicy,
    pub(super) hash: Option<HashSource>,
    pub(super) locality_weighted: bool,
    /// `failover` and `failoverPriority`; in effect only with outlier detection.
    pub(super) failover: LocalityFailover,
}

/// `connectionPool`.
#[derive(Clone, Debug, Default)]
pub(super) struct Pool {
    max_connections: Option<u32>,
    connect_timeout: Option<Duration>,
    max_pending_requests: Option<u32>,
    max_requests: Option<u32>,
    max_requests_per_connection: Option<u32>,
    max_retries: Option<u32>,
    idle_timeout: Option<Duration>,
    tcp_keepalive: Option<TcpKeepalive>,
}

/// Reads a DestinationRule `spec`.
pub(super) fn read(meta: Meta, mut spec: Obj<'_>) -> Option<DestinationRule> {
    let cx = spec.cx();
    let errors = cx.error_count();
    let host = spec.req_str("host").map(|h| fqdn(h, &meta.namespace));
    let policy = spec.obj("trafficPolicy").map(read_policy);
    let has_policy = policy.is_some();
    let policy = policy.unwrap_or_default();
    let mut subsets: Vec<Subset> = Vec::new();
    for n in spec.list("subsets") {
        let Some(mut s) = n.obj() else { continue };
        let Some(name) = s.req_str("name") else {
            continue;
        };
        if subsets.iter().any(|x| x.name == name) {
            s.error("name", format!("subset `{name}` is defined twice"));
            continue;
        }
        if name.contains('|') {
            s.error("name", "a subset name must not contain `|`");
            continue;
        }
        let labels = read_labels(&mut s, "labels").unwrap_or_default();
        let policy = s.obj("trafficPolicy").map(read_policy).unwrap_or_default();
        subsets.push(Subset {
            name: name.to_string(),
            labels,
            policy,
        });
    }
    let export_to = super::read_export_to(&mut spec, &meta.namespace, false);
    spec.unsupported("workloadSelector");
    drop(spec);
    if cx.error_count() != errors {
        return None;
    }
    Some(DestinationRule {
        meta,
        host: host?,
        policy,
        has_policy,
        subsets,
        export_to,
    })
}

fn read_policy(mut o: Obj<'_>) -> TrafficPolicy {
    let groups = read_groups(&mut o);
    let mut ports = Vec::new();
    for n in o.list("portLevelSettings") {
        let Some(mut p) = n.obj() else { continue };
        let number = p.obj("port").and_then(|mut port| port.port("number"));
        let g = read_groups(&mut p);
        match number {
            Some(number) => ports.push((number, g)),
            None => p.error("port", "a port number is required"),
        }
    }
    o.unsupported("tunnel");
    o.unsupported("proxyProtocol");
    o.unsupported("retryBudget");
    TrafficPolicy { groups, ports }
}

fn read_groups(o: &mut Obj<'_>) -> Groups {
    let g = Groups {
        lb: o.obj("loadBalancer").and_then(read_lb),
        pool: o.obj("connectionPool").map(read_pool),
        outlier: o.obj("outlierDetection").and_then(read_outlier),
        tls: o.obj("tls").and_then(read_tls),
    };
    let failover = g.lb.as_ref().map(|lb| &lb.failover);
    if g.outlier.is_none()
        && failover.is_some_and(|f| !f.regions.is_empty() || !f.priority_labels.is_empty())
    {
        o.warn(
            "loadBalancer.localityLbSetting",
            "failover and failoverPriority take effect only with outlierDetection in the same \
             policy, as in Istio (without it Envoy never fails over)",
        );
    }
    g
}

fn read_lb(mut o: Obj<'_>) -> Option<Lb> {
    let simple = o.enumeration(
        "simple",
        &[
            "UNSPECIFIED",
            "ROUND_ROBIN",
            "LEAST_REQUEST",
            "LEAST_CONN",
            "RANDOM",
            "PASSTHROUGH",
        ],
    );
    let mut policy = match simple {
        Some("LEAST_REQUEST" | "LEAST_CONN") => LbPolicy::least_request(2).ok()?,
        Some("RANDOM") => LbPolicy::Random,
        Some("PASSTHROUGH") => {
            o.warn(
                "simple",
                "PASSTHROUGH is not supported, round robin is used",
            );
            LbPolicy::RoundRobin
        }
        _ => LbPolicy::RoundRobin,
    };
    let mut hash = None;
    if let Some(mut ch) = o.obj("consistentHash") {
        if simple.is_some() {
            o.error(
                "consistentHash",
                "simple and consistentHash are mutually exclusive",
            );
        }
        hash = read_hash_source(&mut ch);
        let mut min = ch.u64("minimumRingSize");
        if let Some(mut rh) = ch.obj("ringHash") {
            min = rh.u64("minimumRingSize").or(min);
        }
        if ch.obj("maglev").is_some() {
            ch.warn("maglev", "maglev is not supported, ring hash is used");
        }
        let min = min.unwrap_or(DEFAULT_MIN_RING_SIZE);
        match LbPolicy::ring_hash(min, MAX_RING_SIZE.max(min)) {
            Ok(p) => policy = p,
            Err(e) => ch.error("minimumRingSize", e.message()),
        }
    }
    let mut locality_weighted = false;
    let mut failover = LocalityFailover::default();
    if let Some(mut l) = o.obj("localityLbSetting") {
        locality_weighted = l.bool("enabled").unwrap_or(true);
        failover = read_failover(&mut l);
    }
    o.unsupported("warmupDurationSecs");
    o.unsupported("warmup");
    Some(Lb {
        policy,
        hash,
        locality_weighted,
        failover,
    })
}

/// Reads `failover` and `failoverPriority` of a `localityLbSetting`; `distribute` is reported
/// (not supported) and, as istiod applies it instead of both, turns them off.
fn read_failover(l: &mut Obj<'_>) -> LocalityFailover {
    let mut regions: Vec<(Arc<str>, Arc<str>)> = Vec::new();
    for n in l.list("failover") {
        let Some(mut f) = n.obj() else { continue };
        let (Some(from), Some(to)) = (f.req_str("from"), f.req_str("to")) else {
            continue;
        };
        if from == to {
            f.error("to", format!("failover from `{from}` to the same region"));
            continue;
        }
        if regions.iter().any(|(r, _)| **r == *from) {
            f.warn(
                "from",
                format!(
                    "region `{from}` has an earlier failover entry, which istiod applies; ignored"
                ),
            );
            continue;
        }
        regions.push((from.into(), to.into()));
    }
    let mut priority_labels: Vec<crate::lb::PriorityLabel> = Vec::new();
    for (path, entry) in l.str_list("failoverPriority") {
        let (label, value) = match entry.split_once('=') {
            Some((label, value)) => (label, Some(Arc::from(value))),
            None => (entry, None),
        };
        if label.is_empty() {
            l.cx()
                .error(&path, "a failoverPriority entry needs a label name");
            continue;
        }
        priority_labels.push((label.into(), value));
    }
    if l.has("distribute") {
        l.warn(
            "distribute",
            "is not supported, ignored: endpoints are ranked by locality proximity (same \
             zone, then region, then anywhere) and by failover/failoverPriority",
        );
        for key in ["failover", "failoverPriority"] {
            if l.has(key) {
                l.warn(
                    key,
                    "is not applied: `distribute` is set, which istiod applies instead",
                );
            }
        }
        regions.clear();
        priority_labels.clear();
    }
    l.skip("distribute");
    LocalityFailover {
        regions: regions.into(),
        priority_labels: priority_labels.into(),
    }
}

fn read_hash_source(ch: &mut Obj<'_>) -> Option<HashSource> {
    let mut found = Vec::new();
    if let Some(n) = ch.node("httpHeaderName")
        && let Some(h) = n.str()
    {
        match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => found.push(HashSource::Header(name)),
            Err(_) => n.error(format!("`{h}` is not a valid header name")),
        }
    }
    if let Some(mut c) = ch.obj("httpCookie") {
        let name = c.req_str("name");
        // Istio passes `ttl` to Envoy as is: set, a request without the cookie gets one
        // generated (zero: a session cookie); unset, it is balanced without a hash.
        let ttl = c.duration("ttl");
        let path = c.str("path").map(str::to_string);
        c.unsupported("attributes");
        if let Some(name) = name {
            found.push(HashSource::Cookie {
                name: name.to_string(),
                ttl,
                path,
            });
        }
    }
    if ch.bool("useSourceIp") == Some(true) {
        found.push(HashSource::SourceIp);
    }
    if let Some(q) = ch.str("httpQueryParameterName") {
        found.push(HashSource::QueryParameter(q.to_string()));
    }
    if found.len() > 1 {
        ch.error_here("only one hash key may be set");
        return None;
    }
    if found.is_empty() {
        ch.error_here(
            "one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required",
        );
    }
    found.pop()
}

fn read_pool(mut o: Obj<'_>) -> Pool {
    let mut pool = Pool::default();
    // A field the data plane does not enforce is reported, with why, so a limit is never
    // silently absent.
    if let Some(mut tcp) = o.obj("tcp") {
        pool.max_connections = tcp.u32("maxConnections");
        pool.connect_timeout = tcp.duration("connectTimeout");
        pool.tcp_keepalive = tcp.obj("tcpKeepalive").map(|mut k| TcpKeepalive {
            time: k.duration("time"),
            interval: k.duration("interval"),
            probes: k.u32("probes"),
        });
        tcp.unsupported("maxConnectionDuration");
        tcp.unsupported("idleTimeout");
    }
    if let Some(mut h) = o.obj("http") {
        pool.max_pending_requests = h.u32("http1MaxPendingRequests");
        pool.max_requests = h.u32("http2MaxRequests");
        pool.max_requests_per_connection = h.u32("maxRequestsPerConnection");
        pool.max_retries = h.u32("maxRetries");
        pool.idle_timeout = h.duration("idleTimeout");
        if h.has("h2UpgradePolicy") {
            h.warn(
                "h2UpgradePolicy",
                "has no effect: a proxyless mesh always speaks HTTP/2 upstream",
            );
            h.skip("h2UpgradePolicy");
        }
        h.unsupported("useClientProtocol");
        h.unsupported("maxConcurrentStreams");
    }
    pool
}

fn read_outlier(mut o: Obj<'_>) -> Option<(OutlierDetection, Percentage)> {
    // Envoy's defaults, which Istio leaves in place for unset fields.
    let mut od = OutlierDetection::default();
    let enforced = |threshold: u32| {
        (threshold > 0).then_some(ConsecutiveRule {
            threshold,
            enforcing: Percentage::HUNDRED,
        })
    };
    if let Some(v) = o.u32("consecutive5xxErrors") {
        od.consecutive_5xx = enforced(v);
    }
    if let Some(v) = o.u32("consecutiveErrors") {
        o.warn(
            "consecutiveErrors",
            "deprecated: use consecutiveGatewayErrors (treated as such)",
        );
        od.consecutive_gateway_failure = enforced(v);
    }
    if let Some(v) = o.u32("consecutiveGatewayErrors") {
        od.consecutive_gateway_failure = enforced(v);
    }
    let split = o.bool("splitExternalLocalOriginErrors").unwrap_or(false);
    od.split_external_local_origin_errors = split;
    if let Some(v) = o.u32("consecutiveLocalOriginFailures") {
        if split {
            od.consecutive_local_origin_failure = enforced(v);
        } else {
            o.warn(
                "consecutiveLocalOriginFailures",
                "has no effect without splitExternalLocalOriginErrors, ignored",
            );
        }
    }
    if let Some(d) = o.duration("interval") {
        od.interval = d;
    }
    if let Some(d) = o.duration("baseEjectionTime") {
        od.base_ejection_time = d;
    }
    if let Some(n) = o.node("maxEjectionPercent")
        && let Some(v) = n.uint(100)
        && let Ok(p) = Percentage::from_percent(v as u32)
    {
        od.max_ejection_percent = p;
    }
    // Istio sets the cluster's panic threshold from minHealthPercent (default 0: panic mode
    // off) whenever outlier detection is configured.
    let mut panic = Percentage::ZERO;
    if let Some(n) = o.node("minHealthPercent")
        && let Some(v) = n.uint(100)
        && let Ok(p) = Percentage::from_percent(v as u32)
    {
        panic = p;
    }
    Some((od, panic))
}

fn read_tls(mut o: Obj<'_>) -> Option<UpstreamTls> {
    let cx = o.cx();
    let errors = cx.error_count();
    let mode = match o.enumeration("mode", &["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]) {
        Some("SIMPLE") => TlsMode::Simple,
        Some("MUTUAL") => TlsMode::Mutual,
        Some("ISTIO_MUTUAL") => TlsMode::IstioMutual,
        _ => TlsMode::Disable,
    };
    let cert = o.str("clientCertificate");
    let key = o.str("privateKey");
    let ca = o.str("caCertificates");
    let sni = o.str("sni").filter(|s| !s.is_empty()).map(str::to_string);
    let mut san_matchers = Vec::new();
    for (_, san) in o.str_list("subjectAltNames") {
        let kind = if san.starts_with("spiffe://") {
            SanKind::Uri
        } else {
            SanKind::Dns
        };
        san_matchers.push(SanMatcher {
            kind,
            matcher: StringMatcher::exact(san),
        });
    }
    if o.has("credentialName") {
        o.skip("credentialName");
        // Not an error: without the secret's files, MUTUAL is rejected below for lack of a
        // client certificate, and SIMPLE verifies against the mesh trust bundle, never less.
        o.warn(
            "credentialName",
            "credentialName (certificates from a Kubernetes secret) is not supported, ignored; use clientCertificate, privateKey and caCertificates",
        );
    }
    if o.bool("insecureSkipVerify") == Some(true) {
        o.error(
            "insecureSkipVerify",
            "insecureSkipVerify is rejected: it would disable server certificate verification",
        );
    }
    o.unsupported("caCrl");
    if mode == TlsMode::Mutual && (cert.is_none() || key.is_none()) {
        o.error_here("mode MUTUAL requires clientCertificate and privateKey");
    }
    drop(o);
    if cx.error_count() != errors {
        return None;
    }
    let client_certificate = match (mode, cert) {
        (TlsMode::Mutual | TlsMode::Simple, Some(c)) => Some(CertificateSource::Files {
            certificate: c.to_string(),
            private_key: key.map(str::to_string),
        }),
        _ => None,
    };
    Some(UpstreamTls {
        mode,
        sni,
        san_matchers: san_matchers.into(),
        client_certificate,
        trust_bundle: ca.map(|c| CertificateSource::Files {
            certificate: c.to_string(),
            private_key: None,
        }),
    })
}

// === impl TrafficPolicy ===

impl TrafficPolicy {
    /// The groups in effect on `port`: port-level groups replace top-level ones.
    pub(super) fn on_port(&self, port: u16) -> Groups {
        let mut g = self.groups.clone();
        if let Some((_, p)) = self.ports.iter().find(|(n, _)| *n == port) {
            g.overlay(p);
        }
        g
    }
}

// === impl Groups ===

impl Groups {
    /// Replaces each group `other` sets.
    pub(super) fn overlay(&mut self, other: &Groups) {
        if other.lb.is_some() {
            self.lb.clone_from(&other.lb);
        }
        if other.pool.is_some() {
            self.pool.clone_from(&other.pool);
        }
        if other.outlier.is_some() {
            self.outlier.clone_from(&other.outlier);
        }
        if other.tls.is_some() {
            self.tls.clone_from(&other.tls);
        }
    }

    /// The route hash policy the load balancer needs, if consistent hashing is configured.
    pub(super) fn hash(&self) -> Option<&HashSource> {
        self.lb.as_ref()?.hash.as_ref()
    }

    /// Applies the groups to a cluster built with Istio's defaults.
    pub(super) fn apply(&self, c: &mut Cluster) {
        if let Some(lb) = &self.lb {
            c.lb = lb.policy.clone();
            c.locality_weighted = lb.locality_weighted;
            // istiod applies failover only with outlier detection.
            c.locality_failover = if self.outlier.is_some() {
                lb.failover.clone()
            } else {
                LocalityFailover::default()
            };
        }
        if let Some(p) = &self.pool {
            let b = &mut c.breaker;
            b.max_connections = p.max_connections.unwrap_or(b.max_connections);
            b.max_pending_requests = p.max_pending_requests.unwrap_or(b.max_pending_requests);
            b.max_requests = p.max_requests.unwrap_or(b.max_requests);
            b.max_retries = p.max_retries.unwrap_or(b.max_retries);
            if let Some(t) = p.connect_timeout {
                c.connect_timeout = t;
            }
            // 0 is Istio's "unlimited".
            if let Some(n) = p.max_requests_per_connection {
                c.max_requests_per_connection = (n > 0).then_some(n);
            }
            // Unset keeps the default hour; 0 disables, as in Envoy.
            if let Some(t) = p.idle_timeout {
                c.idle_timeout = (!t.is_zero()).then_some(t);
            }
            if let Some(k) = p.tcp_keepalive {
                c.tcp_keepalive = Some(k);
            }
        }
        if let Some((od, panic)) = &self.outlier {
            c.outlier = Some(od.clone());
            c.panic_threshold = *panic;
        }
        if let Some(tls) = &self.tls {
            c.tls = tls.clone();
        }
    }
}
