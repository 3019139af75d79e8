//! Load balancing through a mesh channel against real tonic servers on 127.0.0.1.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};

use mesh_test_support::echo as support;
use support::*;

#[tokio::test]
async fn ring_hash_keeps_each_user_on_one_endpoint_and_spreads_users() {
    let a = spawn_echo("a", Behavior::default()).await;
    let b = spawn_echo("b", Behavior::default()).await;
    let c = spawn_echo("c", Behavior::default()).await;
    let services = services_yaml(&[("a", a.addr), ("b", b.addr), ("c", c.addr)]);
    let yaml = services.replace(
        "  subsets:\n",
        "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: x-user}\n  subsets:\n",
    );
    let mesh = mesh_tower::Mesh::new(config(&yaml));
    let mut client = EchoClient::new(mesh.channel(TARGET));

    let mut homes: HashMap<String, HashSet<String>> = HashMap::new();
    for round in 0..5 {
        for user in 0..60 {
            let mut req = request(&format!("{round}"));
            req.metadata_mut()
                .insert("x-user", format!("user-{user}").parse().unwrap());
            let served_by = client.say(req).await.unwrap().into_inner().served_by;
            homes
                .entry(format!("user-{user}"))
                .or_default()
                .insert(served_by);
        }
    }
    assert!(
        homes.values().all(|servers| servers.len() == 1),
        "each user sticks: {homes:?}"
    );
    let used: HashSet<_> = homes.values().flatten().collect();
    assert_eq!(used.len(), 3, "60 users spread over all three endpoints");
}
