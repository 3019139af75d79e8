//! A [`Cluster`] as an EDS `Cluster`: load balancing, circuit breakers, outlier detection,
//! connection options and upstream TLS.
//!
//! Load balancing uses the `lb_policy` enum as istiod does, except weighted random, which
//! gRPC does not implement: it goes in `load_balancing_policy` as `[random, round_robin]`, so
//! gRPC (which takes the first policy it knows) falls back to round robin while this mesh's
//! decoder takes random. Locality weighting is `common_lb_config.locality_weighted_lb_config`.
//!
//! [`encode_istiod`] writes only what istiod's `grpcgen/cds.go` writes (see the module docs
//! of [`super`] for the two deviations).

// istiod still sends the deprecated-but-read fields; we write the current ones only.
use std::{collections::HashMap, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster as PbCluster, LoadBalancingPolicy, OutlierDetection as PbOutlier,
                UpstreamConnectionOptions,
                circuit_breakers::{Thresholds, thresholds::RetryBudget as PbRetryBudget},
                cluster::{
                    self, ClusterDiscoveryType, CommonLbConfig, DiscoveryType, EdsClusterConfig,
                    LbConfig, LeastRequestLbConfig, RingHashLbConfig, common_lb_config,
                    ring_hash_lb_config::HashFunction,
                },
                load_balancing_policy::Policy,
            },
            core::v3::{
                self as core, DataSource, RoutingPriority, TcpKeepalive as PbTcpKeepalive,
                TransportSocket, TypedExtensionConfig, data_source, transport_socket,
            },
        },
        extensions::{
            load_balancing_policies::{
                least_request::v3::LeastRequest as LeastRequestPolicy, random::v3::Random,
                round_robin::v3::RoundRobin,
            },
            transport_sockets::tls::v3::{
                CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
                SubjectAltNameMatcher, TlsCertificate, UpstreamTlsContext,
                common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
            },
            upstreams::http::v3::HttpProtocolOptions,
        },
        r#type::v3::Percent,
    },
    google::protobuf::UInt32Value,
};
use mesh_core::{
    CertificateSource, Cluster, ConsecutiveRule, LbPolicy, OutlierDetection, Percentage, SanKind,
    SanMatcher, TlsMode, UpstreamTls,
    matcher::{StringMatch, StringMatcher},
};

use super::{any, canonical_lb, canonical_mode, listener::ads, route};

/// The certificate-provider instance istiod names for proxyless gRPC's workload identity.
pub const WORKLOAD_PROVIDER: &str = "default";
/// The workload certificate's name in [`WORKLOAD_PROVIDER`].
pub const WORKLOAD_CERTIFICATE: &str = "default";
/// The mesh trust bundle's name in [`WORKLOAD_PROVIDER`].
pub const ROOT_CA_CERTIFICATE: &str = "ROOTCA";

/// The key of the upstream HTTP options in `typed_extension_protocol_options`.
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The TLS transport socket's conventional name.
pub(super) const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

