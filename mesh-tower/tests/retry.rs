//! Retries through a mesh channel against tonic servers: on the in-memory network with paused
//! time where backoffs and waits would otherwise take real time, and on 127.0.0.1.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use mesh_test_support::echo as support;
use mesh_tower::{
    Connector,
    mesh_core::{MeshConfig, Percentage, RetryBudget},
};
use support::{memnet::*, *};
use tokio::sync::Semaphore;
use tonic::Code;

fn retries(attempts: u32, lb: &str) -> String {
    virtual_service(&format!(
        "  - retries: {{attempts: {attempts}, retryOn: unavailable}}
    route:
    - destination: {{host: {HOST}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo-lb}}
spec:
  host: {HOST}
  trafficPolicy:
    loadBalancer: {{simple: {lb}}}
"
    ))
}

/// A mesh connecting through `connector` to the servers, with `policy`.
fn mesh_with(
    connector: Connector,
    servers: &[(&str, std::net::SocketAddr)],
    policy: &str,
) -> mesh_tower::Mesh {
    // The fixture's DestinationRule has the subsets; this test's one sets the LB, so drop the
    // fixture's (one DestinationRule per host).
    let services = services_yaml(servers);
    let service_entry = services.split("---\n").next().unwrap();
    mesh_tower::Mesh::with_connector(config(&format!("{service_entry}---\n{policy}")), connector)
}

#[tokio::test(start_paused = true)]
async fn two_failures_in_three_are_hidden_by_retries_and_attempts_stop_at_the_limit() {
    let net = MemNet::new();
    let flaky = spawn_echo_in(
        &net,
        "flaky",
        Behavior {
            fail: Some((2, 3)),
            ..Behavior::default()
        },
    );
    let mesh = mesh_with(
        net.connector(),
        &[("flaky", flaky.addr)],
        &retries(2, "ROUND_ROBIN"),
    );
    let mut client = EchoClient::new(mesh.channel(TARGET));
    for i in 0..100 {
        client
            .say(request(&i.to_string()))
            .await
            .unwrap_or_else(|s| panic!("request {i}: {s:?}"));
    }
    assert_eq!(
        flaky.behavior.calls.load(Ordering::SeqCst),
        300,
        "each request took three attempts"
    );

    let down = spawn_echo_in(
        &net,
        "down",
        Behavior {
            fail: Some((1, 1)),
            ..Behavior::default()
        },
    );
    let mesh = mesh_with(
        net.connector(),
        &[("down", down.addr)],
        &retries(3, "ROUND_ROBIN"),
    );
    let mut client = EchoClient::new(mesh.channel(TARGET));
    for _ in 0..10 {
        let status = client.say(request("x")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("failing on purpose"),
            "the last attempt's answer: {status:?}"
        );
    }
    assert_eq!(
        down.behavior.calls.load(Ordering::SeqCst),
        40,
        "1 + 3 attempts per request"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_goes_to_an_endpoint_not_tried_yet() {
    let net = MemNet::new();
    let good = spawn_echo_in(&net, "good", Behavior::default());
    let bad = spawn_echo_in(
        &net,
        "bad",
        Behavior {
            fail: Some((1, 1)),
            ..Behavior::default()
        },
    );
    // Random balancing: without avoiding the tried endpoint, about half of the retries of
    // requests that first went to `bad` would go there again and fail.
    let mesh = mesh_with(
        net.connector(),
        &[("good", good.addr), ("bad", bad.addr)],
        &retries(1, "RANDOM"),
    );
    let mut client = EchoClient::new(mesh.channel(TARGET));
    for i in 0..200 {
        let reply = client
            .say(request(&i.to_string()))
            .await
            .unwrap_or_else(|s| panic!("request {i}: {s:?}"));
        assert_eq!(reply.into_inner().served_by, "good");
    }
    assert!(
        bad.behavior.calls.load(Ordering::SeqCst) > 50,
        "random balancing did send first attempts to `bad`"
    );
}

/// `config` with a retry budget on every cluster.
fn with_budget(config: &MeshConfig, budget: RetryBudget) -> MeshConfig {
    let clusters = config
        .clusters()
        .iter()
        .map(|(name, cluster)| {
            let mut cluster = (**cluster).clone();
            cluster.breaker.retry_budget = Some(budget);
            (name.clone(), Arc::new(cluster))
        })
        .collect();
    MeshConfig::new(
        "budget",
        config.listeners().clone(),
        clusters,
        (**config.server()).clone(),
    )
    .unwrap()
}

/// Sends `n` concurrent requests to a server that fails first attempts and holds retries, and
/// returns (retries held at the server, requests answered without a held retry).
async fn retries_in_flight(mesh: &mesh_tower::Mesh, server: &Running, n: usize) -> (u32, usize) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..n {
        let mut client = EchoClient::new(mesh.channel(TARGET));
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(client.say(request(&i.to_string())).await);
        });
    }
    let mut answered = 0;
    for _ in 0..2_000 {
        while let Ok(result) = rx.try_recv() {
            let status = result.expect_err("only requests without a held retry complete");
            assert_eq!(status.code(), Code::Unavailable);
            answered += 1;
        }
        if answered + server.behavior.in_flight.load(Ordering::SeqCst) as usize == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (server.behavior.in_flight.load(Ordering::SeqCst), answered)
}

