//! Unit tests of the EDS decoder.

use std::{collections::HashMap, net::SocketAddr};

use envoy_types::pb::{
    envoy::config::{
        core::v3::{
            Address, HealthStatus as PbHealth, Locality as PbLocality, Metadata, SocketAddress,
            address, socket_address,
        },
        endpoint::v3::{
            ClusterLoadAssignment, Endpoint as PbEndpoint, LbEndpoint, LocalityLbEndpoints,
            cluster_load_assignment::Policy, lb_endpoint,
        },
    },
    google::protobuf::{Struct, UInt32Value, Value, value::Kind},
};
use mesh_core::{EndpointAddress, HealthStatus, Labels};

use super::*;

const NAME: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";

fn lb(address: &str, port: u32, health: PbHealth, weight: Option<u32>) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(PbEndpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: address.into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        health_status: health as i32,
        load_balancing_weight: weight.map(|value| UInt32Value { value }),
        metadata: None,
    }
}

fn locality(
    zone: &str,
    priority: u32,
    weight: Option<u32>,
    eps: Vec<LbEndpoint>,
) -> LocalityLbEndpoints {
    LocalityLbEndpoints {
        locality: Some(PbLocality {
            region: "us-east1".into(),
            zone: zone.into(),
            sub_zone: String::new(),
        }),
        lb_endpoints: eps,
        load_balancing_weight: weight.map(|value| UInt32Value { value }),
        priority,
        ..Default::default()
    }
}

fn cla(localities: Vec<LocalityLbEndpoints>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: NAME.into(),
        endpoints: localities,
        ..Default::default()
    }
}

fn string_struct(pairs: &[(&str, &str)]) -> Struct {
    Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value {
                        kind: Some(Kind::StringValue(v.to_string())),
                    },
                )
            })
            .collect(),
    }
}

