//! Fault per-filter configs: precedence and what is dropped.

use std::{collections::HashMap, sync::Arc, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::route::v3::{FilterConfig, route_action::ClusterSpecifier},
        extensions::filters::{
            common::fault::v3::{
                FaultDelay as PbDelay,
                fault_delay::{FaultDelaySecifier, HeaderDelay},
            },
            http::fault::v3::{
                FaultAbort as PbAbort, HttpFault,
                fault_abort::{ErrorType, HeaderAbort},
            },
        },
    },
    google::protobuf::{Any, UInt32Value},
};
use mesh_core::{
    AbortStatus, FaultAbort, FaultDelay, FaultPolicy, GrpcCode, HeaderFaultShare, Percentage,
};

use super::*;
fn abort_fault(code: u32) -> HttpFault {
    HttpFault {
        abort: Some(PbAbort {
            percentage: Some(pct(100)),
            error_type: Some(ErrorType::HttpStatus(code)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn delay_fault(s: i64, percent: u32) -> HttpFault {
    HttpFault {
        delay: Some(PbDelay {
            percentage: Some(pct(percent)),
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(secs(s))),
        }),
        max_active_faults: Some(UInt32Value { value: 4 }),
        ..Default::default()
    }
}

fn per_filter(f: &HttpFault) -> HashMap<String, Any> {
    HashMap::from([("envoy.filters.http.fault".to_string(), pack(f))])
}

fn abort_policy(code: u16) -> Arc<FaultPolicy> {
    Arc::new(FaultPolicy {
        abort: Some(FaultAbort {
            status: AbortStatus::Http(code),
            percentage: Percentage::HUNDRED,
        }),
        ..FaultPolicy::default()
    })
}

fn delay_policy(s: u64, percent: u32) -> Arc<FaultPolicy> {
    Arc::new(FaultPolicy {
        delay: Some(FaultDelay {
            duration: Duration::from_secs(s),
            percentage: Percentage::from_percent(percent).unwrap(),
        }),
        max_active_faults: Some(4),
        ..FaultPolicy::default()
    })
}

#[test]
fn the_most_specific_fault_config_wins() {
    let filters = HttpFilters::with_fault(Some((*abort_policy(500)).clone()));
    // Route /own overrides; /inherit takes the vhost's; /split overrides per cluster;
    // /off disables with a FilterConfig.
    let mut own = route(prefix("/own"), action(V1));
    own.typed_per_filter_config = per_filter(&abort_fault(503));
    let inherit = route(prefix("/inherit"), action(V1));
    let mut split_action = weighted(&[(V1, 50), (V3, 50)]);
    if let Some(ClusterSpecifier::WeightedClusters(wc)) = &mut split_action.cluster_specifier {
        wc.clusters[1].typed_per_filter_config = per_filter(&delay_fault(3, 50));
    }
    let mut split = route(prefix("/split"), split_action);
    split.typed_per_filter_config = per_filter(&abort_fault(502));
    let mut off = route(prefix("/off"), action(V1));
    off.typed_per_filter_config = HashMap::from([(
        "envoy.filters.http.fault".to_string(),
        pack(&FilterConfig {
            config: None,
            is_optional: false,
            disabled: true,
        }),
    )]);
    let mut vh = vhost(vec![own, inherit, split, off]);
    vh.typed_per_filter_config = per_filter(&delay_fault(1, 10));
    let mut plain = vhost(vec![route(prefix("/"), action(V1))]);
    plain.name = "other".into();
    plain.domains = vec!["ratings".into()];
    let d = decode_route_configuration(&config(vec![vh, plain]), &filters).unwrap();
    assert!(d.unsupported.is_empty(), "{:?}", d.unsupported);
    let t = &d.value;
    assert_eq!(
        find(t, HOST, "/own", &[]).unwrap().fault,
        Some(abort_policy(503))
    );
    assert_eq!(
        find(t, HOST, "/inherit", &[]).unwrap().fault,
        Some(delay_policy(1, 10))
    );
    let split = find(t, HOST, "/split", &[]).unwrap();
    assert_eq!(split.fault, Some(abort_policy(502)));
    let clusters = fwd(split).clusters.clusters();
    assert_eq!(clusters[0].fault, None, "inherits the route's");
    assert_eq!(clusters[1].fault, Some(delay_policy(3, 50)));
    assert_eq!(find(t, HOST, "/off", &[]).unwrap().fault, None);
    assert_eq!(
        find(t, "ratings", "/", &[]).unwrap().fault,
        Some(abort_policy(500))
    );
}

#[test]
fn fault_configs_without_a_fault_filter_are_reported() {
    let mut r = route(prefix("/"), action(V1));
    r.typed_per_filter_config = per_filter(&abort_fault(503));
    let d = decode(&config(vec![vhost(vec![r])]));
    assert_eq!(only_route(&d).fault, None);
    assert_eq!(
        fields(&d),
        ["virtual_hosts[0].routes[0].typed_per_filter_config[envoy.filters.http.fault]"]
    );
}

#[test]
fn grpc_aborts_and_conditional_faults() {
    let filters = HttpFilters::with_fault(None);
    let grpc = HttpFault {
        abort: Some(PbAbort {
            percentage: Some(pct(100)),
            error_type: Some(ErrorType::GrpcStatus(14)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut conditional = grpc.clone();
    conditional.headers = vec![exact_header("x-fault", "1")];
    let mut a = route(prefix("/a"), action(V1));
    a.typed_per_filter_config = per_filter(&grpc);
    let mut b = route(prefix("/b"), action(V1));
    b.typed_per_filter_config = per_filter(&conditional);
    let d = decode_route_configuration(&config(vec![vhost(vec![a, b])]), &filters).unwrap();
    let routes = d.value.virtual_hosts()[0].routes();
    let abort = routes[0]
        .fault
        .as_ref()
        .and_then(|f| f.abort.clone())
        .unwrap();
    assert_eq!(abort.status, AbortStatus::Grpc(GrpcCode::Unavailable));
    assert_eq!(routes[1].fault, None, "a fault with conditions is dropped");
    assert_eq!(
        fields(&d),
        ["virtual_hosts[0].routes[1].typed_per_filter_config[envoy.filters.http.fault].headers"]
    );
}

#[test]
fn header_controlled_faults_decode_with_their_share() {
    let filters = HttpFilters::with_fault(None);
    let from_headers = HttpFault {
        abort: Some(PbAbort {
            percentage: Some(pct(20)),
            error_type: Some(ErrorType::HeaderAbort(HeaderAbort::default())),
            ..Default::default()
        }),
        delay: Some(PbDelay {
            percentage: Some(pct(100)),
            fault_delay_secifier: Some(FaultDelaySecifier::HeaderDelay(HeaderDelay::default())),
        }),
        ..Default::default()
    };
    let mut r = route(prefix("/"), action(V1));
    r.typed_per_filter_config = per_filter(&from_headers);
    let d = decode_route_configuration(&config(vec![vhost(vec![r])]), &filters).unwrap();
    assert!(d.unsupported.is_empty(), "{:?}", d.unsupported);
    let fault = d.value.virtual_hosts()[0].routes()[0]
        .fault
        .clone()
        .unwrap();
    assert_eq!(
        *fault,
        FaultPolicy {
            header_abort: Some(HeaderFaultShare::new(20, 100).unwrap()),
            header_delay: Some(HeaderFaultShare::HUNDRED),
            ..FaultPolicy::default()
        }
    );
}
