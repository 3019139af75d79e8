//! Mirroring through a mesh channel against real tonic servers: the mirror receives a copy of
//! every sampled request, and a hung or dead mirror never affects the primary's responses.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use mesh_test_support::echo as support;
use support::*;
use tokio::sync::Semaphore;

fn mirrored(percent: u32) -> String {
    virtual_service(&format!(
        "  - route:
    - destination: {{host: {HOST}, subset: v1}}
    mirror: {{host: {HOST}, subset: v2}}
    mirrorPercentage: {{value: {percent}}}
"
    ))
}

/// Waits (bounded) until `server` has seen `n` calls: mirrors complete after the primary.
async fn wait_for_calls(server: &Running, n: u32) {
    for _ in 0..1_000 {
        if server.behavior.calls.load(Ordering::SeqCst) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "mirror saw {} of {n} calls",
        server.behavior.calls.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn every_request_is_copied_to_the_mirror_and_answered_by_the_primary() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let v2 = spawn_echo("v2", Behavior::default()).await;
    let mesh = mesh(&[("v1", v1.addr), ("v2", v2.addr)], &mirrored(100));
    let mut client = EchoClient::new(mesh.channel(TARGET));
    for i in 0..50 {
        let reply = client
            .say(request(&format!("m{i}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.served_by, "v1");
    }
    wait_for_calls(&v2, 50).await;
    assert_eq!(v1.behavior.calls.load(Ordering::SeqCst), 50);
}

async fn primary_unaffected_by(mirror: SocketAddr, v1: &Running) {
    let mesh = mesh(&[("v1", v1.addr), ("v2", mirror)], &mirrored(100));
    let mut client = EchoClient::new(mesh.channel(TARGET));
    for i in 0..50 {
        let reply =
            tokio::time::timeout(Duration::from_secs(10), client.say(request(&i.to_string())))
                .await
                .expect("the primary never waits for the mirror")
                .expect("the mirror's failure never reaches the caller");
        assert_eq!(reply.into_inner().served_by, "v1");
    }
}

#[tokio::test]
async fn a_hung_mirror_never_slows_the_primary() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let hung = spawn_echo(
        "v2",
        Behavior {
            hold: Some(Arc::new(Semaphore::new(0))),
            ..Behavior::default()
        },
    )
    .await;
    primary_unaffected_by(hung.addr, &v1).await;
    assert!(
        hung.behavior.in_flight.load(Ordering::SeqCst) > 0,
        "the mirror did receive copies"
    );
}

#[tokio::test]
async fn a_dead_mirror_never_fails_the_primary() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    primary_unaffected_by(dead, &v1).await;
}