pub(super) fn encode(c: &Cluster) -> PbCluster {
    let (lb_policy, lb_config, load_balancing_policy) = lb(&c.lb);
    let b = &c.breaker;
    let thresholds = Thresholds {
        priority: RoutingPriority::Default as i32,
        max_connections: Some(u32v(b.max_connections)),
        max_pending_requests: Some(u32v(b.max_pending_requests)),
        max_requests: Some(u32v(b.max_requests)),
        max_retries: Some(u32v(b.max_retries)),
        retry_budget: b.retry_budget.map(|rb| PbRetryBudget {
            budget_percent: Some(percent(rb.budget_percent)),
            min_retry_concurrency: Some(u32v(rb.min_retry_concurrency)),
            budget_interval: None,
        }),
        ..Thresholds::default()
    };
    let protocol = HttpProtocolOptions {
        common_http_protocol_options: Some(core::HttpProtocolOptions {
            // 0 disables the idle timeout; unset would be Envoy's hour.
            idle_timeout: Some(route::duration(c.idle_timeout.unwrap_or_default())),
            max_requests_per_connection: c.max_requests_per_connection.map(u32v),
            ..core::HttpProtocolOptions::default()
        }),
        ..HttpProtocolOptions::default()
    };
    PbCluster {
        name: c.name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: c.name.to_string(),
        }),
        connect_timeout: Some(route::duration(c.connect_timeout)),
        lb_policy: lb_policy as i32,
        lb_config,
        load_balancing_policy,
        circuit_breakers: Some(
            envoy_types::pb::envoy::config::cluster::v3::CircuitBreakers {
                thresholds: vec![thresholds],
                ..Default::default()
            },
        ),
        outlier_detection: c.outlier.as_ref().map(outlier),
        common_lb_config: Some(CommonLbConfig {
            healthy_panic_threshold: Some(percent(c.panic_threshold)),
            locality_config_specifier: c.locality_weighted.then_some(
                common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    common_lb_config::LocalityWeightedLbConfig {},
                ),
            ),
            ..CommonLbConfig::default()
        }),
        typed_extension_protocol_options: HashMap::from([(
            HTTP_PROTOCOL_OPTIONS.to_string(),
            any(&protocol),
        )]),
        transport_socket: transport_socket(&c.tls),
        upstream_connection_options: c.tcp_keepalive.map(|k| UpstreamConnectionOptions {
            tcp_keepalive: Some(PbTcpKeepalive {
                keepalive_probes: k.probes.map(u32v),
                keepalive_time: k.time.map(whole_seconds),
                keepalive_interval: k.interval.map(whole_seconds),
            }),
            ..UpstreamConnectionOptions::default()
        }),
        ..PbCluster::default()
    }
}

/// Envoy's keepalive fields are whole seconds: a fraction rounds up, never to 0.
fn whole_seconds(d: Duration) -> UInt32Value {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32v(u32::try_from(secs.max(1)).unwrap_or(u32::MAX))
}

/// The cluster as istiod's `grpcgen` writes it for a DestinationRule, or `None` when its TLS
/// uses certificate files: istiod would send it without TLS (plaintext) and gRPC NACKs
/// file-based TLS, so it is not sent at all.
pub(super) fn encode_istiod(c: &Cluster) -> Option<PbCluster> {
    if !tls_from_providers(&c.tls) {
        return None;
    }
    let (lb_policy, lb_config, load_balancing_policy) = istiod_lb(&c.lb);
    // istiod translates only `http2MaxRequests` (gRFC A32); unlimited is no breaker at all.
    let circuit_breakers = (c.breaker.max_requests != u32::MAX).then(|| {
        envoy_types::pb::envoy::config::cluster::v3::CircuitBreakers {
            thresholds: vec![Thresholds {
                max_requests: Some(u32v(c.breaker.max_requests)),
                ..Thresholds::default()
            }],
            ..Default::default()
        }
    });
    Some(PbCluster {
        name: c.name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: c.name.to_string(),
        }),
        lb_policy: lb_policy as i32,
        lb_config,
        load_balancing_policy,
        circuit_breakers,
        transport_socket: transport_socket(&c.tls),
        ..PbCluster::default()
    })
}

/// What [`Shape::Istiod`](super::Shape::Istiod) sends a gRPC client for a cluster, and what
/// it leaves out, in words (for `mesh-xds check --explain`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IstiodView {
    /// What the cluster resource carries.
    pub sent: Vec<String>,
    /// What the configuration says and istiod does not send a gRPC client.
    pub dropped: Vec<String>,
}

