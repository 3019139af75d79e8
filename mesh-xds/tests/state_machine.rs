//! The ADS state machine, driven by hand: ACK/NACK, versions and nonces, partial acceptance,
//! SotW deletion, the does-not-exist timer and ambient errors. No I/O, time is an argument.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::{config::core::v3::Node, service::discovery::v3::DiscoveryRequest};
use mesh_test_support::resources::*;
use mesh_xds::client::state::{AdsState, Resource, ResourceStatus, ResourceType};

const TARGET: &str = "echo.default.svc.cluster.local:50051";
const ROUTE: &str = "echo-routes";
const V1: &str = "outbound|50051|v1|echo.default.svc.cluster.local";
const V2: &str = "outbound|50051|v2|echo.default.svc.cluster.local";

fn node() -> Node {
    Node {
        id: "test-node".into(),
        ..Default::default()
    }
}

fn drain(state: &mut AdsState, now: Instant) -> Vec<DiscoveryRequest> {
    let mut out = Vec::new();
    while let Some(r) = state.poll_request(now, &node()) {
        out.push(r);
        assert!(out.len() < 16, "requests never stop");
    }
    out
}

fn only(requests: Vec<DiscoveryRequest>) -> DiscoveryRequest {
    assert_eq!(requests.len(), 1, "{requests:#?}");
    requests.into_iter().next().unwrap()
}

fn status(state: &AdsState, ty: ResourceType, name: &str) -> ResourceStatus {
    state.resource(ty, name).expect("subscribed").status
}

/// A state with the target watched and the whole graph (LDS → RDS → CDS v1,v2 → EDS) acked.
fn complete(now: Instant) -> AdsState {
    let mut s = AdsState::new();
    s.watch(TARGET, TARGET);
    s.on_connected();
    let lds = only(drain(&mut s, now));
    assert_eq!(lds.type_url, LDS);
    assert_eq!(lds.resource_names, [TARGET]);
    assert!(lds.node.is_some(), "the first request carries the node");
    assert!(
        s.on_response(
            &response(LDS, "l1", "n1", vec![listener(TARGET, ROUTE)]),
            SystemTime::now()
        )
        .acked
    );
    let reqs = drain(&mut s, now);
    assert_eq!(reqs.len(), 2, "LDS ACK and the RDS subscription: {reqs:#?}");
    assert_eq!(
        (
            reqs[0].type_url.as_str(),
            reqs[0].version_info.as_str(),
            reqs[0].response_nonce.as_str()
        ),
        (LDS, "l1", "n1")
    );
    assert!(reqs[0].node.is_none());
    assert_eq!(reqs[1].resource_names, [ROUTE]);
    s.on_response(
        &response(
            RDS,
            "r1",
            "n2",
            vec![route(
                ROUTE,
                "echo.default.svc.cluster.local",
                &[(V1, 90), (V2, 10)],
            )],
        ),
        SystemTime::now(),
    );
    let reqs = drain(&mut s, now);
    assert_eq!(reqs[1].type_url, CDS);
    assert_eq!(reqs[1].resource_names, [V1, V2]);
    s.on_response(
        &response(CDS, "c1", "n3", vec![cluster(V1), cluster(V2)]),
        SystemTime::now(),
    );
    let reqs = drain(&mut s, now);
    assert_eq!(reqs[1].type_url, EDS);
    assert_eq!(reqs[1].resource_names, [V1, V2]);
    let addr = "127.0.0.1:1".parse().unwrap();
    s.on_response(
        &response(
            EDS,
            "e1",
            "n4",
            vec![endpoints(V1, &[addr]), endpoints(V2, &[addr])],
        ),
        SystemTime::now(),
    );
    drain(&mut s, now);
    s
}

#[test]
fn the_graph_is_followed_and_every_response_acked() {
    let now = Instant::now();
    let s = complete(now);
    for (ty, name) in [
        (ResourceType::Listener, TARGET),
        (ResourceType::RouteConfiguration, ROUTE),
        (ResourceType::Cluster, V1),
        (ResourceType::ClusterLoadAssignment, V2),
    ] {
        assert_eq!(status(&s, ty, name), ResourceStatus::Acked, "{ty} {name}");
    }
    assert_eq!(s.counters().updates_accepted, 4);
    assert_eq!(s.version_info(ResourceType::Cluster), "c1");
    assert!(!s.has_uncached());
    assert_eq!(
        s.poll_timeout(),
        None,
        "every deadline was cancelled by an arrival"
    );
}

