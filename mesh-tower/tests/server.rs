//! The server stack (`mesh.server_layer(..)`) in front of real tonic and axum servers on
//! 127.0.0.1: authorization (ALLOW/DENY/dry-run matrix for gRPC and HTTP callers), server-side
//! fault aborts, the local rate limit and the health-check bypass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use mesh_test_support::echo as support;
use mesh_test_support::server as server_support;
use mesh_tower::{
    Mesh, MeshMetrics, Workload,
    mesh_core::{
        AbortStatus, FaultAbort, FaultPolicy, GrpcCode, Labels, LocalRateLimit, Percentage,
    },
};
use prometheus_client::{encoding::text::encode, registry::Registry};
use server_support::*;
use tonic::Code;

const FRONTEND: &str = "cluster.local/ns/prod/sa/frontend";
const BATCH: &str = "cluster.local/ns/batch/sa/jobs";

fn workload() -> Workload {
    Workload::new("default", "echo.default.svc.cluster.local", 50051)
        .with_labels(Labels::new([("app", "echo"), ("version", "v1")]).unwrap())
}

fn policy(name: &str, annotations: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: default{annotations}}}
spec:
{spec}---
"
    )
}

/// ALLOW only `FRONTEND`, and only `Say`; DENY anything with `x-role: intruder`.
fn authz_yaml() -> String {
    policy(
        "allow-frontend",
        "",
        "  selector: {matchLabels: {app: echo}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: [\"cluster.local/ns/prod/sa/frontend\"]}
    to:
    - operation: {paths: [\"/echo.Echo/Say\", \"/hello\"], methods: [POST, GET]}
",
    ) + &policy(
        "deny-intruders",
        "",
        "  action: DENY
  rules:
  - when:
    - key: request.headers[x-role]
      values: [intruder]
",
    )
}

async fn grpc_code(
    client: &mut support::EchoClient<tonic::transport::Channel>,
    principal: Option<&str>,
    shout: bool,
    role: Option<&str>,
) -> Code {
    let mut req = grpc_request(principal);
    if let Some(role) = role {
        req.metadata_mut().insert("x-role", role.parse().unwrap());
    }
    let result = if shout {
        client.shout(req).await
    } else {
        client.say(req).await
    };
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn grpc_callers_are_allowed_and_denied_by_authorization_policies() {
    let mesh = mesh(&authz_yaml());
    let addr = spawn_grpc(mesh.server_layer(workload())).await;
    let mut client = grpc_client(addr).await;

    // (principal, Shout instead of Say, x-role) → expected code
    let matrix = [
        (Some(FRONTEND), false, None, Code::Ok),
        (Some(FRONTEND), true, None, Code::PermissionDenied), // path not allowed
        (Some(BATCH), false, None, Code::PermissionDenied),   // principal not allowed
        (None, false, None, Code::PermissionDenied),          // plaintext: no principal
        (
            Some(FRONTEND),
            false,
            Some("intruder"),
            Code::PermissionDenied,
        ), // DENY first
        (Some(FRONTEND), false, Some("friend"), Code::Ok),
    ];
    for (principal, shout, role, want) in matrix {
        let got = grpc_code(&mut client, principal, shout, role).await;
        assert_eq!(got, want, "{principal:?} shout={shout} role={role:?}");
    }
    // The denial is trailers-only PERMISSION_DENIED with Envoy's message.
    let status = client.say(grpc_request(Some(BATCH))).await.unwrap_err();
    assert_eq!(status.message(), "RBAC: access denied");
}

#[tokio::test]
async fn a_workload_without_applicable_allow_policies_allows_everyone() {
    // The ALLOW policy selects another app: nothing applies to `echo`.
    let yaml = policy(
        "allow-other",
        "",
        "  selector: {matchLabels: {app: other}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: [nobody]}
",
    );
    let addr = spawn_grpc(mesh(&yaml).server_layer(workload())).await;
    let mut client = grpc_client(addr).await;
    assert_eq!(grpc_code(&mut client, None, false, None).await, Code::Ok);
    assert_eq!(
        grpc_code(&mut client, Some(BATCH), true, None).await,
        Code::Ok
    );
}

#[tokio::test]
async fn namespaces_and_ip_blocks_come_from_the_peer() {
    let yaml = policy(
        "allow-prod",
        "",
        "  action: ALLOW
  rules:
  - from:
    - source: {namespaces: [prod]}
",
    ) + &policy(
        "deny-loopback-batch",
        "",
        "  action: DENY
  rules:
  - from:
    - source: {ipBlocks: [127.0.0.0/8], namespaces: [batch]}
",
    );
    let addr = spawn_grpc(mesh(&yaml).server_layer(workload())).await;
    let mut client = grpc_client(addr).await;
    assert_eq!(
        grpc_code(&mut client, Some(FRONTEND), true, None).await,
        Code::Ok
    );
    assert_eq!(
        grpc_code(&mut client, Some(BATCH), false, None).await,
        Code::PermissionDenied
    );

    // The plaintext address is the one tonic saw: a DENY on loopback catches every caller here.
    let addr = spawn_grpc(mesh(&deny_loopback()).server_layer(workload())).await;
    let mut client = grpc_client(addr).await;
    assert_eq!(
        grpc_code(&mut client, None, false, None).await,
        Code::PermissionDenied
    );
}

#[tokio::test]
async fn http_callers_get_403_from_authorization_policies() {
    let mesh = mesh(&authz_yaml());
    let addr = spawn_http(mesh.server_layer(workload())).await;
    let client = http_client();
    let p = [(PRINCIPAL, FRONTEND)];
    assert_eq!(
        http_call(&client, addr, "GET", "/hello", &p).await,
        (200, "hello".into())
    );
    assert_eq!(http_call(&client, addr, "POST", "/hello", &p).await.0, 200);
    assert_eq!(
        http_call(&client, addr, "PUT", "/hello", &p).await.0,
        403,
        "method"
    );
    assert_eq!(
        http_call(&client, addr, "GET", "/healthz", &p).await.0,
        403,
        "path"
    );
    assert_eq!(
        http_call(&client, addr, "GET", "/hello", &[]).await,
        (403, "RBAC: access denied".into()),
        "no principal"
    );
    let intruder = [(PRINCIPAL, FRONTEND), ("x-role", "intruder")];
    assert_eq!(
        http_call(&client, addr, "GET", "/hello", &intruder).await.0,
        403
    );

    // The plaintext address axum saw (ConnectInfo) reaches ip-block rules.
    let addr = spawn_http(mesh_yaml(&deny_loopback()).server_layer(workload())).await;
    assert_eq!(http_call(&client, addr, "GET", "/hello", &[]).await.0, 403);
}

/// DENY every caller from 127.0.0.1 (every caller of these tests).
fn deny_loopback() -> String {
    policy(
        "deny-loopback",
        "",
        "  action: DENY
  rules:
  - from:
    - source: {ipBlocks: [127.0.0.1/32]}
",
    )
}

fn mesh_yaml(yaml: &str) -> Mesh {
    server_support::mesh(yaml)
}

/// Metrics text of a mesh with metrics installed.
fn scrape(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).unwrap();
    out
}

#[tokio::test]
async fn dry_run_policies_are_counted_but_do_not_deny() {
    let yaml = policy(
        "deny-shout",
        ",\n  annotations: {\"istio.io/dry-run\": \"true\"}",
        "  action: DENY
  rules:
  - to:
    - operation: {paths: [\"/echo.Echo/Shout\"]}
",
    );
    let mesh = mesh_yaml(&yaml);
    let mut registry = Registry::default();
    MeshMetrics::install(&mesh, &mut registry, &workload()).unwrap();
    let addr = spawn_grpc(mesh.server_layer(workload())).await;
    let mut client = grpc_client(addr).await;
    for _ in 0..3 {
        assert_eq!(grpc_code(&mut client, None, true, None).await, Code::Ok);
    }
    assert_eq!(grpc_code(&mut client, None, false, None).await, Code::Ok);
    let text = scrape(&registry);
    assert!(
        text.contains("mesh_authz_dry_run_denied_total{policy=\"deny-shout\"} 3\n"),
        "{text}"
    );
    assert!(!text.contains("mesh_authz_denied_total{"), "{text}");
}

fn abort(status: AbortStatus) -> FaultPolicy {
    FaultPolicy {
        abort: Some(FaultAbort {
            status,
            percentage: Percentage::HUNDRED,
        }),
        ..FaultPolicy::default()
    }
}

#[tokio::test]
async fn server_faults_abort_grpc_and_http_callers() {
    let config = with_server(support::config(""), |s| {
        s.fault = Some(Arc::new(abort(AbortStatus::Grpc(GrpcCode::Unavailable))));
    });
    let mesh = Mesh::new(config);
    let addr = spawn_grpc(mesh.server_layer(workload())).await;
    let mut client = grpc_client(addr).await;
    let status = client.say(grpc_request(None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.message(),
        "injected fault: abort with gRPC UNAVAILABLE"
    );

    let config = with_server(support::config(""), |s| {
        s.fault = Some(Arc::new(abort(AbortStatus::Http(418))));
    });
    let addr = spawn_http(Mesh::new(config).server_layer(workload())).await;
    let (status, body) = http_call(&http_client(), addr, "GET", "/hello", &[]).await;
    assert_eq!(status, 418);
    assert_eq!(body, "injected fault: abort with HTTP 418");
}

#[tokio::test]
async fn the_local_rate_limit_answers_resource_exhausted_and_429_until_refilled() {
    // Two tokens, one more per hour: real-time traffic never refills it by accident.
    let limit = LocalRateLimit::new(2, 1, Duration::from_secs(3600)).unwrap();
    let config = with_server(support::config(""), |s| s.rate_limit = Some(limit));
    let mesh = Mesh::new(config);
    let addr = spawn_grpc(mesh.server_layer(workload())).await;
    let mut client = grpc_client(addr).await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(grpc_code(&mut client, None, false, None).await);
    }
    assert_eq!(codes, [Code::Ok, Code::Ok, Code::ResourceExhausted]);

    // One fill interval later (the clock is paused only while no I/O happens), one token.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(3600)).await;
    tokio::time::resume();
    assert_eq!(grpc_code(&mut client, None, false, None).await, Code::Ok);
    assert_eq!(
        grpc_code(&mut client, None, false, None).await,
        Code::ResourceExhausted
    );

    let addr = spawn_http(mesh.server_layer(workload())).await;
    let client = http_client();
    let statuses = [
        http_call(&client, addr, "GET", "/hello", &[]).await,
        http_call(&client, addr, "GET", "/hello", &[]).await,
        http_call(&client, addr, "GET", "/hello", &[]).await,
    ];
    assert_eq!(statuses.each_ref().map(|s| s.0), [200, 200, 429]);
    assert_eq!(statuses[2].1, "local_rate_limited");
}

#[tokio::test]
async fn health_checks_bypass_policy_only_when_configured() {
    // Deny everything, abort everything, and a one-token bucket.
    let yaml = policy(
        "deny-all",
        "",
        "  action: DENY
  rules:
  - {}
",
    );
    let limit = LocalRateLimit::new(1, 1, Duration::from_secs(3600)).unwrap();
    let config = with_server(support::config(&yaml), |s| {
        s.rate_limit = Some(limit);
        s.fault = Some(Arc::new(abort(AbortStatus::Http(500))));
    });
    let mesh = Mesh::new(config);

    let bypassing = mesh.server_layer(workload()).bypass_health_checks(true);
    let grpc = spawn_grpc(bypassing.clone()).await;
    let http = spawn_http(bypassing).await;
    let mut channel = tonic::client::Grpc::new(
        tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    for _ in 0..3 {
        channel.ready().await.unwrap();
        let reply: tonic::Response<support::EchoReply> = channel
            .unary(
                support::request("ping"),
                http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap();
        assert_eq!(reply.into_inner().message, "ping");
    }
    let mut client = grpc_client(grpc).await;
    assert_eq!(
        grpc_code(&mut client, None, false, None).await,
        Code::PermissionDenied
    );
    let client = http_client();
    for _ in 0..3 {
        assert_eq!(
            http_call(&client, http, "GET", "/healthz", &[]).await.0,
            200
        );
    }
    assert_eq!(http_call(&client, http, "GET", "/hello", &[]).await.0, 403);

    // Without the bypass, health checks are ordinary requests.
    let strict = spawn_http(mesh.server_layer(workload())).await;
    assert_eq!(
        http_call(&client, strict, "GET", "/healthz", &[]).await.0,
        403
    );
}
