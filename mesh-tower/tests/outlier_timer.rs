//! Outlier detection's timer runs without traffic: an endpoint ejected by real failures is back
//! in `/clusters` once its ejection time has passed, with not one request in between (the
//! cluster's task wakes at the detector's deadline; nothing waits for the next pick).
//!
//! Traffic runs in real time against tonic servers on 127.0.0.1; the ejection wait is slept
//! with the clock paused, while no request is in flight.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use mesh_tower::admin::Admin;
use support::*;
use tower::ServiceExt;

const CLUSTER: &str = "outbound|50051||echo.default.svc.cluster.local";

/// Round robin, three consecutive 5xx eject for 30 s, no retries.
fn ejecting(yaml: String) -> String {
    let no_retries = virtual_service(&format!(
        "  - retries: {{attempts: 0}}\n    route:\n    - destination: {{host: {HOST}}}\n"
    ));
    let yaml = yaml.replace(
        "  subsets:\n",
        "  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
  subsets:\n",
    );
    format!("{yaml}---\n{no_retries}")
}

/// The `/clusters` entry of `addr`, served by the admin router in process.
async fn endpoint_state(mesh: &mesh_tower::Mesh, addr: std::net::SocketAddr) -> serde_json::Value {
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
    let cluster = json["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == CLUSTER)
        .cloned()
        .expect("the echo cluster");
    let endpoint = cluster["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .cloned()
        .expect("the endpoint");
    serde_json::json!({ "ejected": endpoint["ejected"], "ejections": cluster["ejections"] })
}

/// Sleeps `d` on the paused clock (no request is in flight meanwhile).
async fn idle_for(d: Duration) {
    tokio::time::pause();
    tokio::time::sleep(d).await;
    tokio::time::resume();
}

#[tokio::test]
async fn an_ejection_ends_in_clusters_on_time_with_no_traffic() {
    let good = spawn_echo("good", Behavior::default()).await;
    let bad = spawn_echo(
        "bad",
        Behavior {
            fail: Some((1, 1)),
            ..Behavior::default()
        },
    )
    .await;
    let yaml = ejecting(services_yaml(&[("good", good.addr), ("bad", bad.addr)]));
    let mesh = mesh_tower::Mesh::new(config(&yaml));
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let mut failures = 0;
    for _ in 0..12 {
        failures += usize::from(client.say(request("hi")).await.is_err());
    }
    assert_eq!(failures, 3);
    let state = endpoint_state(&mesh, bad.addr).await;
    assert_eq!(state["ejected"], true, "{state}");

    idle_for(Duration::from_secs(29)).await;
    let state = endpoint_state(&mesh, bad.addr).await;
    assert_eq!(state["ejected"], true, "still out at 29 s: {state}");
    idle_for(Duration::from_secs(2)).await;
    let state = endpoint_state(&mesh, bad.addr).await;
    assert_eq!(
        state["ejected"], false,
        "back after 30 s without a request: {state}"
    );
    assert_eq!(state["ejections"], 1);
    assert_eq!(bad.behavior.calls.load(Ordering::SeqCst), 3, "no traffic");
}