#[test]
fn a_nack_keeps_the_last_good_resource_and_names_resource_and_field() {
    let now = Instant::now();
    let mut s = complete(now);
    let good = s.resource(ResourceType::Cluster, V1).unwrap().value.clone();
    let out = s.on_response(
        &response(CDS, "c2", "n5", vec![bad_cluster(V1), cluster(V2)]),
        SystemTime::now(),
    );
    assert!(!out.acked);
    let nack = only(drain(&mut s, now));
    assert_eq!(nack.type_url, CDS);
    assert_eq!(
        nack.version_info, "c1",
        "a NACK carries the last accepted version"
    );
    assert_eq!(nack.response_nonce, "n5");
    let detail = nack.error_detail.expect("error_detail");
    assert_eq!(detail.code, 3);
    assert!(
        detail
            .message
            .contains(&format!("Cluster {V1}: connect_timeout")),
        "{}",
        detail.message
    );
    let entry = s.resource(ResourceType::Cluster, V1).unwrap();
    assert_eq!(entry.status, ResourceStatus::Nacked);
    assert_eq!(entry.value, good, "the last good value stays");
    assert_eq!(entry.version, "c1");
    assert_eq!(entry.error_version.as_deref(), Some("c2"));
    // The valid resource of the same response was applied.
    let v2 = s.resource(ResourceType::Cluster, V2).unwrap();
    assert_eq!(
        (v2.status, v2.version.as_str()),
        (ResourceStatus::Acked, "c2")
    );
    assert_eq!(s.counters().updates_rejected, 1);
    // The next good response clears the error and moves the version.
    assert!(
        s.on_response(
            &response(CDS, "c3", "n6", vec![cluster(V1), cluster(V2)]),
            SystemTime::now()
        )
        .acked
    );
    let ack = only(drain(&mut s, now));
    assert_eq!((ack.version_info.as_str(), ack.error_detail), ("c3", None));
    assert_eq!(status(&s, ResourceType::Cluster, V1), ResourceStatus::Acked);
}

#[test]
fn an_unreadable_resource_is_nacked_with_its_index() {
    let now = Instant::now();
    let mut s = complete(now);
    let mut garbage = cluster(V1);
    garbage.value = vec![0xff, 0xff, 0xff];
    let out = s.on_response(
        &response(CDS, "c2", "n5", vec![garbage, cluster(V2)]),
        SystemTime::now(),
    );
    assert!(!out.acked);
    assert!(
        out.errors[0].starts_with("Cluster resources[0]: malformed Cluster"),
        "{:?}",
        out.errors
    );
    let mut wrong_type = listener(TARGET, ROUTE);
    wrong_type.type_url = LDS.into();
    let out = s.on_response(
        &response(CDS, "c3", "n6", vec![wrong_type]),
        SystemTime::now(),
    );
    assert!(out.errors[0].contains("type_url"), "{:?}", out.errors);
}

#[test]
fn lds_and_cds_responses_are_complete_sets_rds_and_eds_are_not() {
    let now = Instant::now();
    let mut s = complete(now);
    // EDS: a response naming only v1 says nothing about v2.
    let addr = "127.0.0.1:2".parse().unwrap();
    s.on_response(
        &response(EDS, "e2", "n5", vec![endpoints(V1, &[addr])]),
        SystemTime::now(),
    );
    assert_eq!(
        status(&s, ResourceType::ClusterLoadAssignment, V2),
        ResourceStatus::Acked
    );
    // CDS: a response without v2 deletes it.
    let out = s.on_response(
        &response(CDS, "c2", "n6", vec![cluster(V1)]),
        SystemTime::now(),
    );
    assert!(out.acked && out.changed);
    let v2 = s.resource(ResourceType::Cluster, V2).unwrap();
    assert_eq!(v2.status, ResourceStatus::DoesNotExist);
    assert!(v2.value.is_none());
    // ... and the EDS of a deleted cluster is no longer wanted.
    assert!(
        s.resource(ResourceType::ClusterLoadAssignment, V2)
            .is_none()
    );
    // LDS: an empty response deletes the listener.
    s.on_response(&response(LDS, "l2", "n7", vec![]), SystemTime::now());
    assert_eq!(
        status(&s, ResourceType::Listener, TARGET),
        ResourceStatus::DoesNotExist
    );
}

#[test]
fn ignore_resource_deletion_keeps_what_a_response_leaves_out() {
    let now = Instant::now();
    let mut s = complete(now);
    s.set_ignore_resource_deletion(true);
    s.on_response(
        &response(CDS, "c2", "n6", vec![cluster(V1)]),
        SystemTime::now(),
    );
    assert_eq!(status(&s, ResourceType::Cluster, V2), ResourceStatus::Acked);
}