/// What istiod would send a gRPC client for `c`, and what it would drop (the words follow
/// what [`encode`](super::encode) writes).
pub fn istiod_view(c: &Cluster) -> IstiodView {
    let mut view = IstiodView::default();
    if !tls_from_providers(&c.tls) {
        view.dropped.push(
            "TLS with certificate files (DestinationRule SIMPLE/MUTUAL): istiod sends the \
             cluster without TLS, i.e. plaintext; `mesh-xds serve` does not send the cluster at \
             all (calls to it fail) unless --mesh-extensions"
                .into(),
        );
    } else {
        view.sent.push(match c.tls.mode {
            TlsMode::Disable => "TLS: none (plaintext)".into(),
            _ => format!(
                "TLS: certificate providers ({WORKLOAD_PROVIDER}/{WORKLOAD_CERTIFICATE}, \
                 {WORKLOAD_PROVIDER}/{ROOT_CA_CERTIFICATE}), as istiod sends ISTIO_MUTUAL"
            ),
        });
    }
    let least_request = |choice_count: u32| {
        format!(
            "load balancer: least request of {choice_count}, as load_balancing_policy \
             [least_request, round_robin] (istiod's LEAST_REQUEST enum is NACKed by gRPC \
             C-core and grpc-js)"
        )
    };
    view.sent.push(match &c.lb {
        LbPolicy::RoundRobin => "load balancer: round robin".into(),
        LbPolicy::Random => {
            view.dropped
                .push("weighted random load balancing (round robin instead)".into());
            "load balancer: round robin".into()
        }
        LbPolicy::LeastRequest { choice_count } => least_request(*choice_count),
        LbPolicy::RingHash { min_ring_size, .. } => {
            format!("load balancer: ring hash, minimum ring size {min_ring_size}")
        }
        LbPolicy::PeakEwma { .. } => {
            view.dropped
                .push("peak EWMA load balancing (least request instead)".into());
            least_request(2)
        }
    });
    let b = &c.breaker;
    if b.max_requests != u32::MAX {
        view.sent.push(format!(
            "circuit breaker: max requests {} (http2MaxRequests)",
            b.max_requests
        ));
    }
    let mut limits = Vec::new();
    for (name, value) in [
        ("maxConnections", b.max_connections),
        ("http1MaxPendingRequests", b.max_pending_requests),
        ("maxRetries", b.max_retries),
    ] {
        if value != u32::MAX {
            limits.push(format!("{name} {value}"));
        }
    }
    if b.retry_budget.is_some() {
        limits.push("retryBudget".into());
    }
    if let Some(n) = c.max_requests_per_connection {
        limits.push(format!("maxRequestsPerConnection {n}"));
    }
    let defaults = Cluster::new(c.name.to_string(), Vec::new());
    if c.idle_timeout != defaults.idle_timeout {
        limits.push(match c.idle_timeout {
            Some(t) => format!("idleTimeout {t:?}"),
            None => "idleTimeout 0s".into(),
        });
    }
    if c.tcp_keepalive.is_some() {
        limits.push("tcpKeepalive".into());
    }
    if c.connect_timeout != defaults.connect_timeout {
        limits.push(format!("connectTimeout {:?}", c.connect_timeout));
    }
    if !limits.is_empty() {
        view.dropped.push(format!(
            "connection-pool limits other than http2MaxRequests: {}",
            limits.join(", ")
        ));
    }
    if c.outlier.is_some() {
        view.dropped.push("outlierDetection".into());
    }
    if c.panic_threshold != defaults.panic_threshold || c.locality_weighted {
        view.dropped
            .push("panic threshold and locality-weighted balancing settings".into());
    }
    view
}

/// Whether `tls` is off or needs no certificate file: what gRPC accepts (certificate provider
/// instances, as istiod sends for ISTIO_MUTUAL).
pub(super) fn tls_from_providers(tls: &UpstreamTls) -> bool {
    let tls = canonical_tls(tls);
    ![&tls.client_certificate, &tls.trust_bundle]
        .into_iter()
        .any(|source| matches!(source, Some(CertificateSource::Files { .. })))
}