#[tokio::test(start_paused = true)]
async fn with_every_first_attempt_failing_the_budget_keeps_retries_to_its_share() {
    const N: usize = 50;
    let net = MemNet::new();
    let hold = Arc::new(Semaphore::new(0));
    let server = spawn_echo_in(
        &net,
        "s",
        Behavior {
            hold_retries: Some(hold.clone()),
            ..Behavior::default()
        },
    );
    let base = config(&format!(
        "{}---\n{}",
        services_yaml(&[("s", server.addr)])
            .split("---\n")
            .next()
            .unwrap(),
        retries(1, "ROUND_ROBIN")
    ));

    // Without a budget (Istio leaves max_retries unbounded) every failed request retries.
    let unbounded = mesh_tower::Mesh::with_connector(base.clone(), net.connector());
    let (held, answered) = retries_in_flight(&unbounded, &server, N).await;
    assert_eq!((held as usize, answered), (N, 0));
    hold.add_permits(N);
    for _ in 0..1_000 {
        if server.behavior.in_flight.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A 20 % budget (at least 3) admits retries only up to its share of the active requests:
    // at most max(3, 20 % × (N + retries)) ≤ 12 of N.
    let budget = RetryBudget {
        budget_percent: Percentage::from_percent(20).unwrap(),
        min_retry_concurrency: 3,
    };
    let budgeted = mesh_tower::Mesh::with_connector(with_budget(&base, budget), net.connector());
    let (held, answered) = retries_in_flight(&budgeted, &server, N).await;
    assert!((3..=12).contains(&held), "{held} retries in flight");
    assert_eq!(held as usize + answered, N);
    hold.add_permits(N);
}

/// A user's per-attempt layer: records each attempt's cluster and attempt count.
#[derive(Clone)]
struct Recording<S> {
    inner: S,
    seen: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl<S, B> tower::Service<http::Request<B>> for Recording<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> S::Future {
        let cluster = req
            .extensions()
            .get::<mesh_tower::RouteDecision>()
            .map(|d| d.cluster_name().to_owned())
            .unwrap_or_default();
        let attempt = req.headers()["x-envoy-attempt-count"]
            .to_str()
            .unwrap()
            .to_owned();
        self.seen.lock().unwrap().push((cluster, attempt));
        self.inner.call(req)
    }
}

/// On 127.0.0.1: retries over real connections.
#[tokio::test]
async fn a_per_attempt_layer_sees_every_attempt_with_its_route_decision() {
    let flaky = spawn_echo(
        "flaky",
        Behavior {
            fail: Some((2, 3)),
            ..Behavior::default()
        },
    )
    .await;
    let mesh = mesh_with(
        Connector::tcp(),
        &[("flaky", flaky.addr)],
        &retries(2, "ROUND_ROBIN"),
    );
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let layer = tower::layer::layer_fn(move |inner| Recording {
        inner,
        seen: recorder.clone(),
    });
    let mut client = EchoClient::new(mesh.channel_with_attempt_layer(TARGET, layer));
    client.say(request("x")).await.unwrap();
    let cluster = format!("outbound|50051||{HOST}");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (cluster.clone(), "1".into()),
            (cluster.clone(), "2".into()),
            (cluster, "3".into())
        ]
    );
}