#[test]
fn the_does_not_exist_timer_starts_only_once_the_subscription_is_sent() {
    let t0 = Instant::now();
    let mut s = AdsState::new();
    s.set_does_not_exist_timeout(Duration::from_secs(15));
    s.watch(TARGET, TARGET);
    // Not connected: nothing sent, no timer, however long we wait.
    assert!(drain(&mut s, t0).is_empty());
    assert_eq!(s.poll_timeout(), None);
    assert!(!s.handle_timeout(t0 + Duration::from_secs(60)));
    assert_eq!(
        status(&s, ResourceType::Listener, TARGET),
        ResourceStatus::Requested
    );
    // Sent at t1: the deadline is t1 + 15 s.
    let t1 = t0 + Duration::from_secs(100);
    s.on_connected();
    drain(&mut s, t1);
    assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(15)));
    assert!(!s.handle_timeout(t1 + Duration::from_secs(14)));
    // The stream breaks: the timer is dropped (an unreachable server says nothing).
    s.on_disconnected();
    assert_eq!(s.poll_timeout(), None);
    // Re-sent at t2: re-armed from t2.
    let t2 = t1 + Duration::from_secs(30);
    s.on_connected();
    drain(&mut s, t2);
    assert_eq!(s.poll_timeout(), Some(t2 + Duration::from_secs(15)));
    assert!(s.handle_timeout(t2 + Duration::from_secs(15)));
    assert_eq!(
        status(&s, ResourceType::Listener, TARGET),
        ResourceStatus::DoesNotExist
    );
    assert!(!s.has_uncached());
    // A late arrival still counts.
    s.on_response(
        &response(LDS, "l1", "n1", vec![listener(TARGET, ROUTE)]),
        SystemTime::now(),
    );
    assert_eq!(
        status(&s, ResourceType::Listener, TARGET),
        ResourceStatus::Acked
    );
}

#[test]
fn a_broken_stream_keeps_the_cache_and_resubscribes_with_known_versions() {
    let now = Instant::now();
    let mut s = complete(now);
    s.on_disconnected();
    assert!(!s.is_connected());
    assert!(
        drain(&mut s, now).is_empty(),
        "nothing is sent while disconnected"
    );
    for ty in ResourceType::ALL {
        assert!(
            s.resources(ty)
                .all(|(_, e)| e.status == ResourceStatus::Acked && e.value.is_some())
        );
    }
    s.on_connected();
    let reqs = drain(&mut s, now);
    let got: Vec<_> = reqs
        .iter()
        .map(|r| {
            (
                r.type_url.as_str(),
                r.version_info.as_str(),
                r.response_nonce.as_str(),
                r.resource_names.len(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (LDS, "l1", "", 1),
            (RDS, "r1", "", 1),
            (CDS, "c1", "", 2),
            (EDS, "e1", "", 2)
        ]
    );
    assert!(reqs[0].node.is_some() && reqs[1..].iter().all(|r| r.node.is_none()));
    assert_eq!(s.poll_timeout(), None, "cached resources get no deadline");
}

#[test]
fn a_route_change_moves_the_cluster_subscriptions() {
    let now = Instant::now();
    let mut s = complete(now);
    s.on_response(
        &response(
            RDS,
            "r2",
            "n5",
            vec![route(ROUTE, "echo.default.svc.cluster.local", &[(V2, 1)])],
        ),
        SystemTime::now(),
    );
    let reqs = drain(&mut s, now);
    let cds = reqs.iter().find(|r| r.type_url == CDS).expect("CDS update");
    assert_eq!(cds.resource_names, [V2]);
    assert!(
        s.resource(ResourceType::Cluster, V1).is_none(),
        "unsubscribed resources are forgotten"
    );
    let Some(Resource::Route { table, .. }) = &s
        .resource(ResourceType::RouteConfiguration, ROUTE)
        .unwrap()
        .value
    else {
        panic!("no route value");
    };
    assert_eq!(table.virtual_hosts().len(), 1);
}

#[test]
fn unsubscribed_resources_in_a_response_are_ignored() {
    let now = Instant::now();
    let mut s = complete(now);
    let out = s.on_response(
        &response(
            CDS,
            "c2",
            "n5",
            vec![cluster(V1), cluster(V2), cluster("other")],
        ),
        SystemTime::now(),
    );
    assert!(out.acked);
    assert!(s.resource(ResourceType::Cluster, "other").is_none());
}

#[test]
fn responses_of_unknown_types_are_ignored() {
    let now = Instant::now();
    let mut s = complete(now);
    let out = s.on_response(
        &response("type.googleapis.com/foo.Bar", "1", "n", vec![]),
        SystemTime::now(),
    );
    assert!(!out.acked && !out.changed);
    assert!(drain(&mut s, now).is_empty());
}
