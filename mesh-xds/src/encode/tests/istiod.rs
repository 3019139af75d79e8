//! The default shape against istiod's generator for proxyless gRPC (istio
//! `pilot/pkg/networking/grpcgen`: `lds.go` `buildOutboundListeners`, `rds.go`
//! `buildHTTPRoute`, `cds.go` `edsCluster` / `applyTrafficPolicy`, `grpcgen.go`
//! `buildCommonTLSContext`). Each expectation below is what that code writes, not what this
//! encoder happens to write.

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::cluster::{DiscoveryType, LbConfig, LbPolicy as PbLbPolicy},
        core::v3::config_source::ConfigSourceSpecifier,
    },
    extensions::{
        filters::{
            http::{fault::v3::HttpFault, router::v3::Router},
            network::http_connection_manager::v3::{
                HttpConnectionManager, http_connection_manager::RouteSpecifier,
                http_filter::ConfigType,
            },
        },
        transport_sockets::tls::v3::{
            UpstreamTlsContext, common_tls_context::ValidationContextType,
        },
    },
};
use prost::{Message, Name};

use super::*;

const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn hcm(l: &envoy_types::pb::envoy::config::listener::v3::Listener) -> HttpConnectionManager {
    let any = l
        .api_listener
        .as_ref()
        .and_then(|a| a.api_listener.as_ref())
        .expect("an API listener");
    assert_eq!(any.type_url, HttpConnectionManager::type_url());
    HttpConnectionManager::decode(any.value.as_slice()).unwrap()
}

fn cluster<'a>(
    r: &'a Resources,
    name: &str,
) -> &'a envoy_types::pb::envoy::config::cluster::v3::Cluster {
    r.clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no cluster {name}: {:?}",
                r.clusters.iter().map(|c| &c.name).collect::<Vec<_>>()
            )
        })
}

#[test]
fn listeners_are_host_port_and_name_their_routes_outbound_port_host() {
    let r = encode(&fixture("canary.yaml", FIXTURES[0].1));
    let l = r
        .listeners
        .iter()
        .find(|l| l.name == format!("{REVIEWS}:9080"))
        .expect("lds.go: net.JoinHostPort(host, port)");
    let manager = hcm(l);
    let Some(RouteSpecifier::Rds(rds)) = &manager.route_specifier else {
        panic!("lds.go: routes over RDS");
    };
    // lds.go: RouteConfigName: clusterKey(serviceHost, p.Port) = outbound|port||host.
    assert_eq!(rds.route_config_name, format!("outbound|9080||{REVIEWS}"));
    assert!(matches!(
        rds.config_source
            .as_ref()
            .and_then(|s| s.config_source_specifier.as_ref()),
        Some(ConfigSourceSpecifier::Ads(_))
    ));
    // lds.go: supportedFilters = [xdsfilters.Fault, router], on every listener.
    let filters: Vec<(&str, &str)> = manager
        .http_filters
        .iter()
        .map(|f| {
            let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
                panic!("{}: untyped", f.name);
            };
            (f.name.as_str(), any.type_url.as_str())
        })
        .collect();
    let (fault, router) = (HttpFault::type_url(), Router::type_url());
    assert_eq!(
        filters,
        [
            ("envoy.filters.http.fault", fault.as_str()),
            ("envoy.filters.http.router", router.as_str()),
        ]
    );
    // rds.go: the RouteConfiguration has the requested name, with the service's virtual host
    // whose domains are its FQDN, short names, with and without the port.
    let rc = r
        .routes
        .iter()
        .find(|rc| rc.name == rds.route_config_name)
        .expect("the route configuration the listener names");
    assert_eq!(rc.virtual_hosts.len(), 1);
    let domains = &rc.virtual_hosts[0].domains;
    for d in [
        REVIEWS.to_string(),
        format!("{REVIEWS}:9080"),
        "reviews".into(),
        "reviews:9080".into(),
        "reviews.default".into(),
        "reviews.default:9080".into(),
        "reviews.default.svc".into(),
        "reviews.default.svc:9080".into(),
    ] {
        assert!(domains.contains(&d), "{d} missing from {domains:?}");
    }
    // Every listener's routes are there, and nothing else.
    let mut named: Vec<String> = r
        .listeners
        .iter()
        .map(|l| match hcm(l).route_specifier {
            Some(RouteSpecifier::Rds(rds)) => rds.route_config_name,
            _ => panic!("inline routes"),
        })
        .collect();
    named.sort();
    let mut sent: Vec<String> = r.routes.iter().map(|rc| rc.name.clone()).collect();
    sent.sort();
    assert_eq!(named, sent);
}

