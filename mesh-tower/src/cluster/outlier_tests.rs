//! Outlier detection off the request path: ejections end on time without traffic, failures
//! apply before the next pick, the queue is bounded, and the task lives as long as the cluster.

use std::{sync::Arc, time::Duration};

use mesh_core::{
    Cluster, ConsecutiveRule, Endpoint, EndpointAddress, MeshConfig, Outcome, OutlierDetection,
    Percentage,
};
use tower::ServiceExt;

use crate::{Mesh, admin::Admin};

const FAILURE: Outcome = Outcome::Response {
    http_status: 503,
    grpc_status: None,
};
const SUCCESS: Outcome = Outcome::Response {
    http_status: 200,
    grpc_status: None,
};

fn address(i: u8) -> EndpointAddress {
    EndpointAddress::Socket(format!("10.0.0.{i}:80").parse().unwrap())
}

/// Cluster `name` of three endpoints, ejecting after 3 consecutive 5xx for 30 s (at most one
/// endpoint at a time), or without outlier detection.
fn cluster(name: &str, detecting: bool) -> Arc<Cluster> {
    let mut c = Cluster::new(name, (1..=3).map(|i| Endpoint::new(address(i))).collect());
    c.outlier = detecting.then(|| OutlierDetection {
        consecutive_5xx: Some(ConsecutiveRule {
            threshold: 3,
            enforcing: Percentage::HUNDRED,
        }),
        max_ejection_percent: Percentage::from_ppm(500_000).unwrap(),
        ..OutlierDetection::default()
    });
    Arc::new(c)
}

fn config(clusters: &[Arc<Cluster>]) -> MeshConfig {
    let clusters = clusters
        .iter()
        .map(|c| (c.name.clone(), c.clone()))
        .collect();
    MeshConfig::new(
        "v",
        Default::default(),
        clusters,
        mesh_core::ServerPolicy::default(),
    )
    .unwrap()
}

fn record(mesh: &Mesh, cluster: &str, host: &EndpointAddress, outcome: Outcome, n: usize) {
    let snapshot = mesh.snapshot();
    for _ in 0..n {
        snapshot.clusters[cluster]
            .state
            .record_outcome(host, outcome);
    }
}

fn ejected(mesh: &Mesh, cluster: &str, host: &EndpointAddress) -> bool {
    mesh.snapshot().clusters[cluster].state.is_ejected(host)
}

/// `/clusters`' `ejected` flag of `host`, served by the admin router.
async fn admin_says_ejected(mesh: &Mesh, host: &EndpointAddress) -> bool {
    let registry = Arc::new(prometheus_client::registry::Registry::default());
    let router: axum::Router = Admin::new(mesh, registry).router();
    let request = http::Request::get("/clusters")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let endpoints = json["clusters"][0]["endpoints"].as_array().unwrap();
    let endpoint = endpoints
        .iter()
        .find(|e| e["address"] == host.to_string())
        .unwrap();
    endpoint["ejected"].as_bool().unwrap()
}

/// Lets every other task run until the runtime has `n` tasks alive (bounded).
async fn settle_to(n: usize) -> usize {
    let metrics = tokio::runtime::Handle::current().metrics();
    for _ in 0..100 {
        if metrics.num_alive_tasks() == n {
            break;
        }
        tokio::task::yield_now().await;
    }
    metrics.num_alive_tasks()
}

#[tokio::test(start_paused = true)]
async fn an_ejection_ends_on_time_with_no_traffic() {
    let mesh = Mesh::new(config(&[cluster("c", true)]));
    let bad = address(2);
    record(&mesh, "c", &bad, FAILURE, 3);
    assert!(ejected(&mesh, "c", &bad), "applied before the next pick");
    assert!(admin_says_ejected(&mesh, &bad).await);
    let entry = mesh.snapshot().clusters["c"].clone();
    for _ in 0..30 {
        assert_ne!(entry.pick(None, &[]), Some(1), "no pick of an ejected host");
    }

    // Not one request from here on: the cluster's task returns the host at 30 s.
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(admin_says_ejected(&mesh, &bad).await, "still out at 29 s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !admin_says_ejected(&mesh, &bad).await,
        "back at 30 s with no traffic"
    );
    assert_eq!(entry.stats().ejected, 0);
    assert!(
        (0..3).any(|_| entry.pick(None, &[]) == Some(1)),
        "back in the rotation"
    );
}

