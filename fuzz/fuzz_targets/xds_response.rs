//! Arbitrary bytes as an ADS DiscoveryResponse, fed to the xDS client's state machine (which
//! decodes every resource into the mesh-core model): no input panics.

#![no_main]

use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::{config::core::v3::Node, service::discovery::v3::DiscoveryResponse};
use libfuzzer_sys::fuzz_target;
use mesh_xds::client::state::AdsState;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(response) = DiscoveryResponse::decode(data) else {
        return;
    };
    let node = Node::default();
    let mut state = AdsState::new();
    state.watch(
        "reviews.default.svc.cluster.local:9080",
        "reviews.default.svc.cluster.local:9080",
    );
    state.on_connected();
    let now = Instant::now();
    while state.poll_request(now, &node).is_some() {}
    state.on_response(&response, SystemTime::now());
    while state.poll_request(now, &node).is_some() {}
    state.handle_timeout(now + Duration::from_secs(30));
});