#[test]
fn clusters_carry_only_what_istiod_translates_for_grpc() {
    let r = encode(&fixture("destination-policies.yaml", FIXTURES[1].1));
    // httpbin: connection pool (http2MaxRequests 1000 and others) and outlier detection.
    let c = cluster(&r, "outbound|8000||httpbin.default.svc.cluster.local");
    // cds.go edsCluster: EDS over ADS, service_name = the cluster's name.
    assert_eq!(
        c.cluster_discovery_type,
        Some(
            envoy_types::pb::envoy::config::cluster::v3::cluster::ClusterDiscoveryType::Type(
                DiscoveryType::Eds as i32
            )
        )
    );
    let eds = c.eds_cluster_config.as_ref().unwrap();
    assert_eq!(eds.service_name, c.name);
    assert!(matches!(
        eds.eds_config
            .as_ref()
            .and_then(|s| s.config_source_specifier.as_ref()),
        Some(ConfigSourceSpecifier::Ads(_))
    ));
    // applyCircuitBreakers: only http2MaxRequests, as max_requests (gRFC A32).
    let thresholds = &c.circuit_breakers.as_ref().unwrap().thresholds;
    assert_eq!(thresholds.len(), 1);
    assert_eq!(thresholds[0].max_requests.map(|v| v.value), Some(1000));
    assert_eq!(thresholds[0].max_connections, None);
    assert_eq!(thresholds[0].max_pending_requests, None);
    assert_eq!(thresholds[0].max_retries, None);
    // Not translated: outlier detection, connect timeout, per-connection limits, panic
    // threshold.
    assert_eq!(c.outlier_detection, None);
    assert_eq!(c.connect_timeout, None);
    assert!(c.typed_extension_protocol_options.is_empty());
    assert_eq!(c.common_lb_config, None);
    assert_eq!(c.transport_socket, None);
    assert_eq!(c.lb_policy, PbLbPolicy::RoundRobin as i32);

    // productpage: consistent hash by cookie, ApplyRingHashLoadBalancer's default ring.
    let c = cluster(&r, "outbound|8000||productpage.default.svc.cluster.local");
    assert_eq!(c.lb_policy, PbLbPolicy::RingHash as i32);
    let Some(LbConfig::RingHashLbConfig(ring)) = &c.lb_config else {
        panic!("no ring hash config");
    };
    assert_eq!(ring.minimum_ring_size.map(|v| v.value), Some(1024));
    assert_eq!(ring.maximum_ring_size, None);
    // Without a DestinationRule limit, no circuit breaker at all.
    assert_eq!(c.circuit_breakers, None);
}

