//! Policies enforced by a mesh channel against real tonic servers on 127.0.0.1: fault
//! injection, the circuit breaker, and configuration swaps under load.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use mesh_test_support::echo as support;
use support::*;
use tokio::sync::Semaphore;
use tonic::Code;

#[tokio::test]
async fn a_thirty_percent_abort_fails_thirty_percent_with_the_configured_status() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let policy = virtual_service(&format!(
        "  - fault:
      abort: {{httpStatus: 404, percentage: {{value: 30}}}}
    route:
    - destination: {{host: {HOST}}}
"
    ));
    let mesh = mesh(&[("v1", v1.addr)], &policy);
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let n = 2_000;
    let mut injected = 0;
    for _ in 0..n {
        match client.say(request("x")).await {
            Ok(_) => {}
            Err(status) => {
                // gRPC's mapping of HTTP 404, and a message that says it was injected.
                assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
                assert!(status.message().contains("injected fault"), "{status:?}");
                injected += 1;
            }
        }
    }
    let share = f64::from(injected) / f64::from(n);
    assert!((share - 0.30).abs() <= 0.04, "{share}");
    assert_eq!(
        v1.behavior.calls.load(Ordering::SeqCst),
        n - injected,
        "aborted calls never reach the server"
    );
}

#[tokio::test]
async fn the_breaker_rejects_exactly_the_excess_over_its_limit() {
    const LIMIT: usize = 5;
    const EXCESS: usize = 7;
    let hold = Arc::new(Semaphore::new(0));
    let v1 = spawn_echo(
        "v1",
        Behavior {
            hold: Some(hold.clone()),
            ..Behavior::default()
        },
    )
    .await;
    let servers = [("v1", v1.addr)];
    // One DestinationRule per host: add the limit to the fixture's.
    let yaml = services_yaml(&servers).replace(
        "  subsets:\n",
        &format!("  trafficPolicy:\n    connectionPool:\n      http: {{http2MaxRequests: {LIMIT}}}\n  subsets:\n"),
    );
    let mesh = mesh_tower::Mesh::new(config(&yaml));
    let channel = mesh.channel(TARGET);

    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..LIMIT + EXCESS {
        let mut client = EchoClient::new(channel.clone());
        let done = done_tx.clone();
        tokio::spawn(async move {
            let result = client.say(request(&i.to_string())).await;
            let _ = done.send(result);
        });
    }
    // The excess is answered at once, while the admitted requests are held by the server.
    let mut overflowed = 0;
    for _ in 0..EXCESS {
        let result = tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
            .await
            .unwrap()
            .unwrap();
        let status = result.expect_err("only overflows complete while the server holds calls");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("circuit breaker"), "{status:?}");
        overflowed += 1;
    }
    hold.add_permits(LIMIT);
    let mut succeeded = 0;
    for _ in 0..LIMIT {
        let result = tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
            .await
            .unwrap()
            .unwrap();
        result.expect("admitted calls succeed once released");
        succeeded += 1;
    }
    assert_eq!((succeeded, overflowed), (LIMIT, EXCESS));
    assert_eq!(v1.behavior.calls.load(Ordering::SeqCst) as usize, LIMIT);
}

fn versioned(k: usize, v2_weight: u32) -> String {
    virtual_service(&format!(
        "  - headers:
      request: {{set: {{x-config-version: \"{k}\"}}}}
      response: {{set: {{x-config-version: \"{k}\"}}}}
    route:
    - destination: {{host: {HOST}, subset: v1}}
      weight: {}
    - destination: {{host: {HOST}, subset: v2}}
      weight: {v2_weight}
",
        100 - v2_weight
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_swaps_under_load_fail_nothing_and_never_mix_versions() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let v2 = spawn_echo("v2", Behavior::default()).await;
    let servers = [("v1", v1.addr), ("v2", v2.addr)];
    let configs: Vec<_> = (0..=100)
        .map(|k| {
            Arc::new(config(&format!(
                "{}---\n{}",
                services_yaml(&servers),
                versioned(k, (k as u32 * 7) % 101)
            )))
        })
        .collect();
    let mesh = mesh_tower::Mesh::new((*configs[0]).clone());

    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 625; // 10,000 requests in all
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = EchoClient::new(mesh.channel(TARGET));
        tasks.push(tokio::spawn(async move {
            let mut seen = HashSet::new();
            for i in 0..PER_CLIENT {
                let response = client
                    .say(request(&format!("{c}-{i}")))
                    .await
                    .unwrap_or_else(|status| panic!("request {c}-{i} failed: {status:?}"));
                let sent = response
                    .metadata()
                    .get("x-config-version")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                let reply = response.into_inner();
                // The request's and the response's header changes come from one version.
                assert_eq!(reply.config_version, sent, "request {c}-{i} mixed versions");
                seen.insert(sent);
            }
            seen
        }));
    }
    let publisher = {
        let mesh = mesh.clone();
        tokio::spawn(async move {
            for config in &configs[1..] {
                tokio::time::sleep(Duration::from_millis(2)).await;
                mesh.publish(config.clone());
            }
        })
    };
    let mut versions = HashSet::new();
    for t in tasks {
        versions.extend(t.await.unwrap());
    }
    publisher.await.unwrap();
    assert!(
        versions.len() > 10,
        "swaps happened during the load: {} versions seen",
        versions.len()
    );
    let served =
        v1.behavior.calls.load(Ordering::SeqCst) + v2.behavior.calls.load(Ordering::SeqCst);
    assert_eq!(served as usize, CLIENTS * PER_CLIENT);
}