/// The load balancer as istiod writes it, except least request (see the module docs of
/// [`super`]); weighted random, which istiod does not translate, is round robin.
fn istiod_lb(
    policy: &LbPolicy,
) -> (
    cluster::LbPolicy,
    Option<LbConfig>,
    Option<LoadBalancingPolicy>,
) {
    use cluster::LbPolicy as P;
    match canonical_lb(policy) {
        LbPolicy::RoundRobin | LbPolicy::Random | LbPolicy::PeakEwma { .. } => {
            (P::RoundRobin, None, None)
        }
        LbPolicy::LeastRequest { choice_count } => (
            P::LoadBalancingPolicyConfig,
            None,
            Some(LoadBalancingPolicy {
                policies: vec![
                    lb_extension(
                        "envoy.load_balancing_policies.least_request",
                        any(&LeastRequestPolicy {
                            choice_count: Some(u32v(choice_count)),
                            ..LeastRequestPolicy::default()
                        }),
                    ),
                    lb_extension(
                        "envoy.load_balancing_policies.round_robin",
                        any(&RoundRobin::default()),
                    ),
                ],
            }),
        ),
        // istiod writes the minimum ring size only.
        LbPolicy::RingHash { min_ring_size, .. } => (
            P::RingHash,
            Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                minimum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value {
                    value: min_ring_size,
                }),
                ..RingHashLbConfig::default()
            })),
            None,
        ),
    }
}

fn lb_extension(name: &str, config: envoy_types::pb::google::protobuf::Any) -> Policy {
    Policy {
        typed_extension_config: Some(TypedExtensionConfig {
            name: name.to_string(),
            typed_config: Some(config),
        }),
    }
}

fn lb(
    policy: &LbPolicy,
) -> (
    cluster::LbPolicy,
    Option<LbConfig>,
    Option<LoadBalancingPolicy>,
) {
    use cluster::LbPolicy as P;
    match canonical_lb(policy) {
        LbPolicy::RoundRobin | LbPolicy::PeakEwma { .. } => (P::RoundRobin, None, None),
        LbPolicy::LeastRequest { choice_count } => (
            P::LeastRequest,
            Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
                choice_count: Some(u32v(choice_count)),
                ..LeastRequestLbConfig::default()
            })),
            None,
        ),
        LbPolicy::RingHash {
            min_ring_size,
            max_ring_size,
        } => (
            P::RingHash,
            Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
                minimum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value {
                    value: min_ring_size,
                }),
                maximum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value {
                    value: max_ring_size,
                }),
                hash_function: HashFunction::XxHash as i32,
            })),
            None,
        ),
        LbPolicy::Random => (
            P::LoadBalancingPolicyConfig,
            None,
            Some(LoadBalancingPolicy {
                policies: vec![
                    lb_extension(
                        "envoy.load_balancing_policies.random",
                        any(&Random::default()),
                    ),
                    lb_extension(
                        "envoy.load_balancing_policies.round_robin",
                        any(&RoundRobin::default()),
                    ),
                ],
            }),
        ),
    }
}

fn outlier(od: &OutlierDetection) -> PbOutlier {
    let rule = |r: &Option<ConsecutiveRule>| match r {
        Some(r) => (Some(u32v(r.threshold)), Some(whole_percent(r.enforcing))),
        None => (None, Some(u32v(0))),
    };
    let (c5, e5) = rule(&od.consecutive_5xx);
    let (cg, eg) = rule(&od.consecutive_gateway_failure);
    let (cl, el) = if od.split_external_local_origin_errors {
        rule(&od.consecutive_local_origin_failure)
    } else {
        (None, None)
    };
    let sr = od.success_rate.as_ref();
    let fp = od.failure_percentage.as_ref();
    PbOutlier {
        consecutive_5xx: c5,
        enforcing_consecutive_5xx: e5,
        consecutive_gateway_failure: cg,
        enforcing_consecutive_gateway_failure: eg,
        split_external_local_origin_errors: od.split_external_local_origin_errors,
        consecutive_local_origin_failure: cl,
        enforcing_consecutive_local_origin_failure: el,
        enforcing_success_rate: Some(sr.map_or(u32v(0), |r| whole_percent(r.enforcing))),
        success_rate_stdev_factor: sr.map(|r| u32v(r.stdev_factor_milli)),
        success_rate_minimum_hosts: sr.map(|r| u32v(r.minimum_hosts)),
        success_rate_request_volume: sr.map(|r| u32v(r.request_volume)),
        enforcing_failure_percentage: Some(fp.map_or(u32v(0), |r| whole_percent(r.enforcing))),
        failure_percentage_threshold: fp.map(|r| whole_percent(r.threshold)),
        failure_percentage_minimum_hosts: fp.map(|r| u32v(r.minimum_hosts)),
        failure_percentage_request_volume: fp.map(|r| u32v(r.request_volume)),
        interval: Some(route::duration(od.interval)),
        base_ejection_time: Some(route::duration(od.base_ejection_time)),
        max_ejection_time: Some(route::duration(od.max_ejection_time)),
        max_ejection_percent: Some(whole_percent(od.max_ejection_percent)),
        ..PbOutlier::default()
    }
}

