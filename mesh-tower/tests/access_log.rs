//! Access log lines of real calls: a client mesh calls a tonic server behind a server mesh, on
//! 127.0.0.1, and both log each request (text, JSON, filtered, to a file).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod log_support;

use std::time::Duration;

use log_support::{Capture, Captured};
use mesh_test_support::echo as support;
use mesh_test_support::server as server_support;
use mesh_tower::{
    Mesh,
    access_log::{self, AccessLog, Encoding, Filter},
    mesh_core::MeshConfig,
};
use server_support::{PRINCIPAL, spawn_grpc};
use support::{EchoClient, HOST, TARGET, config, request, services_yaml, virtual_service};
use tonic::Code;

const FRONTEND: &str = "cluster.local/ns/prod/sa/frontend";

/// A server mesh and a client mesh routing echo with a named route and no retries, both with
/// their logs; returns the client's channel to the echo server.
async fn meshes(
    client_log: AccessLog,
    server_log: AccessLog,
) -> (mesh_tower::Channel, std::net::SocketAddr) {
    let server_mesh = Mesh::new(MeshConfig::empty());
    assert!(server_mesh.set_access_log(server_log).is_ok());
    let workload = mesh_tower::Workload::new("default", HOST, 50051);
    let grpc = spawn_grpc(server_mesh.server_layer(workload)).await;
    let routes = virtual_service(&format!(
        "  - name: primary\n    retries: {{attempts: 0}}\n    route:\n    - destination: {{host: {HOST}, subset: v1}}\n"
    ));
    let client_mesh = Mesh::new(config(&format!(
        "{}---\n{routes}",
        services_yaml(&[("v1", grpc)])
    )));
    assert!(client_mesh.set_access_log(client_log).is_ok());
    (client_mesh.channel(TARGET), grpc)
}

fn signed(message: &str) -> tonic::Request<support::EchoRequest> {
    let mut req = request(message);
    req.metadata_mut()
        .insert(PRINCIPAL, FRONTEND.parse().unwrap());
    req.metadata_mut()
        .insert("x-request-id", "req-1234".parse().unwrap());
    req
}