#[test]
fn two_localities_with_priorities_weights_and_health() {
    let mut labelled = lb("10.0.0.1", 9080, PbHealth::Healthy, Some(3));
    labelled.metadata = Some(Metadata {
        filter_metadata: HashMap::from([
            ("envoy.lb".to_string(), string_struct(&[("version", "v2")])),
            (
                "istio".to_string(),
                string_struct(&[("workload", "reviews-v2")]),
            ),
        ]),
        ..Default::default()
    });
    let a = cla(vec![
        // Locality weight 4 = 3 + 1, istiod's convention: exact under flat weighting.
        locality(
            "us-east1-b",
            0,
            Some(4),
            vec![labelled, lb("2001:db8::1", 9080, PbHealth::Draining, None)],
        ),
        locality(
            "us-east1-c",
            1,
            Some(2),
            vec![
                lb("reviews.backup.example.com", 443, PbHealth::Unknown, None),
                lb("10.0.1.1", 9080, PbHealth::Unhealthy, None),
                lb("10.0.1.2", 9080, PbHealth::Degraded, None),
                lb("10.0.1.3", 9080, PbHealth::Timeout, None),
            ],
        ),
    ]);
    let d = decode_load_assignment(&a).unwrap();
    // Priority 1 has weight 2 for four weight-1 endpoints: a single locality per priority is
    // always proportional, so nothing is reported.
    assert!(d.unsupported.is_empty(), "{:?}", d.unsupported);
    let eps = d.value;
    assert_eq!(eps.len(), 6);
    let first = &eps[0];
    assert_eq!(
        first.address,
        EndpointAddress::Socket("10.0.0.1:9080".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(first.weight.get(), 3);
    assert_eq!(first.priority, 0);
    assert_eq!(&*first.locality.zone, "us-east1-b");
    assert_eq!(&*first.locality.region, "us-east1");
    assert_eq!(first.health, HealthStatus::Healthy);
    assert_eq!(
        first.labels,
        Labels::new([("version", "v2"), ("workload", "reviews-v2")]).unwrap()
    );
    assert_eq!(
        eps[1].address,
        EndpointAddress::Socket("[2001:db8::1]:9080".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(eps[1].weight.get(), 1);
    assert_eq!(eps[1].health, HealthStatus::Draining);
    assert_eq!(
        eps[2].address,
        EndpointAddress::Dns {
            host: "reviews.backup.example.com".into(),
            port: 443
        }
    );
    assert_eq!(eps[2].priority, 1);
    assert_eq!(&*eps[2].locality.zone, "us-east1-c");
    let health: Vec<HealthStatus> = eps[2..].iter().map(|e| e.health).collect();
    assert_eq!(
        health,
        [
            HealthStatus::Unknown,
            HealthStatus::Unhealthy,
            HealthStatus::Degraded,
            HealthStatus::Timeout
        ]
    );
}

#[test]
fn disproportionate_locality_weights_are_reported() {
    let a = cla(vec![
        locality(
            "a",
            0,
            Some(1),
            vec![lb("10.0.0.1", 80, PbHealth::Healthy, None)],
        ),
        locality(
            "b",
            0,
            Some(1),
            vec![
                lb("10.0.0.2", 80, PbHealth::Healthy, None),
                lb("10.0.0.3", 80, PbHealth::Healthy, None),
            ],
        ),
    ]);
    let d = decode_load_assignment(&a).unwrap();
    let fields: Vec<&str> = d.unsupported.iter().map(|u| u.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "endpoints[0].load_balancing_weight",
            "endpoints[1].load_balancing_weight"
        ]
    );
    assert!(
        d.unsupported
            .iter()
            .all(|u| u.kind == "ClusterLoadAssignment" && u.name == NAME)
    );
}

#[test]
fn overprovisioning_factor_other_than_140_is_reported() {
    let policy = |f: u32| {
        Some(Policy {
            overprovisioning_factor: Some(UInt32Value { value: f }),
            ..Default::default()
        })
    };
    let a = ClusterLoadAssignment {
        policy: policy(140),
        ..cla(vec![])
    };
    assert!(decode_load_assignment(&a).unwrap().unsupported.is_empty());
    let a = ClusterLoadAssignment {
        policy: policy(200),
        ..cla(vec![])
    };
    let d = decode_load_assignment(&a).unwrap();
    assert_eq!(d.unsupported.len(), 1);
    assert_eq!(d.unsupported[0].field, "policy.overprovisioning_factor");
}

#[test]
fn errors_name_the_field() {
    let bad_port = cla(vec![locality(
        "a",
        0,
        None,
        vec![
            lb("10.0.0.1", 80, PbHealth::Healthy, None),
            lb("10.0.0.2", 80, PbHealth::Healthy, None),
            lb("10.0.0.3", 65_536, PbHealth::Healthy, None),
        ],
    )]);
    let e = decode_load_assignment(&bad_port).unwrap_err();
    assert_eq!(e.kind, "ClusterLoadAssignment");
    assert_eq!(e.name, NAME);
    assert_eq!(
        e.field,
        "endpoints[0].lb_endpoints[2].endpoint.address.socket_address.port_value"
    );

    let zero_weight = cla(vec![locality(
        "a",
        0,
        None,
        vec![lb("10.0.0.1", 80, PbHealth::Healthy, Some(0))],
    )]);
    assert_eq!(
        decode_load_assignment(&zero_weight).unwrap_err().field,
        "endpoints[0].lb_endpoints[0].load_balancing_weight"
    );

    let bad_host = cla(vec![locality(
        "a",
        0,
        None,
        vec![lb("not a host!", 80, PbHealth::Healthy, None)],
    )]);
    assert_eq!(
        decode_load_assignment(&bad_host).unwrap_err().field,
        "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address"
    );

    let mut bad_health = lb("10.0.0.1", 80, PbHealth::Healthy, None);
    bad_health.health_status = 42;
    let bad_health = cla(vec![locality("a", 0, None, vec![bad_health])]);
    assert_eq!(
        decode_load_assignment(&bad_health).unwrap_err().field,
        "endpoints[0].lb_endpoints[0].health_status"
    );
}

#[test]
fn host_names() {
    assert!(is_host_name("reviews.default.svc.cluster.local"));
    assert!(is_host_name("example.com."));
    assert!(!is_host_name(""));
    assert!(!is_host_name("."));
    assert!(!is_host_name("a..b"));
    assert!(!is_host_name("a b"));
}