#[tokio::test]
async fn the_task_ends_when_the_cluster_is_removed() {
    let baseline = settle_to(0).await;
    let mesh = Mesh::new(config(&[cluster("c", true), cluster("plain", false)]));
    assert_eq!(
        settle_to(baseline).await,
        baseline,
        "no task before traffic"
    );
    record(&mesh, "plain", &address(1), FAILURE, 5);
    assert_eq!(
        settle_to(baseline).await,
        baseline,
        "none without outlier detection"
    );
    record(&mesh, "c", &address(1), SUCCESS, 5);
    record(&mesh, "c", &address(2), FAILURE, 3);
    assert_eq!(
        settle_to(baseline + 1).await,
        baseline + 1,
        "one per cluster"
    );
    // Republishing the cluster keeps its state and its task.
    mesh.publish(Arc::new(config(&[
        cluster("c", true),
        cluster("plain", false),
    ])));
    assert_eq!(settle_to(baseline + 1).await, baseline + 1);
    assert!(ejected(&mesh, "c", &address(2)), "its ejection kept");

    mesh.publish(Arc::new(config(&[cluster("plain", false)])));
    assert_eq!(settle_to(baseline).await, baseline, "the task ended");
}

#[test]
fn a_mesh_built_outside_a_runtime_spawns_its_task_on_first_use() {
    let mesh = Mesh::new(config(&[cluster("c", true)]));
    // Without a runtime a failure still applies at once; there is no task to spawn yet.
    record(&mesh, "c", &address(3), FAILURE, 3);
    assert!(ejected(&mesh, "c", &address(3)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert_eq!(settle_to(0).await, 0);
        record(&mesh, "c", &address(1), SUCCESS, 1);
        assert_eq!(settle_to(1).await, 1, "spawned on the first outcome");
    });
}

#[test]
fn a_full_queue_drops_and_counts_outcomes_and_successes_keep_their_place() {
    let mesh = Mesh::new(config(&[cluster("c", true)]));
    let entry = mesh.snapshot().clusters["c"].clone();
    // No runtime, so no task drains the successes: the queue fills.
    record(&mesh, "c", &address(1), SUCCESS, super::outlier::QUEUE + 76);
    assert_eq!(entry.stats().outcomes_dropped, 76);
    // A failure applies the queue; a success between failures resets the count, in order.
    let host = address(1);
    record(&mesh, "c", &host, FAILURE, 2);
    record(&mesh, "c", &host, SUCCESS, 1);
    record(&mesh, "c", &host, FAILURE, 2);
    assert!(!ejected(&mesh, "c", &host), "never three in a row");
    record(&mesh, "c", &host, FAILURE, 1);
    assert!(ejected(&mesh, "c", &host), "three in a row");
    assert_eq!(entry.stats().outcomes_dropped, 76);
    assert_eq!(entry.stats().ejections, 1);
}

#[test]
fn a_task_that_died_with_its_runtime_is_replaced() {
    let mesh = Mesh::new(config(&[cluster("c", true)]));
    let host = address(1);
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    first.block_on(async {
        record(&mesh, "c", &host, FAILURE, 3);
        assert_eq!(settle_to(1).await, 1);
    });
    drop(first);
    assert!(ejected(&mesh, "c", &host));
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    second.block_on(async {
        // A pick (or `/clusters`) reads the health; with an endpoint ejected and no task, it
        // spawns one, which returns the endpoint on time.
        let entry = mesh.snapshot().clusters["c"].clone();
        assert!(entry.pick(None, &[]).is_some());
        assert_eq!(settle_to(1).await, 1, "a new task");
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(!ejected(&mesh, "c", &host));
    });
}
