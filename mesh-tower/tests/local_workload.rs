//! Policy that depends on the local workload, through a mesh channel against real tonic
//! servers on 127.0.0.1: its locality ranks endpoints and traffic fails over outward; its
//! address is the source IP a consistent hash uses.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, net::SocketAddr, sync::atomic::Ordering};

use mesh_test_support::echo as support;
use mesh_tower::mesh_core::Locality;
use support::*;

/// The echo service over `servers` (name, address, locality), with locality load balancing,
/// outlier detection ejecting after one 5xx, and no retries so each failure is seen.
fn localized(servers: &[(&str, SocketAddr, &str)]) -> String {
    let mut endpoints = String::new();
    for (name, addr, locality) in servers {
        endpoints.push_str(&format!(
            "  - address: {}\n    ports: {{grpc: {}}}\n    locality: {locality}\n    labels: {{version: {name}}}\n",
            addr.ip(),
            addr.port()
        ));
    }
    let destination_rule = "  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting: {enabled: true}
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
";
    format!(
        "{}---\n{}",
        echo_yaml(&endpoints, destination_rule),
        no_retries()
    )
}

fn locality(region: &str, zone: &str) -> Locality {
    Locality {
        region: region.into(),
        zone: zone.into(),
        sub_zone: "".into(),
    }
}

async fn served_by(
    client: &mut EchoClient<mesh_tower::Channel>,
    n: usize,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let served = match client.say(request(&i.to_string())).await {
            Ok(reply) => reply.into_inner().served_by,
            Err(_) => "error".into(),
        };
        *counts.entry(served).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn traffic_stays_in_the_local_zone_and_fails_over_to_the_region_then_further() {
    let near = spawn_echo(
        "near",
        Behavior {
            fail: Some((1, 1)),
            ..Behavior::default()
        },
    )
    .await;
    let region = spawn_echo("region", Behavior::default()).await;
    let far = spawn_echo("far", Behavior::default()).await;
    let yaml = localized(&[
        ("near", near.addr, "eu-west1/eu-west1-a"),
        ("region", region.addr, "eu-west1/eu-west1-b"),
        ("far", far.addr, "us-east1/us-east1-a"),
    ]);
    let mesh = mesh_tower::Mesh::new(config(&yaml));
    assert!(
        mesh.set_local_locality(locality("eu-west1", "eu-west1-a"))
            .is_ok()
    );
    assert!(
        mesh.set_local_locality(locality("us-east1", "us-east1-a"))
            .is_err()
    );
    let mut client = EchoClient::new(mesh.channel(TARGET));

    // The first call goes to the local zone, fails and ejects it; every later call goes to the
    // same region's other zone, none across regions.
    let counts = served_by(&mut client, 20).await;
    assert_eq!(counts.get("error"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("region"), Some(&19), "{counts:?}");
    assert_eq!(near.behavior.calls.load(Ordering::SeqCst), 1);
    assert_eq!(far.behavior.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_healthy_local_zone_takes_all_the_traffic() {
    let near = spawn_echo("near", Behavior::default()).await;
    let far = spawn_echo("far", Behavior::default()).await;
    let yaml = localized(&[
        ("far", far.addr, "us-east1/us-east1-a"),
        ("near", near.addr, "eu-west1/eu-west1-a"),
    ]);
    let mesh = mesh_tower::Mesh::new(config(&yaml));
    assert!(
        mesh.set_local_locality(locality("eu-west1", "eu-west1-a"))
            .is_ok()
    );
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let counts = served_by(&mut client, 20).await;
    assert_eq!(counts.get("near"), Some(&20), "{counts:?}");
}

#[tokio::test]
async fn use_source_ip_sends_every_request_of_this_workload_to_one_endpoint() {
    let a = spawn_echo("a", Behavior::default()).await;
    let b = spawn_echo("b", Behavior::default()).await;
    let c = spawn_echo("c", Behavior::default()).await;
    let yaml = services_yaml(&[("a", a.addr), ("b", b.addr), ("c", c.addr)]).replace(
        "  subsets:\n",
        "  trafficPolicy:\n    loadBalancer: {consistentHash: {useSourceIp: true}}\n  subsets:\n",
    );
    let mesh = mesh_tower::Mesh::new(config(&yaml));
    assert!(mesh.set_local_address("10.1.2.3".parse().unwrap()).is_ok());
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let counts = served_by(&mut client, 30).await;
    assert_eq!(counts.len(), 1, "one endpoint for one source: {counts:?}");
    assert!(!counts.contains_key("error"), "{counts:?}");
}
