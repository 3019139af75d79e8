//! Clusters that carry their endpoints inline (STATIC, STRICT_DNS) and istiod's override-host statuses.

use super::*;

fn socket(address: &str, port: u32) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
            envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: address.into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

#[test]
fn static_and_dns_clusters_carry_inline_endpoints() {
    let cla = |addr: &str| {
        Some(ClusterLoadAssignment {
            cluster_name: "db".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![socket(addr, 5432)],
                ..Default::default()
            }],
            ..Default::default()
        })
    };
    let c = Cluster {
        name: "db".into(),
        cluster_discovery_type: of_type(DiscoveryType::StrictDns),
        load_assignment: cla("db.example.com"),
        ..Default::default()
    };
    let EndpointSource::Inline { kind, endpoints } = decode(&c).value.endpoints else {
        panic!("inline endpoints expected");
    };
    assert_eq!(kind, InlineKind::StrictDns);
    assert_eq!(
        endpoints
            .iter()
            .map(|e| e.address.clone())
            .collect::<Vec<_>>(),
        [EndpointAddress::Dns {
            host: "db.example.com".into(),
            port: 5432
        }]
    );
    let c = Cluster {
        cluster_discovery_type: of_type(DiscoveryType::Static),
        ..c
    };
    assert_eq!(error_field(&c), "load_assignment");
    let c = Cluster {
        load_assignment: cla("10.0.0.1"),
        ..c
    };
    assert!(matches!(
        decode(&c).value.endpoints,
        EndpointSource::Inline {
            kind: InlineKind::Static,
            ..
        }
    ));
    let c = Cluster {
        load_assignment: cla("10.0.0.1").map(|mut a| {
            if let Some(l) = a.endpoints.first_mut() {
                l.lb_endpoints = vec![socket("10.0.0.1", 70_000)];
            }
            a
        }),
        ..c
    };
    assert_eq!(
        error_field(&c),
        "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value"
    );
}

#[test]
fn override_host_status_is_decoded_as_istiod_sends_it_for_session_services() {
    use envoy_types::pb::envoy::config::core::v3::{HealthStatus as PbHealth, HealthStatusSet};
    use mesh_core::{HealthStatus, HealthStatusSet as Statuses};

    let with = |statuses: Vec<i32>| Cluster {
        common_lb_config: Some(cluster::CommonLbConfig {
            override_host_status: Some(HealthStatusSet { statuses }),
            ..Default::default()
        }),
        ..eds("reviews")
    };
    // grpcgen/cds.go, `SupportsDrainingEndpoints`.
    let istiod = with(vec![
        PbHealth::Healthy as i32,
        PbHealth::Draining as i32,
        PbHealth::Unknown as i32,
        PbHealth::Degraded as i32,
    ]);
    let d = decode(&istiod);
    assert!(d.unsupported.is_empty(), "{:?}", d.unsupported);
    let set = d.value.cluster.override_host_status;
    for (status, allowed) in [
        (HealthStatus::Healthy, true),
        (HealthStatus::Draining, true),
        (HealthStatus::Unknown, true),
        (HealthStatus::Degraded, true),
        (HealthStatus::Unhealthy, false),
        (HealthStatus::Timeout, false),
    ] {
        assert_eq!(set.contains(status), allowed, "{status:?}");
    }
    // Unset: Envoy's default; explicitly empty: overrides ignored.
    assert_eq!(
        decode(&eds("reviews")).value.cluster.override_host_status,
        Statuses::default()
    );
    assert_eq!(
        decode(&with(Vec::new())).value.cluster.override_host_status,
        Statuses::EMPTY
    );
    assert_eq!(
        error_field(&with(vec![42])),
        "common_lb_config.override_host_status.statuses[0]"
    );
}
