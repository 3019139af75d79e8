//! Istio's standard metrics after a known sequence of calls, from both reporters: a client mesh
//! (`reporter="source"`) calls tonic and axum servers behind a server mesh
//! (`reporter="destination"`), all on 127.0.0.1. The `/metrics` text is checked as OpenMetrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mesh_test_support::echo as support;
use mesh_test_support::metrics::sum;
use mesh_test_support::server as server_support;
use mesh_tower::{Mesh, MeshMetrics, Workload, mesh_core::Labels};
use prometheus_client::{encoding::text::encode, registry::Registry};
use server_support::*;
use support::{
    Behavior, EchoClient, HOST, REGISTRY_ONLY, TARGET, config, no_retries, request, services_yaml,
};
use tokio::sync::Semaphore;
use tonic::Code;

const FRONTEND: &str = "cluster.local/ns/prod/sa/frontend";
const WEB: &str = "web.default.svc.cluster.local";

fn scrape(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).unwrap();
    out
}

fn server_workload() -> Workload {
    Workload::new("default", "echo.default.svc.cluster.local", 50051)
        .with_name("echo-v1")
        .with_labels(Labels::new([("app", "echo"), ("version", "v1")]).unwrap())
        .with_principal("cluster.local/ns/default/sa/echo")
}

fn client_workload() -> Workload {
    Workload::new("prod", "frontend.prod.svc.cluster.local", 8080)
        .with_name("frontend-v2")
        .with_labels(Labels::new([("app", "frontend"), ("version", "v2")]).unwrap())
}