#[allow(deprecated)] // gRPC reads only the untyped `match_subject_alt_names`.
fn transport_socket(tls: &UpstreamTls) -> Option<TransportSocket> {
    if tls.mode == TlsMode::Disable {
        return None;
    }
    let tls = canonical_tls(tls);
    let mut common = CommonTlsContext::default();
    match &tls.client_certificate {
        Some(CertificateSource::Files {
            certificate,
            private_key,
        }) => {
            common.tls_certificates = vec![TlsCertificate {
                certificate_chain: Some(file(certificate)),
                private_key: private_key.as_deref().map(file),
                ..TlsCertificate::default()
            }];
        }
        Some(CertificateSource::Provider {
            instance,
            certificate_name,
        }) => {
            common.tls_certificate_provider_instance =
                Some(provider_instance(instance, certificate_name));
        }
        None => {}
    }
    let mut cvc = CertificateValidationContext::default();
    match &tls.trust_bundle {
        Some(CertificateSource::Files { certificate, .. }) => {
            cvc.trusted_ca = Some(file(certificate));
        }
        Some(CertificateSource::Provider {
            instance,
            certificate_name,
        }) => {
            cvc.ca_certificate_provider_instance =
                Some(provider_instance(instance, certificate_name));
        }
        None => {}
    }
    match untyped_sans(&tls.san_matchers) {
        Some(untyped) => cvc.match_subject_alt_names = untyped,
        None => {
            cvc.match_typed_subject_alt_names = tls
                .san_matchers
                .iter()
                .map(|m| SubjectAltNameMatcher {
                    san_type: match m.kind {
                        SanKind::Dns => SanType::Dns,
                        SanKind::Uri => SanType::Uri,
                        SanKind::Email => SanType::Email,
                        SanKind::IpAddress => SanType::IpAddress,
                    } as i32,
                    matcher: Some(route::string_matcher(&m.matcher)),
                    oid: String::new(),
                })
                .collect();
        }
    }
    common.validation_context_type = Some(ValidationContextType::ValidationContext(cvc));
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: tls.sni.clone().unwrap_or_default(),
        ..UpstreamTlsContext::default()
    };
    Some(TransportSocket {
        name: TLS_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    })
}

/// The SAN matchers as Envoy's untyped `match_subject_alt_names` (what gRPC reads), when
/// they say exactly that: an exact `spiffe://` URI, or one matcher for every SAN type.
fn untyped_sans(
    sans: &[SanMatcher],
) -> Option<Vec<envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher>> {
    const ALL: [SanKind; 4] = [
        SanKind::Dns,
        SanKind::Uri,
        SanKind::Email,
        SanKind::IpAddress,
    ];
    let mut out = Vec::new();
    let mut rest = sans;
    while let Some(first) = rest.first() {
        let spiffe = first.kind == SanKind::Uri
            && !first.matcher.ignore_case()
            && matches!(first.matcher.kind(), StringMatch::Exact(v) if v.starts_with("spiffe://"));
        if spiffe {
            out.push(route::string_matcher(&first.matcher));
            rest = &rest[1..];
            continue;
        }
        let group = rest.get(..4)?;
        let same = group
            .iter()
            .zip(ALL)
            .all(|(m, kind)| m.kind == kind && m.matcher == first.matcher);
        if !same || spiffe_exact(&first.matcher) {
            return None;
        }
        out.push(route::string_matcher(&first.matcher));
        rest = &rest[4..];
    }
    Some(out)
}

