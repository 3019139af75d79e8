//! Endpoint connections through a mesh channel against real tonic servers on 127.0.0.1: one
//! shared HTTP/2 connection per endpoint, kept across configuration changes that keep the
//! endpoint, and drained when a change removes it.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use mesh_test_support::echo as support;
use support::*;
use tokio::sync::Semaphore;

#[tokio::test]
async fn connections_are_shared_kept_across_changes_and_drained_on_removal() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let hold = Arc::new(Semaphore::new(0));
    let v2 = spawn_echo(
        "v2",
        Behavior {
            hold: Some(hold.clone()),
            ..Behavior::default()
        },
    )
    .await;
    let both = [("v1", v1.addr), ("v2", v2.addr)];
    let mesh = mesh(&both, &split(100, 0));
    let channel = mesh.channel(TARGET);

    // Forty concurrent requests to v1 share one connection.
    let mut calls = Vec::new();
    for i in 0..40 {
        let mut client = EchoClient::new(channel.clone());
        calls.push(tokio::spawn(async move {
            client.say(request(&i.to_string())).await
        }));
    }
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(v1.connections.accepted.load(Ordering::SeqCst), 1);

    // A new configuration that keeps both endpoints keeps v1's connection.
    mesh.publish(config(&format!("{}---\n{}", services_yaml(&both), split(0, 100))).into());
    let mut client = EchoClient::new(channel.clone());
    let in_flight = tokio::spawn(async move { client.say(request("held")).await });
    for _ in 0..1_000 {
        if v2.behavior.in_flight.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        v2.behavior.in_flight.load(Ordering::SeqCst),
        1,
        "a request is in flight on v2"
    );
    mesh.publish(config(&format!("{}---\n{}", services_yaml(&both), split(100, 0))).into());
    let mut client = EchoClient::new(channel.clone());
    client.say(request("again")).await.unwrap();
    assert_eq!(
        v1.connections.accepted.load(Ordering::SeqCst),
        1,
        "unchanged endpoint, same connection"
    );

    // Removing v2 while its request is in flight: the request still completes (drained) and
    // then v2's connection is closed.
    let only_v1 = [("v1", v1.addr)];
    let yaml = format!(
        "{}---\n{}",
        services_yaml(&only_v1),
        virtual_service(&format!(
            "  - route:\n    - destination: {{host: {HOST}, subset: v1}}\n"
        ))
    );
    mesh.publish(config(&yaml).into());
    assert_eq!(
        v2.connections.open.load(Ordering::SeqCst),
        1,
        "still serving its last request"
    );
    hold.add_permits(1);
    let reply = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(reply.into_inner().served_by, "v2");
    for _ in 0..1_000 {
        if v2.connections.open.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        v2.connections.open.load(Ordering::SeqCst),
        0,
        "the removed endpoint's connection is closed"
    );
    assert_eq!(v1.connections.open.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_dns_endpoint_is_resolved_when_connecting() {
    let server = spawn_echo("dns", Behavior::default()).await;
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [{HOST}]
  resolution: DNS
  ports:
  - {{number: 50051, name: grpc, protocol: GRPC}}
  endpoints:
  - address: localhost
    ports: {{grpc: {}}}
",
        server.addr.port()
    );
    let mesh = mesh_tower::Mesh::new(config(&yaml));
    let mut client = EchoClient::new(mesh.channel(TARGET));
    // `localhost` resolves from /etc/hosts (no DNS traffic leaves the machine) and may give ::1
    // first; the server listens on 127.0.0.1 only, so this also shows that every resolved
    // address is tried.
    let reply = client.say(request("hi")).await.unwrap().into_inner();
    assert_eq!(reply.served_by, "dns");
}
