//! Requests the upstream provably did not process — a refused stream, a stream above a
//! GOAWAY's last stream id, a request queued on a connection that is closing — are sent again
//! on another connection, whatever the route's retry policy, against real servers on
//! 127.0.0.1.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use mesh_test_support::echo as support;
use support::*;

/// An HTTP/2 server that refuses every stream with `REFUSED_STREAM`; counts them.
async fn spawn_refusing_server() -> (SocketAddr, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = Arc::new(AtomicU32::new(0));
    let count = refused.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let count = count.clone();
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                while let Some(Ok((_request, mut respond))) = conn.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            });
        }
    });
    (addr, refused)
}

fn round_robin(retries: &str) -> String {
    virtual_service(&format!(
        "  - retries: {retries}\n    route:\n    - destination: {{host: {HOST}}}\n---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo-lb}}
spec:
  host: {HOST}
  trafficPolicy:
    loadBalancer: {{simple: ROUND_ROBIN}}
"
    ))
}

fn mesh_with(servers: &[(&str, SocketAddr)], policy: &str) -> mesh_tower::Mesh {
    // This test's DestinationRule sets the LB; drop the fixture's (one per host).
    let services = services_yaml(servers);
    let service_entry = services.split("---\n").next().unwrap();
    mesh_tower::Mesh::new(config(&format!("{service_entry}---\n{policy}")))
}

#[tokio::test]
async fn refused_streams_are_sent_to_the_healthy_endpoint_without_a_retry_policy() {
    let healthy = spawn_echo("healthy", Behavior::default()).await;
    let (refusing, refused) = spawn_refusing_server().await;
    let mesh = mesh_with(
        &[("healthy", healthy.addr), ("refusing", refusing)],
        &round_robin("{attempts: 0}"),
    );
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let mut failures = 0;
    for i in 0..50 {
        if let Err(status) = client.say(request(&i.to_string())).await {
            failures += 1;
            eprintln!("call {i}: {status:?}");
        }
    }
    assert!(
        refused.load(Ordering::SeqCst) > 0,
        "the refusing endpoint was tried"
    );
    assert_eq!(failures, 0);
    assert_eq!(healthy.behavior.calls.load(Ordering::SeqCst), 50);
}

#[tokio::test]
async fn a_server_refusing_everything_is_answered_unavailable() {
    let (refusing, refused) = spawn_refusing_server().await;
    let mesh = mesh_with(&[("refusing", refusing)], &round_robin("{attempts: 0}"));
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let status = client.say(request("x")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // The first send and a bounded number of resends.
    assert_eq!(refused.load(Ordering::SeqCst), 3);
}

/// A tonic server shutting down gracefully (GOAWAY, then closing once its calls finish) beside a
/// healthy one loses no call, with Istio's default retry policy.
#[tokio::test]
async fn a_graceful_shutdown_mid_traffic_loses_no_call() {
    let healthy = spawn_echo("healthy", Behavior::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let draining_addr = listener.local_addr().unwrap();
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let draining = echo_service("draining", Arc::default());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(draining)
            .serve_with_incoming_shutdown(tokio_stream_from(listener), async move {
                let _ = shutdown_rx.await;
            }),
    );
    let mesh = mesh_with(
        &[("healthy", healthy.addr), ("draining", draining_addr)],
        &round_robin("{attempts: 2}"),
    );
    let channel = mesh.channel(TARGET);

    // Eight callers in a loop; the shutdown starts while they run.
    let mut callers = Vec::new();
    for c in 0..8 {
        let mut client = EchoClient::new(channel.clone());
        callers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..60 {
                if let Err(status) = client.say(request(&format!("{c}-{i}"))).await {
                    failures.push(status);
                }
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    shutdown_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server drains")
        .unwrap()
        .unwrap();
    let mut failures = Vec::new();
    for caller in callers {
        failures.extend(caller.await.unwrap());
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// The accepted connections of `listener`, as tonic's `serve_with_incoming` takes them.
fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        Some((listener.accept().await.map(|(tcp, _)| tcp), listener))
    })
}
