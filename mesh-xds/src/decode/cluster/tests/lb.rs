//! Load-balancing policies: `load_balancing_policy` (WRR locality, ring hash, least request, Maglev) and the legacy `lb_policy`.

use super::*;

fn typed_policy(configs: Vec<Any>) -> Option<LoadBalancingPolicy> {
    Some(LoadBalancingPolicy {
        policies: configs
            .into_iter()
            .map(|a| Policy {
                typed_extension_config: Some(TypedExtensionConfig {
                    name: "policy".into(),
                    typed_config: Some(a),
                }),
            })
            .collect(),
    })
}

#[test]
fn wrr_locality_is_locality_weighted_round_robin() {
    let unknown = Any {
        type_url: "type.googleapis.com/envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin".into(),
        value: vec![],
    };
    let wrr = WrrLocality {
        endpoint_picking_policy: typed_policy(vec![pack(&RoundRobin::default())]),
    };
    let c = Cluster {
        load_balancing_policy: typed_policy(vec![unknown, pack(&wrr)]),
        ..eds("reviews")
    };
    let d = decode(&c);
    assert_eq!(d.value.cluster.lb, LbPolicy::RoundRobin);
    assert!(d.value.cluster.locality_weighted);
    assert_eq!(
        unsupported_fields(&d),
        ["load_balancing_policy.policies[0].typed_extension_config.typed_config"]
    );

    let none = Cluster {
        load_balancing_policy: typed_policy(vec![]),
        ..eds("reviews")
    };
    assert_eq!(error_field(&none), "load_balancing_policy.policies");
}

#[test]
fn ring_hash_sizes() {
    let legacy = |min: Option<u64>, max: Option<u64>| Cluster {
        lb_policy: PbLbPolicy::RingHash as i32,
        lb_config: Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
            minimum_ring_size: min.map(|value| UInt64Value { value }),
            maximum_ring_size: max.map(|value| UInt64Value { value }),
            hash_function: 0,
        })),
        ..eds("reviews")
    };
    assert_eq!(
        decode(&legacy(Some(2048), Some(4096))).value.cluster.lb,
        LbPolicy::ring_hash(2048, 4096).unwrap()
    );
    assert_eq!(
        decode(&legacy(None, None)).value.cluster.lb,
        LbPolicy::default_ring_hash()
    );
    assert_eq!(
        error_field(&legacy(Some(4096), Some(2048))),
        "ring_hash_lb_config.minimum_ring_size"
    );
    assert_eq!(
        error_field(&legacy(None, Some(8_388_609))),
        "ring_hash_lb_config.maximum_ring_size"
    );
    assert_eq!(
        error_field(&legacy(Some(0), None)),
        "ring_hash_lb_config.minimum_ring_size"
    );

    let typed = Cluster {
        load_balancing_policy: typed_policy(vec![pack(&RingHash {
            minimum_ring_size: Some(UInt64Value { value: 10 }),
            maximum_ring_size: Some(UInt64Value { value: 5 }),
            ..Default::default()
        })]),
        ..eds("reviews")
    };
    assert_eq!(
        error_field(&typed),
        "load_balancing_policy.policies[0].typed_extension_config.typed_config.minimum_ring_size"
    );
}

#[test]
fn least_request_choice_count() {
    let legacy = |n: Option<u32>| Cluster {
        lb_policy: PbLbPolicy::LeastRequest as i32,
        lb_config: Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
            choice_count: n.map(|value| UInt32Value { value }),
            ..Default::default()
        })),
        ..eds("reviews")
    };
    assert_eq!(
        decode(&legacy(Some(3))).value.cluster.lb,
        LbPolicy::LeastRequest { choice_count: 3 }
    );
    assert_eq!(
        decode(&legacy(None)).value.cluster.lb,
        LbPolicy::LeastRequest { choice_count: 2 }
    );
    assert_eq!(
        error_field(&legacy(Some(1))),
        "least_request_lb_config.choice_count"
    );
    let typed = Cluster {
        load_balancing_policy: typed_policy(vec![pack(&LeastRequest {
            choice_count: u32v(4),
            ..Default::default()
        })]),
        ..eds("reviews")
    };
    assert_eq!(
        decode(&typed).value.cluster.lb,
        LbPolicy::LeastRequest { choice_count: 4 }
    );
}

#[test]
fn maglev_is_ring_hash_and_reported() {
    let c = Cluster {
        lb_policy: PbLbPolicy::Maglev as i32,
        ..eds("reviews")
    };
    let d = decode(&c);
    assert_eq!(d.value.cluster.lb, LbPolicy::default_ring_hash());
    assert_eq!(unsupported_fields(&d), ["lb_policy"]);
}

#[test]
fn unsupported_discovery_and_lb_are_errors() {
    let c = Cluster {
        cluster_discovery_type: of_type(DiscoveryType::OriginalDst),
        ..eds("passthrough")
    };
    let e = decode_cluster(&c).unwrap_err();
    assert_eq!(e.field, "type");
    assert!(e.message.contains("not supported"), "{e}");
    let c = Cluster {
        lb_policy: PbLbPolicy::ClusterProvided as i32,
        ..eds("reviews")
    };
    assert_eq!(error_field(&c), "lb_policy");
}