#[test]
fn file_based_tls_is_never_sent_and_never_becomes_plaintext() {
    // DestinationRule MUTUAL with certificate files: istiod sends the cluster without TLS
    // (cds.go applyTLS: "TODO support this"); gRPC NACKs file-based TLS. Neither: the cluster
    // and its endpoints are withheld.
    let config = one_cluster(|c| {
        c.tls = UpstreamTls {
            mode: TlsMode::Mutual,
            client_certificate: Some(CertificateSource::Files {
                certificate: "/etc/certs/client.pem".into(),
                private_key: Some("/etc/certs/key.pem".into()),
            }),
            trust_bundle: Some(CertificateSource::Files {
                certificate: "/etc/certs/ca.pem".into(),
                private_key: None,
            }),
            ..UpstreamTls::default()
        }
    });
    let secured = config
        .clusters()
        .values()
        .find(|c| c.tls.mode != TlsMode::Disable)
        .unwrap()
        .name
        .to_string();
    let r = encode(&config);
    assert_eq!(r.clusters.len(), config.clusters().len() - 1);
    assert!(r.clusters.iter().all(|c| c.name != secured));
    assert!(r.clusters.iter().all(|c| c.transport_socket.is_none()));
    assert!(r.load_assignments.iter().all(|c| c.cluster_name != secured));
    // With the extensions, it is sent with its files.
    let r = encode_as(&config, Shape::MeshExtensions);
    assert!(cluster(&r, &secured).transport_socket.is_some());
}

#[test]
fn istio_mutual_is_certificate_providers_as_istiod_sends_them() {
    let config = one_cluster(|c| {
        c.tls = UpstreamTls {
            mode: TlsMode::IstioMutual,
            ..UpstreamTls::default()
        }
    });
    let r = encode(&config);
    let c = r
        .clusters
        .iter()
        .find(|c| c.transport_socket.is_some())
        .unwrap();
    let socket = c.transport_socket.as_ref().unwrap();
    // cds.go: transportSocketName, which gRPC requires exactly.
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = &socket.config_type
    else {
        panic!("untyped transport socket");
    };
    let ctx = UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
    let common = ctx.common_tls_context.unwrap();
    // grpcgen.go buildCommonTLSContext: instance "default", certificates "default" and
    // "ROOTCA".
    let cert = common.tls_certificate_provider_instance.unwrap();
    assert_eq!(
        (cert.instance_name.as_str(), cert.certificate_name.as_str()),
        ("default", "default")
    );
    let ca = match common.validation_context_type.unwrap() {
        ValidationContextType::ValidationContext(v) => v.ca_certificate_provider_instance,
        ValidationContextType::CombinedValidationContext(v) => v
            .default_validation_context
            .and_then(|v| v.ca_certificate_provider_instance),
        other => panic!("{other:?}"),
    }
    .unwrap();
    assert_eq!(
        (ca.instance_name.as_str(), ca.certificate_name.as_str()),
        ("default", "ROOTCA")
    );
    assert!(common.tls_certificates.is_empty());
}

#[test]
fn least_request_falls_back_to_round_robin_and_random_is_round_robin() {
    let r = encode(&one_cluster(|c| {
        c.lb = LbPolicy::LeastRequest { choice_count: 3 }
    }));
    let c = r
        .clusters
        .iter()
        .find(|c| c.load_balancing_policy.is_some())
        .unwrap();
    assert_eq!(c.lb_policy, PbLbPolicy::LoadBalancingPolicyConfig as i32);
    let names: Vec<&str> = c
        .load_balancing_policy
        .as_ref()
        .unwrap()
        .policies
        .iter()
        .map(|p| p.typed_extension_config.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "envoy.load_balancing_policies.least_request",
            "envoy.load_balancing_policies.round_robin"
        ]
    );
    // cds.go applyLoadBalancing: anything but ROUND_ROBIN, LEAST_REQUEST, consistent hash is
    // not translated (round robin).
    let r = encode(&one_cluster(|c| c.lb = LbPolicy::Random));
    assert!(
        r.clusters
            .iter()
            .all(|c| c.load_balancing_policy.is_none()
                && c.lb_policy == PbLbPolicy::RoundRobin as i32)
    );
}

#[test]
fn route_configuration_names_follow_istio() {
    assert_eq!(
        route_config_name("reviews.default.svc.cluster.local:9080"),
        "outbound|9080||reviews.default.svc.cluster.local"
    );
    assert_eq!(route_config_name("10.0.0.1:80"), "outbound|80||10.0.0.1");
    // Not host:port: kept as it is.
    assert_eq!(route_config_name("reviews"), "reviews");
    assert_eq!(route_config_name("reviews:http"), "reviews:http");
    assert_eq!(route_config_name(":80"), ":80");
}