/// An exact `spiffe://` matcher decodes as one URI matcher, never as four.
fn spiffe_exact(m: &StringMatcher) -> bool {
    !m.ignore_case() && matches!(m.kind(), StringMatch::Exact(v) if v.starts_with("spiffe://"))
}

pub(super) fn provider_instance(
    instance: &str,
    certificate_name: &str,
) -> CertificateProviderPluginInstance {
    CertificateProviderPluginInstance {
        instance_name: instance.to_string(),
        certificate_name: certificate_name.to_string(),
    }
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..DataSource::default()
    }
}

fn u32v(value: u32) -> UInt32Value {
    UInt32Value { value }
}

fn percent(p: Percentage) -> Percent {
    Percent {
        value: p.as_percent_f64(),
    }
}

/// A percentage as Envoy's whole-percent `UInt32Value`, rounded.
fn whole_percent(p: Percentage) -> UInt32Value {
    u32v(rounded_percent(p))
}

fn rounded_percent(p: Percentage) -> u32 {
    (p.ppm() + 5_000) / 10_000
}

fn round(p: Percentage) -> Percentage {
    Percentage::from_percent(rounded_percent(p)).unwrap_or(p)
}

/// The TLS settings as they are sent: explicit provider instances for the mesh identity.
fn canonical_tls(tls: &UpstreamTls) -> UpstreamTls {
    if tls.mode == TlsMode::Disable {
        return UpstreamTls::default();
    }
    let workload = |name: &str| CertificateSource::Provider {
        instance: WORKLOAD_PROVIDER.to_string(),
        certificate_name: name.to_string(),
    };
    let mut out = tls.clone();
    if tls.mode == TlsMode::IstioMutual && out.client_certificate.is_none() {
        out.client_certificate = Some(workload(WORKLOAD_CERTIFICATE));
    }
    if out.trust_bundle.is_none() {
        out.trust_bundle = Some(workload(ROOT_CA_CERTIFICATE));
    }
    if let Some(CertificateSource::Files { certificate, .. }) = &out.trust_bundle {
        out.trust_bundle = Some(CertificateSource::Files {
            certificate: certificate.clone(),
            private_key: None,
        });
    }
    out.mode = canonical_mode(tls.mode, &out.client_certificate);
    out
}

/// The cluster as decoding will see it (see the module docs of [`super`]).
pub(super) fn canonical(c: &Cluster) -> Cluster {
    let mut out = c.clone();
    out.lb = canonical_lb(&c.lb);
    out.tls = canonical_tls(&c.tls);
    if let Some(od) = &mut out.outlier {
        let rule = |r: &mut Option<ConsecutiveRule>| {
            if let Some(rule) = r {
                rule.enforcing = round(rule.enforcing);
                if rule.enforcing == Percentage::ZERO || rule.threshold == 0 {
                    *r = None;
                }
            }
        };
        rule(&mut od.consecutive_5xx);
        rule(&mut od.consecutive_gateway_failure);
        rule(&mut od.consecutive_local_origin_failure);
        if !od.split_external_local_origin_errors {
            od.consecutive_local_origin_failure = None;
        }
        if let Some(sr) = &mut od.success_rate {
            sr.enforcing = round(sr.enforcing);
        }
        if od
            .success_rate
            .is_some_and(|sr| sr.enforcing == Percentage::ZERO)
        {
            od.success_rate = None;
        }
        if let Some(fp) = &mut od.failure_percentage {
            fp.enforcing = round(fp.enforcing);
            fp.threshold = round(fp.threshold);
        }
        if od
            .failure_percentage
            .is_some_and(|fp| fp.enforcing == Percentage::ZERO)
        {
            od.failure_percentage = None;
        }
        od.max_ejection_percent = round(od.max_ejection_percent);
    }
    out.endpoints = super::endpoint::grouped(&c.endpoints).into();
    out
}
