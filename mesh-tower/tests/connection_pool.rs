//! A DestinationRule's connection-pool settings against tonic servers, as Envoy applies them to
//! an HTTP/2 upstream: `maxRequestsPerConnection` recycles a connection without failing a
//! request, `idleTimeout` closes a connection with nothing in flight, `maxConnections` bounds
//! connections (draining ones included) and `connectTimeout` bounds a connect.
//!
//! Tests that wait for a timeout or for the pool to settle run on the in-memory network under
//! a paused clock (exact, and instant); the others, and the connect timeout against a real
//! kernel's unanswered SYN, run on 127.0.0.1.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use mesh_test_support::echo as support;
use mesh_tower::{Connector, Mesh, MeshMetrics, Workload};
use prometheus_client::{encoding::text::encode, registry::Registry};
use support::{memnet::*, *};
use tokio::sync::Semaphore;
use tonic::Code;

/// A mesh serving the echo servers through `connector`, whose DestinationRule has `pool` as
/// its `connectionPool` (indented by six spaces).
fn pool_mesh(connector: Connector, servers: &[(&str, std::net::SocketAddr)], pool: &str) -> Mesh {
    Mesh::with_connector(config(&pool_yaml(servers, pool)), connector)
}

/// The services of [`pool_mesh`] as YAML.
fn pool_yaml(servers: &[(&str, std::net::SocketAddr)], pool: &str) -> String {
    let services = services_yaml(servers);
    let rule_host = format!("  host: {HOST}\n  subsets:");
    assert!(services.contains(&rule_host));
    services.replace(
        &rule_host,
        &format!("  host: {HOST}\n  trafficPolicy:\n    connectionPool:\n{pool}  subsets:"),
    )
}