/// The client mesh: echo (max 1 request in flight, no retries) and web.
fn client_yaml(grpc: std::net::SocketAddr, http: std::net::SocketAddr) -> String {
    let echo = services_yaml(&[("v1", grpc)]).replace(
        "  subsets:\n",
        "  trafficPolicy:\n    connectionPool:\n      http: {http2MaxRequests: 1}\n  subsets:\n",
    );
    let no_retries = no_retries();
    format!(
        "{echo}---\n{no_retries}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web}}
spec:
  hosts: [{WEB}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  endpoints:
  - address: {}
    ports: {{http: {}}}
",
        http.ip(),
        http.port()
    )
}

fn with_principal(message: &str) -> tonic::Request<support::EchoRequest> {
    let mut req = request(message);
    req.metadata_mut()
        .insert(PRINCIPAL, FRONTEND.parse().unwrap());
    req
}

#[tokio::test]
async fn both_reporters_count_a_known_sequence_of_calls_with_istio_labels() {
    // The servers, behind a server mesh with metrics.
    let server_mesh = Mesh::new(MeshConfigEmpty::get());
    let mut server_registry = Registry::default();
    MeshMetrics::install(&server_mesh, &mut server_registry, &server_workload()).unwrap();
    let hold = Arc::new(Semaphore::new(0));
    let behavior = Arc::new(Behavior {
        hold: Some(hold.clone()),
        ..Behavior::default()
    });
    let layer = server_mesh.server_layer(server_workload());
    let grpc = spawn_grpc_with(layer.clone(), behavior.clone()).await;
    let http = spawn_http(layer).await;

    // The client mesh, with metrics.
    let client_mesh = Mesh::new(config(&client_yaml(grpc, http)));
    let mut client_registry = Registry::default();
    MeshMetrics::install(&client_mesh, &mut client_registry, &client_workload()).unwrap();
    let channel = client_mesh.channel(TARGET);
    let mut client = EchoClient::new(channel.clone());

    // 1. Two successes.
    hold.add_permits(2);
    for _ in 0..2 {
        client.say(with_principal("hi")).await.unwrap();
    }
    // 2. A gRPC error in trailers.
    let mut grpc_client = tonic::client::Grpc::new(channel.clone());
    grpc_client.ready().await.unwrap();
    let failed: Result<tonic::Response<support::EchoReply>, _> = grpc_client
        .unary(
            with_principal("hi"),
            http::uri::PathAndQuery::from_static("/echo.Trailers/Fail"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert_eq!(failed.unwrap_err().code(), Code::Internal);
    // 3. Two concurrent calls with one slot: one is held by the server, the other overflows
    //    at once; then the held one is released.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..2 {
        let mut client = client.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let _ = done.send(client.say(with_principal("hi")).await);
        });
    }
    let first = tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
        .await
        .unwrap()
        .unwrap();
    let overflowed = first.expect_err("the call without a slot overflows first");
    assert_eq!(overflowed.code(), Code::Unavailable, "{overflowed:?}");
    hold.add_permits(1);
    tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
        .await
        .unwrap()
        .unwrap()
        .expect("the held call succeeds once released");
    // 4. HTTP 503 from the axum app.
    let mut web = client_mesh.channel(format!("{WEB}:80"));
    let response = tower::ServiceExt::oneshot(
        &mut web,
        http::Request::get(format!("http://{WEB}/fail"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 503);
    response.into_body().collect().await.unwrap();

    let client_text = scrape(&client_registry);
    let server_text = scrape(&server_registry);
    let total = "istio_requests_total";
    for (text, reporter) in [(&client_text, "source"), (&server_text, "destination")] {
        let r = ("reporter", reporter);
        let ok = [
            r,
            ("request_protocol", "grpc"),
            ("response_code", "200"),
            ("grpc_response_status", "0"),
        ];
        assert_eq!(sum(text, total, &ok), 3.0, "{reporter}: successes\n{text}");
        let internal = [r, ("response_code", "200"), ("grpc_response_status", "13")];
        assert_eq!(
            sum(text, total, &internal),
            1.0,
            "{reporter}: error in trailers\n{text}"
        );
        // Istio's default retry policy retries a 503 twice: the client counts one call, the
        // server three requests.
        let http503 = [
            r,
            ("request_protocol", "http"),
            ("response_code", "503"),
            ("grpc_response_status", ""),
        ];
        let want = if reporter == "source" { 1.0 } else { 3.0 };
        assert_eq!(
            sum(text, total, &http503),
            want,
            "{reporter}: HTTP 503\n{text}"
        );
        // Each "hi" request is 9 bytes on the wire (5-byte frame header + 4-byte message).
        let bytes = sum(text, "istio_request_bytes_sum", &ok);
        assert_eq!(bytes, 27.0, "{reporter}: request bytes\n{text}");
        let durations = sum(text, "istio_request_duration_milliseconds_count", &[r]);
        assert_eq!(
            durations,
            sum(text, total, &[r]),
            "{reporter}: one duration per request"
        );
        assert!(
            text.contains("le=\"3600000.0\""),
            "Istio's largest duration bucket\n{text}"
        );
    }
    // The client's 503 is the last of its three attempts: flagged URX (retry limit exceeded).
    let urx = [("response_code", "503"), ("response_flags", "URX")];
    assert_eq!(sum(&client_text, total, &urx), 1.0, "{client_text}");
    // The overflow is seen by the client only, flagged UO.
    let uo = [("response_flags", "UO"), ("grpc_response_status", "14")];
    assert_eq!(sum(&client_text, total, &uo), 1.0, "{client_text}");
    assert_eq!(sum(&client_text, total, &[]), 6.0);
    assert_eq!(sum(&server_text, total, &[]), 7.0);

    // Labels: the client knows itself and the destination service; the server knows itself and
    // the caller's principal.
    let client_labels = [
        ("source_workload", "frontend-v2"),
        ("source_workload_namespace", "prod"),
        ("source_app", "frontend"),
        ("source_version", "v2"),
        ("source_canonical_service", "frontend"),
        ("source_canonical_revision", "v2"),
        ("destination_canonical_service", "unknown"),
        ("destination_service", HOST),
        ("destination_service_name", "echo"),
        ("destination_service_namespace", "default"),
        ("connection_security_policy", "unknown"),
    ];
    assert_eq!(
        sum(&client_text, total, &client_labels),
        5.0,
        "{client_text}"
    );
    let server_labels = [
        (
            "source_principal",
            "spiffe://cluster.local/ns/prod/sa/frontend",
        ),
        ("source_workload_namespace", "prod"),
        ("destination_workload", "echo-v1"),
        ("destination_workload_namespace", "default"),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/default/sa/echo",
        ),
        ("destination_app", "echo"),
        ("destination_version", "v1"),
        ("destination_canonical_service", "echo"),
        ("destination_canonical_revision", "v1"),
        ("source_canonical_service", "unknown"),
        ("destination_service", "echo.default.svc.cluster.local"),
        ("destination_cluster", "Kubernetes"),
        ("connection_security_policy", "mutual_tls"),
        ("response_flags", "-"),
    ];
    assert_eq!(
        sum(&server_text, total, &server_labels),
        4.0,
        "{server_text}"
    );
    // The HTTP call came without a principal: plaintext.
    let plaintext = [
        ("source_principal", "unknown"),
        ("connection_security_policy", "none"),
    ];
    assert_eq!(sum(&server_text, total, &plaintext), 3.0, "{server_text}");

    // Mesh internals: the overflow is counted on its cluster.
    let overflow = sum(
        &client_text,
        "mesh_cluster_upstream_rq_overflow_total",
        &[(
            "cluster_name",
            "outbound|50051||echo.default.svc.cluster.local",
        )],
    );
    assert_eq!(overflow, 1.0, "{client_text}");
    let retries = sum(
        &client_text,
        "mesh_cluster_upstream_rq_retry_total",
        &[("cluster_name", "outbound|80||web.default.svc.cluster.local")],
    );
    assert_eq!(retries, 2.0, "{client_text}");
}

#[tokio::test]
async fn a_call_the_route_layer_answers_itself_is_counted_by_the_client_as_nr() {
    // No server is needed: a target without configuration is answered by the route layer.
    let unused = "127.0.0.1:9".parse().unwrap();
    let yaml = format!("{}---\n{REGISTRY_ONLY}", client_yaml(unused, unused));
    let client_mesh = Mesh::new(config(&yaml));
    let mut registry = Registry::default();
    MeshMetrics::install(&client_mesh, &mut registry, &client_workload()).unwrap();
    let mut client = EchoClient::new(client_mesh.channel("unknown.default.svc.cluster.local:80"));

    let status = client.say(request("hi")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let text = scrape(&registry);
    let total = "istio_requests_total";
    let nr = [
        ("reporter", "source"),
        ("response_flags", "NR"),
        ("grpc_response_status", "14"),
        ("request_protocol", "grpc"),
        ("destination_service", "unknown.default.svc.cluster.local"),
        ("destination_service_name", "unknown"),
        ("source_workload", "frontend-v2"),
    ];
    assert_eq!(sum(&text, total, &nr), 1.0, "{text}");
    assert_eq!(sum(&text, total, &[]), 1.0, "counted once\n{text}");
    assert_eq!(
        sum(&text, "istio_request_duration_milliseconds_count", &nr),
        1.0,
        "{text}"
    );
}

/// An empty configuration for the server mesh.
struct MeshConfigEmpty;

impl MeshConfigEmpty {
    fn get() -> mesh_tower::mesh_core::MeshConfig {
        mesh_tower::mesh_core::MeshConfig::empty()
    }
}
