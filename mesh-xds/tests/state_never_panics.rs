//! Random DiscoveryResponses — arbitrary bytes, and structurally valid resources in random
//! combinations — against the ADS state machine: it never panics, always answers every
//! response for a type it has asked for on the stream with exactly one ACK or NACK, and never
//! opens a type with an empty (in SotW: wildcard) request.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::{
    envoy::{config::core::v3::Node, service::discovery::v3::DiscoveryResponse},
    google::protobuf::Any,
};
use mesh_test_support::resources::*;
use mesh_xds::client::state::{AdsState, ResourceType};
use proptest::prelude::*;
use prost::Message;

const TARGET: &str = "t:80";
const NAMES: [&str; 4] = ["t:80", "r", "c1", "c2"];
const TYPES: [&str; 5] = [
    LDS,
    RDS,
    CDS,
    EDS,
    "type.googleapis.com/google.protobuf.Empty",
];

fn any_resource() -> impl Strategy<Value = Any> {
    let name = prop::sample::select(NAMES.to_vec());
    let weight = 0u32..5;
    prop_oneof![
        (name.clone(), name.clone()).prop_map(|(n, r)| listener(n, r)),
        name.clone().prop_map(socket_listener),
        (
            name.clone(),
            prop::collection::vec((prop::sample::select(NAMES.to_vec()), weight), 0..3)
        )
            .prop_map(|(n, cs)| route(n, "t", &cs)),
        name.clone().prop_map(bad_route),
        name.clone().prop_map(cluster),
        name.clone().prop_map(bad_cluster),
        name.clone()
            .prop_map(|n| endpoints(n, &["127.0.0.1:1".parse().unwrap()])),
        name.clone().prop_map(bad_endpoints),
        (
            prop::sample::select(TYPES.to_vec()),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(t, value)| Any {
                type_url: t.into(),
                value
            }),
    ]
}

fn any_response() -> impl Strategy<Value = DiscoveryResponse> {
    (
        prop::sample::select(TYPES.to_vec()),
        "[a-z0-9]{0,3}",
        "[a-z0-9]{0,3}",
        prop::collection::vec(any_resource(), 0..5),
    )
        .prop_map(|(t, v, n, rs)| response(t, &v, &n, rs))
}

fn drive(responses: Vec<DiscoveryResponse>, ticks: Vec<u8>) {
    let node = Node::default();
    let mut s = AdsState::new();
    s.watch(TARGET, TARGET);
    let t0 = Instant::now();
    s.on_connected();
    let mut now = t0;
    // Types asked for on the current stream.
    let mut asked: Vec<String> = Vec::new();
    let send = |s: &mut AdsState, now: Instant, asked: &mut Vec<String>| {
        let mut sent = Vec::new();
        for _ in 0..8 {
            let Some(req) = s.poll_request(now, &node) else {
                break;
            };
            if !asked.contains(&req.type_url) {
                assert!(
                    !req.resource_names.is_empty(),
                    "a wildcard request: {req:?}"
                );
                asked.push(req.type_url.clone());
            }
            sent.push(req);
        }
        assert!(s.poll_request(now, &node).is_none(), "requests never stop");
        sent
    };
    for (i, r) in responses.iter().enumerate() {
        send(&mut s, now, &mut asked);
        let expects_reply =
            asked.contains(&r.type_url) && ResourceType::from_type_url(&r.type_url).is_some();
        s.on_response(r, SystemTime::now());
        let replies = send(&mut s, now, &mut asked);
        let replies_for_type = replies.iter().filter(|q| q.type_url == r.type_url).count();
        if expects_reply {
            assert_eq!(
                replies_for_type, 1,
                "one ACK/NACK per response: {replies:#?}"
            );
        }
        now += Duration::from_secs(u64::from(ticks.get(i).copied().unwrap_or(0)));
        s.handle_timeout(now);
        if i % 3 == 2 {
            s.on_disconnected();
            s.on_connected();
            asked.clear();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_responses_never_panic(responses in prop::collection::vec(any_response(), 1..12), ticks in prop::collection::vec(any::<u8>(), 0..12)) {
        drive(responses, ticks);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(r) = DiscoveryResponse::decode(bytes.as_slice()) {
            drive(vec![r], vec![]);
        }
    }
}
