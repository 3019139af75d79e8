//! Unit and property tests of the CDS decoder, with resources built as istiod and
//! go-control-plane build them.

use std::time::Duration;

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                CircuitBreakers as PbBreakers, Cluster, LoadBalancingPolicy,
                OutlierDetection as PbOutlier,
                circuit_breakers::Thresholds,
                circuit_breakers::thresholds::RetryBudget as PbRetryBudget,
                cluster::{
                    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbConfig,
                    LbPolicy as PbLbPolicy, LeastRequestLbConfig, RingHashLbConfig,
                },
                load_balancing_policy::Policy,
            },
            core::v3::{
                Address, AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, HealthCheck,
                HttpProtocolOptions as CoreHttpOptions, Metadata, RoutingPriority, SocketAddress,
                TransportSocket, TypedExtensionConfig, address, config_source, data_source,
                socket_address, transport_socket,
            },
            endpoint::v3::{ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
        },
        extensions::{
            load_balancing_policies::{
                least_request::v3::LeastRequest, ring_hash::v3::RingHash,
                round_robin::v3::RoundRobin, wrr_locality::v3::WrrLocality,
            },
            transport_sockets::tls::v3::{
                CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
                TlsCertificate, UpstreamTlsContext,
                certificate_validation_context::TrustChainVerification,
                common_tls_context::{
                    CertificateProviderInstance, CombinedCertificateValidationContext,
                    ValidationContextType,
                },
            },
            upstreams::http::v3::HttpProtocolOptions,
        },
        r#type::{
            matcher::v3::{StringMatcher as PbStringMatcher, string_matcher::MatchPattern},
            v3::Percent,
        },
    },
    google::protobuf::{Any, Duration as PbDuration, UInt32Value, UInt64Value},
};
use mesh_core::{
    CertificateSource, CircuitBreakers, ConsecutiveRule, EndpointAddress, LbPolicy,
    OutlierDetection, Percentage, RetryBudget, SanKind, SanMatcher, SuccessRateRule, TlsMode,
    UpstreamTls, matcher::StringMatcher,
};
use proptest::prelude::*;
use prost::{Message, Name};

use super::*;

mod endpoints;
mod lb;
mod tls;

const ISTIO_NAME: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";
const SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";

fn pack<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

fn secs(seconds: i64) -> Option<PbDuration> {
    Some(PbDuration { seconds, nanos: 0 })
}

fn pct(p: u32) -> Percentage {
    Percentage::from_percent(p).unwrap()
}

fn of_type(t: DiscoveryType) -> Option<ClusterDiscoveryType> {
    Some(ClusterDiscoveryType::Type(t as i32))
}

/// An EDS cluster over ADS, as istiod sends it, with nothing else set.
fn eds(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: of_type(DiscoveryType::Eds),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ConfigSource {
                resource_api_version: ApiVersion::V3 as i32,
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                ..Default::default()
            }),
            service_name: String::new(),
        }),
        ..Default::default()
    }
}

fn provider_instance(certificate_name: &str) -> Option<CertificateProviderInstance> {
    Some(CertificateProviderInstance {
        instance_name: "default".into(),
        certificate_name: certificate_name.into(),
    })
}