#[test]
fn the_istiod_view_names_what_a_grpc_client_gets_and_loses() {
    let config = fixture("destination-policies.yaml", FIXTURES[1].1);
    let httpbin = &config.clusters()["outbound|8000||httpbin.default.svc.cluster.local"];
    let view = istiod_view(httpbin);
    assert!(
        view.sent
            .contains(&"circuit breaker: max requests 1000 (http2MaxRequests)".to_string()),
        "{view:#?}"
    );
    assert!(
        view.dropped.contains(&"outlierDetection".to_string()),
        "{view:#?}"
    );
    let pool = view
        .dropped
        .iter()
        .find(|d| d.starts_with("connection-pool limits other than http2MaxRequests"))
        .unwrap_or_else(|| panic!("{view:#?}"));
    for limit in [
        "maxConnections 100",
        "http1MaxPendingRequests 1",
        "maxRetries 5",
        "maxRequestsPerConnection 10",
        "connectTimeout 30ms",
    ] {
        assert!(pool.contains(limit), "{limit} missing: {pool}");
    }

    let files = one_cluster(|c| {
        c.tls = UpstreamTls {
            mode: TlsMode::Simple,
            trust_bundle: Some(CertificateSource::Files {
                certificate: "/etc/certs/ca.pem".into(),
                private_key: None,
            }),
            ..UpstreamTls::default()
        }
    });
    let c = files
        .clusters()
        .values()
        .find(|c| c.tls.mode != TlsMode::Disable)
        .unwrap();
    let view = istiod_view(c);
    assert!(
        view.dropped
            .iter()
            .any(|d| d.starts_with("TLS with certificate files")),
        "{view:#?}"
    );

    // Nothing beyond istiod's translation: nothing dropped.
    let plain = fixture("canary.yaml", FIXTURES[0].1);
    for c in plain.clusters().values() {
        assert_eq!(istiod_view(c).dropped, Vec::<String>::new(), "{}", c.name);
    }
}

#[test]
fn this_meshs_client_reads_the_istiod_shape_as_istiod_translates_it() {
    // Every fixture decodes without error; what the shape carries survives. (A fixture with
    // file-based TLS lacks that cluster, so its snapshot is incomplete: calls to it fail.)
    for (name, text) in FIXTURES {
        let config = fixture(name, text);
        let r = encode(&config);
        if r.clusters.len() != config.clusters().len() {
            assert_eq!(name, "destination-policies.yaml");
            continue;
        }
        let (decoded, _) = decode_all(&r, config.version(), (**config.server()).clone());
        assert_eq!(
            decoded.listeners().keys().collect::<Vec<_>>(),
            config.listeners().keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (cluster_name, c) in decoded.clusters() {
            let original = &config.clusters()[cluster_name];
            assert_eq!(
                c.endpoints,
                cluster::canonical(original).endpoints,
                "{name}"
            );
            // Without http2MaxRequests istiod sends no circuit breaker: Envoy's and gRPC's
            // default limit of 1024 (gRFC A32) applies.
            let limit = match original.breaker.max_requests {
                u32::MAX => 1024,
                n => n,
            };
            assert_eq!(c.breaker.max_requests, limit, "{name}");
            assert_eq!(c.outlier, None, "{name}");
        }
    }
    let least = one_cluster(|c| c.lb = LbPolicy::LeastRequest { choice_count: 3 });
    let (decoded, unsupported) =
        decode_all(&encode(&least), least.version(), ServerPolicy::default());
    assert!(unsupported.is_empty(), "{unsupported:#?}");
    assert!(
        decoded
            .clusters()
            .values()
            .any(|c| c.lb == LbPolicy::LeastRequest { choice_count: 3 }),
        "least request survives the list"
    );
}
