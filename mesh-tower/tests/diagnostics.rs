//! Per-request diagnostics through `tracing`: one retried call over tonic on 127.0.0.1 can be
//! followed at `debug` — its route, its retry and why — with the call's trace id on each event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod log_support;

use mesh_test_support::echo as support;
use support::{
    Behavior, EchoClient, HOST, TARGET, config, request, services_yaml, spawn_echo, virtual_service,
};

#[tokio::test]
async fn a_retried_call_logs_its_route_and_retry_reason_with_its_trace_id() {
    let capture = log_support::capture();
    let flaky = spawn_echo(
        "flaky",
        Behavior {
            fail: Some((1, 2)),
            ..Behavior::default()
        },
    )
    .await;
    let routes = virtual_service(&format!(
        "  - name: primary\n    retries: {{attempts: 2, retryOn: unavailable}}\n    route:\n    - destination: {{host: {HOST}, subset: v1}}\n"
    ));
    let mesh = mesh_tower::Mesh::new(config(&format!(
        "{}---\n{routes}",
        services_yaml(&[("v1", flaky.addr)])
    )));
    let mut client = EchoClient::new(mesh.channel(TARGET));
    client.say(request("hi")).await.unwrap();

    let events = capture.events();
    let routed = events
        .iter()
        .find(|e| e.message() == "routed")
        .unwrap_or_else(|| panic!("no route decision in {events:#?}"));
    assert_eq!(routed.field("route"), Some("primary"));
    assert_eq!(
        routed.field("cluster"),
        Some(format!("outbound|50051|v1|{HOST}").as_str())
    );
    let retry = events
        .iter()
        .find(|e| e.message() == "retrying")
        .unwrap_or_else(|| panic!("no retry in {events:#?}"));
    assert_eq!(retry.level, tracing::Level::DEBUG);
    let reason = retry.field("reason").unwrap();
    assert!(reason.contains("Unavailable"), "{reason}");
    assert!(retry.field("backoff").is_some(), "{retry:?}");

    // Both carry the call's trace id, from the call's span.
    let trace_id = routed
        .field("trace_id")
        .expect("the call's span has its trace id");
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    assert_eq!(retry.field("trace_id"), Some(trace_id));
}

#[tokio::test]
async fn an_answer_the_mesh_makes_itself_is_logged_with_its_flag_and_trace_id() {
    let capture = log_support::capture();
    let mesh = mesh_tower::Mesh::new(mesh_tower::mesh_core::MeshConfig::empty());
    let mut client = EchoClient::new(mesh.channel("nowhere.default.svc.cluster.local:80"));
    let status = client.say(request("hi")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);

    let events = capture.events();
    let answered = events
        .iter()
        .find(|e| e.message() == "answered by the mesh")
        .unwrap_or_else(|| panic!("no synthesized answer in {events:#?}"));
    assert_eq!(answered.field("flags"), Some("NR"));
    let grpc_status = answered.field("grpc_status").unwrap();
    assert!(
        grpc_status.eq_ignore_ascii_case("unavailable"),
        "{grpc_status}"
    );
    assert!(
        answered
            .field("detail")
            .is_some_and(|m| m.contains("nowhere")),
        "{answered:?}"
    );
    assert_eq!(
        answered.field("trace_id").map(str::len),
        Some(32),
        "{answered:?}"
    );
    assert!(
        events.iter().any(|e| e.message().starts_with("not routed")),
        "{events:#?}"
    );
}