/// istiod's proxyless upstream TLS (pilot/pkg/networking/grpcgen `buildUpstreamTLSContext`).
fn istiod_tls() -> UpstreamTlsContext {
    UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_certificate_provider_instance: provider_instance("default"),
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    validation_context_certificate_provider_instance: provider_instance("ROOTCA"),
                    default_validation_context: Some(CertificateValidationContext {
                        match_subject_alt_names: vec![PbStringMatcher {
                            match_pattern: Some(MatchPattern::Exact(SPIFFE.into())),
                            ignore_case: false,
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn plugin_instance(certificate_name: &str) -> Option<CertificateProviderPluginInstance> {
    Some(CertificateProviderPluginInstance {
        instance_name: "default".into(),
        certificate_name: certificate_name.into(),
    })
}

/// istiod ≥ 1.29's proxyless upstream TLS (istio#58257, grpcgen `buildCommonTLSContext`): the
/// current fields (`tls_certificate_provider_instance`, `default_validation_context
/// .ca_certificate_provider_instance`) and the deprecated ones, both naming the same instances.
fn istiod_1_29_tls() -> UpstreamTlsContext {
    let mut tls = istiod_tls();
    if let Some(common) = tls.common_tls_context.as_mut() {
        common.tls_certificate_provider_instance = plugin_instance("default");
        if let Some(ValidationContextType::CombinedValidationContext(comb)) =
            common.validation_context_type.as_mut()
            && let Some(cvc) = comb.default_validation_context.as_mut()
        {
            cvc.ca_certificate_provider_instance = plugin_instance("ROOTCA");
        }
    }
    tls
}

fn tls_socket(tls: &UpstreamTlsContext) -> Option<TransportSocket> {
    Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(tls))),
    })
}

fn decode(c: &Cluster) -> Decoded<DecodedCluster> {
    decode_cluster(c).unwrap()
}

fn error_field(c: &Cluster) -> String {
    let e = decode_cluster(c).unwrap_err();
    assert_eq!(e.kind, "Cluster");
    assert_eq!(e.name, c.name);
    e.field
}

fn unsupported_fields(d: &Decoded<DecodedCluster>) -> Vec<&str> {
    d.unsupported.iter().map(|u| u.field.as_str()).collect()
}

#[test]
fn istiod_proxyless_eds_cluster() {
    let c = Cluster {
        connect_timeout: Some(PbDuration {
            seconds: 10,
            nanos: 0,
        }),
        lb_policy: PbLbPolicy::RoundRobin as i32,
        circuit_breakers: Some(PbBreakers {
            thresholds: vec![Thresholds {
                max_requests: u32v(100),
                max_retries: u32v(5),
                ..Default::default()
            }],
            per_host_thresholds: vec![],
        }),
        outlier_detection: Some(PbOutlier {
            consecutive_5xx: u32v(7),
            interval: secs(5),
            base_ejection_time: secs(15),
            max_ejection_percent: u32v(100),
            enforcing_success_rate: u32v(0),
            ..Default::default()
        }),
        transport_socket: tls_socket(&istiod_tls()),
        ..eds(ISTIO_NAME)
    };
    let d = decode(&c);
    assert!(d.unsupported.is_empty(), "{:?}", d.unsupported);
    let DecodedCluster { cluster, endpoints } = d.value;
    assert_eq!(
        endpoints,
        EndpointSource::Eds {
            service_name: ISTIO_NAME.into()
        }
    );
    let mut want = mesh_core::Cluster::new(ISTIO_NAME, Vec::new());
    want.connect_timeout = Duration::from_secs(10);
    want.idle_timeout = Some(Duration::from_secs(3600));
    want.breaker = CircuitBreakers {
        max_requests: 100,
        max_retries: 5,
        ..CircuitBreakers::default()
    };
    want.outlier = Some(OutlierDetection {
        consecutive_5xx: Some(ConsecutiveRule {
            threshold: 7,
            enforcing: Percentage::HUNDRED,
        }),
        interval: Duration::from_secs(5),
        base_ejection_time: Duration::from_secs(15),
        max_ejection_percent: Percentage::HUNDRED,
        success_rate: None,
        ..OutlierDetection::default()
    });
    want.tls = UpstreamTls {
        mode: TlsMode::Mutual,
        sni: None,
        san_matchers: vec![SanMatcher {
            kind: SanKind::Uri,
            matcher: StringMatcher::exact(SPIFFE),
        }]
        .into(),
        client_certificate: Some(CertificateSource::Provider {
            instance: "default".into(),
            certificate_name: "default".into(),
        }),
        trust_bundle: Some(CertificateSource::Provider {
            instance: "default".into(),
            certificate_name: "ROOTCA".into(),
        }),
    };
    assert_eq!(cluster, want);
}

#[test]
fn defaults_when_fields_are_absent() {
    let d = decode(&eds("reviews"));
    assert!(d.unsupported.is_empty());
    let c = d.value.cluster;
    assert_eq!(c.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.lb, LbPolicy::RoundRobin);
    assert_eq!(c.breaker, CircuitBreakers::default());
    assert_eq!(c.outlier, None);
    assert_eq!(c.panic_threshold, pct(50));
    assert!(!c.locality_weighted);
    assert_eq!(c.max_requests_per_connection, None);
    assert_eq!(c.idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(c.tls, UpstreamTls::default());
    assert!(c.endpoints.is_empty());
    assert_eq!(
        d.value.endpoints,
        EndpointSource::Eds {
            service_name: "reviews".into()
        }
    );

    // An empty outlier_detection message turns on Envoy's defaults.
    let c = Cluster {
        outlier_detection: Some(PbOutlier::default()),
        ..eds("reviews")
    };
    let od = decode(&c).value.cluster.outlier.unwrap();
    assert_eq!(
        od,
        OutlierDetection {
            success_rate: Some(SuccessRateRule::default()),
            ..OutlierDetection::default()
        }
    );
}

#[test]
fn outlier_rules_follow_enforcement() {
    let c = Cluster {
        outlier_detection: Some(PbOutlier {
            enforcing_consecutive_5xx: u32v(0),
            enforcing_consecutive_gateway_failure: u32v(50),
            split_external_local_origin_errors: true,
            consecutive_local_origin_failure: u32v(3),
            enforcing_failure_percentage: u32v(100),
            failure_percentage_threshold: u32v(90),
            max_ejection_time: secs(60),
            ..Default::default()
        }),
        ..eds("reviews")
    };
    let od = decode(&c).value.cluster.outlier.unwrap();
    assert_eq!(od.consecutive_5xx, None);
    assert_eq!(
        od.consecutive_gateway_failure,
        Some(ConsecutiveRule {
            threshold: 5,
            enforcing: pct(50)
        })
    );
    assert_eq!(
        od.consecutive_local_origin_failure.map(|r| r.threshold),
        Some(3)
    );
    let fp = od.failure_percentage.unwrap();
    assert_eq!(
        (fp.threshold, fp.minimum_hosts, fp.request_volume),
        (pct(90), 5, 50)
    );
    assert_eq!(od.max_ejection_time, Duration::from_secs(60));

    let bad = Cluster {
        outlier_detection: Some(PbOutlier {
            interval: secs(0),
            ..Default::default()
        }),
        ..eds("reviews")
    };
    assert_eq!(error_field(&bad), "outlier_detection.interval");
    let bad = Cluster {
        outlier_detection: Some(PbOutlier {
            max_ejection_percent: u32v(101),
            ..Default::default()
        }),
        ..eds("reviews")
    };
    assert_eq!(error_field(&bad), "outlier_detection.max_ejection_percent");
}

#[test]
fn unsupported_fields_are_reported() {
    let c = Cluster {
        dns_lookup_family: 1,
        health_checks: vec![HealthCheck::default()],
        metadata: Some(Metadata::default()),
        circuit_breakers: Some(PbBreakers {
            thresholds: vec![
                Thresholds {
                    priority: RoutingPriority::High as i32,
                    max_requests: u32v(1),
                    ..Default::default()
                },
                Thresholds {
                    retry_budget: Some(PbRetryBudget {
                        budget_percent: Some(Percent { value: 25.0 }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            per_host_thresholds: vec![],
        }),
        ..eds("reviews")
    };
    let d = decode(&c);
    assert_eq!(
        unsupported_fields(&d),
        [
            "circuit_breakers.thresholds[0]",
            "health_checks",
            "dns_lookup_family",
            "metadata"
        ]
    );
    assert!(d.unsupported.iter().all(|u| u.name == "reviews"));
    let b = d.value.cluster.breaker;
    assert_eq!(b.max_requests, 1024, "HIGH thresholds do not apply");
    assert_eq!(
        b.retry_budget,
        Some(RetryBudget {
            budget_percent: pct(25),
            min_retry_concurrency: 3
        })
    );
}

#[test]
fn http_protocol_options_and_panic_threshold() {
    let opts = HttpProtocolOptions {
        common_http_protocol_options: Some(CoreHttpOptions {
            idle_timeout: secs(0),
            max_requests_per_connection: u32v(100),
            ..Default::default()
        }),
        ..Default::default()
    };
    let c = Cluster {
        typed_extension_protocol_options: [(HTTP_PROTOCOL_OPTIONS.to_string(), pack(&opts))]
            .into_iter()
            .collect(),
        common_lb_config: Some(cluster::CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: 0.0 }),
            ..Default::default()
        }),
        ..eds("reviews")
    };
    let c = decode(&c).value.cluster;
    assert_eq!(c.max_requests_per_connection, Some(100));
    assert_eq!(c.idle_timeout, None, "zero disables the idle timeout");
    assert_eq!(c.panic_threshold, Percentage::ZERO);
}

#[test]
fn upstream_tcp_keepalive_and_max_connections() {
    let c = Cluster {
        upstream_connection_options: Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(envoy_types::pb::envoy::config::core::v3::TcpKeepalive {
                keepalive_probes: u32v(4),
                keepalive_time: u32v(7200),
                keepalive_interval: None,
            }),
            ..Default::default()
        }),
        circuit_breakers: Some(PbBreakers {
            thresholds: vec![Thresholds {
                max_connections: u32v(10),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..eds("reviews")
    };
    let d = decode(&c);
    assert!(unsupported_fields(&d).is_empty(), "{:?}", d.unsupported);
    let c = d.value.cluster;
    assert_eq!(
        c.tcp_keepalive,
        Some(mesh_core::TcpKeepalive {
            time: Some(Duration::from_secs(7200)),
            interval: None,
            probes: Some(4),
        })
    );
    assert_eq!(c.breaker.max_connections, 10);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(c) = Cluster::decode(bytes.as_slice()) {
            let _ = decode_cluster(&c);
        }
        if let Ok(cla) = ClusterLoadAssignment::decode(bytes.as_slice()) {
            let _ = crate::decode::decode_load_assignment(&cla);
        }
    }

    #[test]
    fn mutated_istiod_cluster_never_panics(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let c = Cluster {
            transport_socket: tls_socket(&istiod_tls()),
            outlier_detection: Some(PbOutlier { consecutive_5xx: u32v(3), ..Default::default() }),
            ..eds(ISTIO_NAME)
        };
        let mut bytes = c.encode_to_vec();
        for (at, b) in flips {
            if !bytes.is_empty() {
                let i = at % bytes.len();
                if let Some(x) = bytes.get_mut(i) {
                    *x ^= b;
                }
            }
        }
        if let Ok(c) = Cluster::decode(bytes.as_slice()) {
            let _ = decode_cluster(&c);
        }
    }
}