async fn fail_in_trailers(channel: &mesh_tower::Channel) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let failed: Result<tonic::Response<support::EchoReply>, _> = grpc
        .unary(
            signed("hi"),
            http::uri::PathAndQuery::from_static("/echo.Trailers/Fail"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    failed.unwrap_err()
}

/// The access log lines captured so far, by reporter; lines are written when a response body
/// ends, which for the server can be just after the client has its answer.
async fn lines(capture: &Capture, want: usize) -> (Vec<Captured>, Vec<Captured>) {
    for _ in 0..200 {
        let all = capture.with_target(access_log::TARGET);
        if all.len() >= want {
            let (client, server) = all
                .into_iter()
                .partition(|e| e.field("reporter") == Some("source"));
            return (client, server);
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "expected {want} access log lines, got {:?}",
        capture.with_target(access_log::TARGET)
    );
}

#[tokio::test]
async fn both_reporters_log_a_text_line_per_request() {
    let capture = log_support::capture();
    let (channel, grpc) = meshes(AccessLog::new(), AccessLog::new()).await;
    let mut client = EchoClient::new(channel);

    client.say(signed("hi")).await.unwrap();
    let (client_lines, server_lines) = lines(&capture, 2).await;
    assert_eq!((client_lines.len(), server_lines.len()), (1, 1));
    let client_line = client_lines[0].message();
    let server_line = server_lines[0].message();

    for line in [client_line, server_line] {
        assert!(line.starts_with('['), "{line}");
        assert!(
            line.contains("\"POST /echo.Echo/Say HTTP/2\" 200 - - - \"-\" 9 "),
            "{line}"
        );
        assert!(line.contains("\"req-1234\""), "{line}");
        assert!(line.contains(&format!("\"{TARGET}\"")), "{line}");
    }
    // The client: its cluster and route, gRPC OK, the trace id, no peer principal.
    let client_cluster = format!("outbound|50051|v1|{HOST}");
    assert!(
        client_line.contains(&format!("\"{grpc}\" {client_cluster} - - - - primary 0 ")),
        "{client_line}"
    );
    assert!(client_line.ends_with(" \"-\""), "{client_line}");
    // The server: Istio's inbound cluster, the peer's address and principal.
    assert!(
        server_line.contains(&format!(" inbound|50051||{HOST} - - 127.0.0.1:")),
        "{server_line}"
    );
    assert!(
        server_line.ends_with(&format!(" \"{FRONTEND}\"")),
        "{server_line}"
    );
    // Both sides name the same trace.
    let trace_id = |line: &str| line.rsplit(' ').nth(1).unwrap().to_owned();
    assert_eq!(trace_id(client_line).len(), 32, "{client_line}");
    assert_eq!(trace_id(client_line), trace_id(server_line));
}

#[tokio::test]
async fn json_lines_use_istio_keys() {
    let capture = log_support::capture();
    let json = AccessLog::new().with_encoding(Encoding::Json);
    let (channel, grpc) = meshes(json.clone(), json).await;

    assert_eq!(fail_in_trailers(&channel).await.code(), Code::Internal);
    let (client_lines, server_lines) = lines(&capture, 2).await;
    for (lines, side) in [(client_lines, "client"), (server_lines, "server")] {
        let line: serde_json::Value = serde_json::from_str(lines[0].message()).unwrap();
        assert_eq!(line["method"], "POST", "{side}: {line}");
        assert_eq!(line["path"], "/echo.Trailers/Fail", "{side}: {line}");
        assert_eq!(line["protocol"], "HTTP/2", "{side}: {line}");
        assert_eq!(line["response_code"], 200, "{side}: {line}");
        assert_eq!(line["grpc_status"], 13, "{side}: {line}");
        assert_eq!(line["request_id"], "req-1234", "{side}: {line}");
        assert_eq!(line["bytes_sent"], 5, "{side}: {line}");
        assert!(line["duration"].is_u64(), "{side}: {line}");
        assert!(
            line["start_time"].as_str().unwrap().ends_with('Z'),
            "{side}: {line}"
        );
        assert_eq!(
            line["trace_id"].as_str().unwrap().len(),
            32,
            "{side}: {line}"
        );
        assert!(line["response_flags"].is_null(), "{side}: {line}");
        let upstream = if side == "client" {
            grpc.to_string().into()
        } else {
            serde_json::Value::Null
        };
        assert_eq!(line["upstream_host"], upstream, "{side}: {line}");
    }
}

#[tokio::test]
async fn an_errors_only_log_has_the_failed_call_and_not_the_successful_one() {
    let capture = log_support::capture();
    let errors = AccessLog::new().with_filter(Filter::errors_only());
    let cel = AccessLog::new().with_filter(Filter::parse("response.grpc_status != 0").unwrap());
    let (channel, _) = meshes(errors, cel).await;
    let mut client = EchoClient::new(channel.clone());

    client.say(signed("hi")).await.unwrap();
    fail_in_trailers(&channel).await;
    // The failed call's two lines; a third (the success) would come first.
    let (client_lines, server_lines) = lines(&capture, 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(capture.with_target(access_log::TARGET).len(), 2);
    for line in client_lines.iter().chain(&server_lines) {
        assert!(line.message().contains("/echo.Trailers/Fail"), "{line:?}");
        assert!(line.message().contains(" 13 "), "{line:?}");
    }
}

#[tokio::test]
async fn a_file_sink_gets_the_lines() {
    let dir = std::env::temp_dir().join(format!("mesh-access-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    let log = AccessLog::new().with_file(&path).unwrap();
    let mut client = EchoClient::new(meshes(log.clone(), AccessLog::new()).await.0);

    client.say(signed("one")).await.unwrap();
    client.say(signed("two")).await.unwrap();
    let mut text = String::new();
    for _ in 0..200 {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in lines {
        assert!(
            line.contains("\"POST /echo.Echo/Say HTTP/2\" 200 "),
            "{line}"
        );
    }
    assert_eq!(log.dropped(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_that_cannot_be_opened_is_an_error() {
    let missing = std::env::temp_dir().join("mesh-access-log-no-such-dir/x/access.log");
    assert!(AccessLog::new().with_file(missing).is_err());
}