/// Waits, in bounded 5 ms steps, until `value` reads `want`; returns the last value read.
/// Under a paused clock each step is a jump of the clock once every task is idle.
async fn wait_for(value: &AtomicU32, want: u32) -> u32 {
    for _ in 0..1_000 {
        if value.load(Ordering::SeqCst) == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    value.load(Ordering::SeqCst)
}

fn held() -> (Arc<Semaphore>, Behavior) {
    let hold = Arc::new(Semaphore::new(0));
    let behavior = Behavior {
        hold: Some(hold.clone()),
        ..Behavior::default()
    };
    (hold, behavior)
}

#[tokio::test(start_paused = true)]
async fn max_requests_per_connection_moves_new_requests_to_a_fresh_connection() {
    let net = MemNet::new();
    let (hold, behavior) = held();
    let server = spawn_echo_in(&net, "v1", behavior);
    let mesh = pool_mesh(
        net.connector(),
        &[("v1", server.addr)],
        "      http: {maxRequestsPerConnection: 2}\n",
    );
    let channel = mesh.channel(TARGET);

    // Three requests in flight at once: two on the first connection, which then takes no
    // more, the third on a fresh one.
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let mut client = EchoClient::new(channel.clone());
            tokio::spawn(async move { client.say(request(&i.to_string())).await })
        })
        .collect();
    assert_eq!(wait_for(&server.behavior.in_flight, 3).await, 3);
    assert_eq!(server.connections.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(server.connections.open.load(Ordering::SeqCst), 2);

    // The recycled connection finishes what it has in flight, then closes.
    hold.add_permits(3);
    for call in calls {
        call.await.unwrap().expect("recycling fails no request");
    }
    assert_eq!(
        wait_for(&server.connections.open, 1).await,
        1,
        "the retired connection is closed once drained"
    );

    // The fresh connection took one request: it takes one more, then is retired too.
    let mut client = EchoClient::new(channel.clone());
    hold.add_permits(2);
    client.say(request("fourth")).await.unwrap();
    client.say(request("fifth")).await.unwrap();
    assert_eq!(server.connections.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_and_the_next_request_reconnects() {
    let net = MemNet::new();
    let (hold, behavior) = held();
    let server = spawn_echo_in(&net, "v1", behavior);
    let mesh = pool_mesh(
        net.connector(),
        &[("v1", server.addr)],
        "      http: {idleTimeout: 300ms}\n",
    );
    let channel = mesh.channel(TARGET);
    let mut client = EchoClient::new(channel.clone());

    // A request in flight longer than the idle timeout keeps its connection: idle means no
    // request in flight.
    let slow = {
        let mut client = client.clone();
        tokio::spawn(async move { client.say(request("slow")).await })
    };
    assert_eq!(wait_for(&server.behavior.in_flight, 1).await, 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(server.connections.open.load(Ordering::SeqCst), 1);
    hold.add_permits(1);
    slow.await.unwrap().expect("not cut by the idle timeout");

    // Then, with nothing in flight, the connection closes after the idle timeout...
    assert_eq!(
        wait_for(&server.connections.open, 0).await,
        0,
        "idle connection closed"
    );
    assert_eq!(server.connections.accepted.load(Ordering::SeqCst), 1);

    // ...and the next request reconnects.
    hold.add_permits(1);
    client.say(request("again")).await.unwrap();
    assert_eq!(server.connections.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn connections_stay_open_while_idle_when_the_timeout_is_zero() {
    let net = MemNet::new();
    let server = spawn_echo_in(&net, "v1", Behavior::default());
    let mesh = pool_mesh(
        net.connector(),
        &[("v1", server.addr)],
        "      http: {idleTimeout: 0s}\n",
    );
    let mut client = EchoClient::new(mesh.channel(TARGET));
    client.say(request("one")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.say(request("two")).await.unwrap();
    assert_eq!(server.connections.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(server.connections.open.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn max_connections_counts_draining_connections_and_queues_the_next_request() {
    let net = MemNet::new();
    let (hold, behavior) = held();
    let server = spawn_echo_in(&net, "v1", behavior);
    // Each connection takes one request, and only one connection may be open.
    let mesh = pool_mesh(
        net.connector(),
        &[("v1", server.addr)],
        "      tcp: {maxConnections: 1}\n      \
         http: {maxRequestsPerConnection: 1, http1MaxPendingRequests: 1}\n",
    );
    let registry = metrics(&mesh);
    let channel = mesh.channel(TARGET);
    let call = |message: &'static str| {
        let mut client = EchoClient::new(channel.clone());
        tokio::spawn(async move { client.say(request(message)).await })
    };

    let first = call("first");
    assert_eq!(wait_for(&server.behavior.in_flight, 1).await, 1);
    // The first connection is retired but still draining: the second request waits, as a
    // pending request, for it to close instead of opening a second connection.
    let second = call("second");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.behavior.in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(server.connections.accepted.load(Ordering::SeqCst), 1);

    // A third finds the pending breaker full and overflows at once (UO), as Envoy answers.
    let third = call("third").await.unwrap().expect_err("pending overflow");
    assert_eq!(third.code(), Code::Unavailable, "{third:?}");

    // When the first finishes its connection closes, and the second gets a fresh one.
    hold.add_permits(1);
    first.await.unwrap().unwrap();
    assert_eq!(wait_for(&server.behavior.in_flight, 1).await, 1);
    assert_eq!(server.connections.accepted.load(Ordering::SeqCst), 2);
    assert!(server.connections.open.load(Ordering::SeqCst) <= 1);
    hold.add_permits(1);
    second.await.unwrap().expect("queued, not failed");

    let text = scrape(&registry);
    assert!(
        text.lines().any(
            |l| l.starts_with("mesh_cluster_upstream_cx_overflow_total{") && !l.ends_with(" 0")
        ),
        "{text}"
    );
}

#[tokio::test]
async fn max_connections_never_leaves_an_endpoint_without_a_connection() {
    let a = spawn_echo("a", Behavior::default()).await;
    let b = spawn_echo("b", Behavior::default()).await;
    // Envoy's rule: over the threshold, a host the balancer picked that has no connection
    // still gets one (and the overflow is counted).
    let mesh = pool_mesh(
        Connector::tcp(),
        &[("a", a.addr), ("b", b.addr)],
        "      tcp: {maxConnections: 1}\n",
    );
    let registry = metrics(&mesh);
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let mut served = std::collections::HashSet::new();
    for i in 0..10 {
        let reply = client.say(request(&i.to_string())).await.unwrap();
        served.insert(reply.into_inner().served_by);
    }
    assert_eq!(served.len(), 2, "both endpoints serve: {served:?}");
    assert_eq!(a.connections.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(b.connections.accepted.load(Ordering::SeqCst), 1);
    let text = scrape(&registry);
    assert!(
        text.lines().any(
            |l| l.starts_with("mesh_cluster_upstream_cx_overflow_total{") && l.ends_with(" 1")
        ),
        "the second endpoint's connection is counted as an overflow: {text}"
    );
}

#[tokio::test]
async fn connect_timeout_bounds_a_connect_that_never_completes() {
    // A listener with a full backlog never completes a handshake: 10.255.255.1 is not routable
    // from loopback tests, so instead a listener that is never accepted from, with its backlog
    // filled first, holds new SYNs unanswered on Linux.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = socket2::Socket::from(listener);
    socket.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    let mesh = pool_mesh(
        Connector::tcp(),
        &[("v1", addr)],
        "      tcp: {connectTimeout: 200ms}\n",
    );
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let started = std::time::Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(5), client.say(request("x")))
        .await
        .expect("answered within the bound")
        .expect_err("cannot connect");
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    assert!(error.message().contains("timed out"), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(socket);
}

/// The same bound on the in-memory network, where a connect delayed past it times out after
/// exactly the configured time (retries off: the call is that one connect).
#[tokio::test(start_paused = true)]
async fn connect_timeout_bounds_a_delayed_connect_exactly() {
    let net = MemNet::new();
    let server = spawn_echo_in(&net, "v1", Behavior::default());
    let host = net.host(server.addr).unwrap();
    host.delay_connect(Some(Duration::from_secs(60)));
    let no_retries = virtual_service(&format!(
        "  - retries: {{attempts: 0}}\n    route:\n    - destination: {{host: {HOST}}}\n"
    ));
    let pool = pool_yaml(
        &[("v1", server.addr)],
        "      tcp: {connectTimeout: 200ms}\n",
    );
    let mesh = Mesh::with_connector(config(&format!("{pool}---\n{no_retries}")), net.connector());
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let started = tokio::time::Instant::now();
    let error = client.say(request("x")).await.expect_err("cannot connect");
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    assert!(error.message().contains("timed out"), "{error:?}");
    assert_eq!(started.elapsed(), Duration::from_millis(200));
    assert_eq!(server.connections.accepted.load(Ordering::SeqCst), 0);
}

/// A mesh over `net` with `pool` and retries off, so a call is exactly one attempt.
fn one_attempt_mesh(net: &MemNet, server: &Running, pool: &str) -> Mesh {
    let no_retries = virtual_service(&format!(
        "  - retries: {{attempts: 0}}\n    route:\n    - destination: {{host: {HOST}}}\n"
    ));
    let pool = pool_yaml(&[("v1", server.addr)], pool);
    Mesh::with_connector(config(&format!("{pool}---\n{no_retries}")), net.connector())
}

/// A connection the server resets is not reused: the next request makes a fresh one.
#[tokio::test(start_paused = true)]
async fn a_reset_connection_is_replaced_by_the_next_request() {
    let net = MemNet::new();
    let server = spawn_echo_in(&net, "v1", Behavior::default());
    let mesh = one_attempt_mesh(&net, &server, "      tcp: {maxConnections: 1}\n");
    let mut client = EchoClient::new(mesh.channel(TARGET));
    client.say(request("one")).await.unwrap();
    net.host(server.addr).unwrap().reset_connections();
    assert_eq!(wait_for(&server.connections.open, 0).await, 0, "reset");
    client
        .say(request("two"))
        .await
        .expect("a fresh connection");
    assert_eq!(server.connections.accepted.load(Ordering::SeqCst), 2);
}

/// A refused connect puts the endpoint in its reconnect backoff (under 100 ms after one
/// failure): calls fail at once without dialing until it ends, then reconnect.
#[tokio::test(start_paused = true)]
async fn a_refused_endpoint_is_not_dialed_again_until_its_backoff_ends() {
    let net = MemNet::new();
    let server = spawn_echo_in(&net, "v1", Behavior::default());
    let host = net.host(server.addr).unwrap();
    let mesh = one_attempt_mesh(&net, &server, "      tcp: {connectTimeout: 1s}\n");
    let mut client = EchoClient::new(mesh.channel(TARGET));
    host.refuse_connections(true);
    let refused = client.say(request("x")).await.expect_err("refused");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("refused"), "{refused:?}");

    host.refuse_connections(false);
    let backing_off = client.say(request("x")).await.expect_err("backing off");
    assert_eq!(backing_off.message(), refused.message(), "the same failure");
    assert_eq!(server.connections.accepted.load(Ordering::SeqCst), 0);

    tokio::time::advance(Duration::from_millis(100)).await;
    client.say(request("x")).await.expect("reconnected");
    assert_eq!(server.connections.accepted.load(Ordering::SeqCst), 1);
}

fn metrics(mesh: &Mesh) -> Registry {
    let mut registry = Registry::default();
    let workload = Workload::new("default", "client.default.svc.cluster.local", 8080);
    MeshMetrics::install(mesh, &mut registry, &workload).unwrap();
    registry
}

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text
}
