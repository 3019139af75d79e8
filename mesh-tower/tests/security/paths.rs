//! Request-head normalization against authorization bypasses (Istio's CVE-2021-31920 family):
//! encoded, dotted and backslashed paths, `%00`, health-check paths that climb out of the
//! health service, lower-case methods, and an authority that differs between the URI and
//! `Host`.
//!
//! Every request is sent with hyper's connection-level clients, which put the request target
//! on the wire exactly as given (no normalization of their own), over HTTP/1.1 and HTTP/2
//! (prior knowledge). Each case asserts what the application saw, or that it saw nothing.

use std::net::SocketAddr;

use axum::{Router, extract::Path, routing::get};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_tower::{Mesh, ServerLayer, Workload, mesh_core::Labels};

use crate::server_support::{mesh, spawn_grpc};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    Http1,
    Http2,
}

const BOTH: [Version; 2] = [Version::Http1, Version::Http2];

/// A response as the client got it.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: String,
    /// `grpc-status` from the headers (trailers-only) or the trailers.
    grpc_status: Option<String>,
}

fn workload() -> Workload {
    Workload::new("default", "web.default.svc.cluster.local", 8080)
        .with_labels(Labels::new([("app", "web")]).unwrap())
}

fn policy(name: &str, action: &str, operation: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  action: {action}
  rules:
  - to:
    - operation: {operation}
---
"
    )
}

/// An axum app that tells what it saw: `/files/{*name}` answers `file:<name>` (the extractor
/// percent-decodes, as file servers do), `/whoami` answers `host:<Host header>`, and any other
/// path and method answers `path:<path as routed>`.
async fn spawn_app(layer: ServerLayer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/files/{*name}",
            get(|Path(name): Path<String>| async move { format!("file:{name}") }),
        )
        .route(
            "/whoami",
            get(|headers: HeaderMap| async move {
                let host = headers.get(http::header::HOST).map(|h| h.to_str().unwrap());
                format!("host:{}", host.unwrap_or("-"))
            }),
        )
        .fallback(
            |req: Request<axum::body::Body>| async move { format!("path:{}", req.uri().path()) },
        )
        .layer(layer);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Sends `method target` over a fresh connection of `version`, the target verbatim.
///
/// HTTP/1.1: `target` is the request-target (origin-form `/..` or absolute-form `http://..`)
/// and `Host` is the server's address unless `headers` has one. HTTP/2: an origin-form
/// target gets `:scheme http` and `:authority` the server's address.
async fn send(
    addr: SocketAddr,
    version: Version,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = TokioIo::new(stream);
    let mut builder = Request::builder().method(method);
    builder = match version {
        Version::Http1 => {
            builder = builder.uri(target);
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
                builder = builder.header("host", addr.to_string());
            }
            builder
        }
        Version::Http2 if target.starts_with('/') => builder
            .uri(format!("http://{addr}{target}"))
            .version(http::Version::HTTP_2),
        Version::Http2 => builder.uri(target).version(http::Version::HTTP_2),
    };
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = if headers
        .iter()
        .any(|(_, v)| v.starts_with("application/grpc"))
    {
        // One empty message: an `EchoRequest` with its defaults.
        Bytes::from_static(&[0, 0, 0, 0, 0])
    } else {
        Bytes::new()
    };
    let request = builder.body(Full::new(body)).unwrap();
    let response = match version {
        Version::Http1 => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        }
        Version::Http2 => {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        }
    };
    let status = response.status();
    let mut grpc_status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    let collected = response.into_body().collect().await.unwrap();
    if let Some(trailers) = collected.trailers() {
        grpc_status = grpc_status.or_else(|| {
            trailers
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_owned())
        });
    }
    let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    Answer {
        status,
        body,
        grpc_status,
    }
}

async fn get_path(addr: SocketAddr, version: Version, target: &str) -> Answer {
    send(addr, version, "GET", target, &[]).await
}

/// A unary gRPC call of `path` (one empty message) over HTTP/2.
async fn grpc_call(addr: SocketAddr, path: &str) -> Answer {
    send(
        addr,
        Version::Http2,
        "POST",
        path,
        &[("content-type", "application/grpc"), ("te", "trailers")],
    )
    .await
}

fn assert_denied(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::FORBIDDEN,
        "{what} must be denied; the application answered {:?}",
        answer.body
    );
}

fn assert_bad_request(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::BAD_REQUEST,
        "{what} must be refused; the application answered {:?}",
        answer.body
    );
}

fn assert_served(answer: &Answer, body: &str, what: &str) {
    assert_eq!(answer.status, StatusCode::OK, "{what}: {answer:?}");
    assert_eq!(answer.body, body, "{what}");
}

// === paths ===

/// DENY `/admin`, `/admin/*` and `/files/secret*`.
fn deny_admin() -> Mesh {
    mesh(&policy(
        "deny-admin",
        "DENY",
        "{paths: [/admin, \"/admin/*\", \"/files/secret*\"]}",
    ))
}

#[tokio::test]
async fn encoded_dotted_and_backslashed_paths_do_not_dodge_a_deny() {
    let addr = spawn_app(deny_admin().server_layer(workload())).await;
    let attacks = [
        "/%61dmin",
        "/%41dmin/../admin",
        "/public/../admin",
        "/./admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin/users",
        "/public\\..\\admin",
        "/public/..\\admin/",
        "/files/%73ecret.txt",
        "/files/./secret.txt",
    ];
    for version in BOTH {
        for target in attacks {
            let answer = get_path(addr, version, target).await;
            assert_denied(&answer, &format!("{version:?} {target}"));
        }
        // The same paths, spelled plainly, are denied too (the policy works at all).
        for target in ["/admin", "/admin/users", "/files/secret.txt"] {
            assert_denied(&get_path(addr, version, target).await, target);
        }
    }
}

#[tokio::test]
async fn the_application_sees_the_path_that_was_judged() {
    let addr = spawn_app(deny_admin().server_layer(workload())).await;
    for version in BOTH {
        let cases = [
            ("/public/./page", "path:/public/page"),
            ("/public/%70age/../index", "path:/public/index"),
            ("/public\\page", "path:/public/page"),
            ("/files/%70ublic.txt", "file:public.txt"),
            ("/a%3fb?x=%2e%2e/admin", "path:/a%3Fb"),
        ];
        for (target, seen) in cases {
            let answer = get_path(addr, version, target).await;
            assert_served(&answer, seen, &format!("{version:?} {target}"));
        }
    }
}

#[tokio::test]
async fn nul_and_broken_escapes_are_refused_with_400() {
    let addr = spawn_app(deny_admin().server_layer(workload())).await;
    for version in BOTH {
        for target in ["/admin%00", "/public%00/../admin", "/%zzadmin", "/admin%2"] {
            let answer = get_path(addr, version, target).await;
            assert_bad_request(&answer, &format!("{version:?} {target}"));
        }
    }
}

#[tokio::test]
async fn an_allow_on_a_prefix_does_not_let_dot_segments_out() {
    let mesh = mesh(&policy("allow-public", "ALLOW", "{paths: [\"/public/*\"]}"));
    let addr = spawn_app(mesh.server_layer(workload())).await;
    for version in BOTH {
        for target in [
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public\\..\\admin",
        ] {
            assert_denied(
                &get_path(addr, version, target).await,
                &format!("{version:?} {target}"),
            );
        }
        let answer = get_path(addr, version, "/public/a/../b").await;
        assert_served(&answer, "path:/public/b", "inside the prefix");
    }
}

#[tokio::test]
async fn not_paths_are_not_escaped_by_encoding() {
    let mesh = mesh(&policy(
        "allow-but-admin",
        "ALLOW",
        "{notPaths: [\"/admin*\"]}",
    ));
    let addr = spawn_app(mesh.server_layer(workload())).await;
    for version in BOTH {
        for target in ["/%61dmin", "/%61%64%6D%69%6E/x", "/x/../admin"] {
            assert_denied(
                &get_path(addr, version, target).await,
                &format!("{version:?} {target}"),
            );
        }
        assert_served(
            &get_path(addr, version, "/other").await,
            "path:/other",
            "other",
        );
    }
}

#[tokio::test]
async fn grpc_paths_are_normalized_before_authorization_and_routing() {
    let mesh = mesh(&policy("deny-shout", "DENY", "{paths: [/echo.Echo/Shout]}"));
    let addr = spawn_grpc(mesh.server_layer(workload())).await;
    // `7` PERMISSION_DENIED, `3` INVALID_ARGUMENT, `0` OK.
    let cases = [
        ("/echo.Echo/Shout", "7"),
        ("/echo.Echo/%53hout", "7"),
        ("/echo.Echo/Say/../Shout", "7"),
        ("/echo.Echo\\Shout", "7"),
        ("/echo.Echo/./Say", "0"),
        ("/echo.Echo/Shout%00", "3"),
    ];
    for (path, code) in cases {
        let answer = grpc_call(addr, path).await;
        assert_eq!(
            answer.grpc_status.as_deref(),
            Some(code),
            "{path}: {answer:?}"
        );
    }
}

// === health checks ===

#[tokio::test]
async fn only_exact_health_check_paths_bypass_policy() {
    let mesh = deny_admin();
    let layer = mesh.server_layer(workload()).bypass_health_checks(true);
    let addr = spawn_app(layer).await;
    for version in BOTH {
        for target in [
            "/grpc.health.v1.Health/../../admin",
            "/grpc.health.v1.Health/../admin",
            "/grpc.health.v1.Health/Check/../../admin",
            "/healthz/../admin",
            "/grpc.health.v1.Health/%2e%2e/admin",
        ] {
            assert_denied(
                &get_path(addr, version, target).await,
                &format!("{version:?} {target}"),
            );
        }
    }

    // Over gRPC: out of the health service into a denied method.
    let mesh = mesh_deny_all_but_health();
    let layer = mesh.server_layer(workload()).bypass_health_checks(true);
    let grpc = spawn_grpc(layer).await;
    for path in [
        "/grpc.health.v1.Health/../echo.Echo/Say",
        "/grpc.health.v1.Health/Check/../../echo.Echo/Say",
    ] {
        let answer = grpc_call(grpc, path).await;
        assert_eq!(
            answer.grpc_status.as_deref(),
            Some("7"),
            "{path}: {answer:?}"
        );
    }
    // The exact health-check path still bypasses a deny-everything policy.
    let answer = grpc_call(grpc, "/grpc.health.v1.Health/Check").await;
    assert_eq!(answer.grpc_status.as_deref(), Some("0"), "{answer:?}");
}

fn mesh_deny_all_but_health() -> Mesh {
    mesh(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: default}
spec:
  action: DENY
  rules:
  - {}
",
    )
}

// === methods and authority ===

#[tokio::test]
async fn a_lower_case_method_is_refused_not_let_past_a_method_rule() {
    let mesh = mesh(&policy("deny-delete", "DENY", "{methods: [DELETE]}"));
    let addr = spawn_app(mesh.server_layer(workload())).await;
    for version in BOTH {
        let denied = send(addr, version, "DELETE", "/item", &[]).await;
        assert_denied(&denied, &format!("{version:?} DELETE"));
        for method in ["delete", "Delete"] {
            let answer = send(addr, version, method, "/item", &[]).await;
            assert_bad_request(&answer, &format!("{version:?} {method}"));
        }
    }
}

#[tokio::test]
async fn host_rules_judge_the_authority_the_application_sees() {
    let mesh = mesh(&policy(
        "deny-admin-host",
        "DENY",
        "{hosts: [admin.example]}",
    ));
    let addr = spawn_app(mesh.server_layer(workload())).await;

    // HTTP/1.1 absolute-form: the URI's authority is the request's (RFC 9112 §3.2.2), so the
    // `Host` header must not tell the application otherwise.
    let answer = send(
        addr,
        Version::Http1,
        "GET",
        "http://public.example/whoami",
        &[("host", "admin.example")],
    )
    .await;
    assert_served(&answer, "host:public.example", "absolute-form over Host");
    let answer = send(
        addr,
        Version::Http1,
        "GET",
        "http://admin.example/whoami",
        &[("host", "public.example")],
    )
    .await;
    assert_denied(&answer, "absolute-form admin.example");

    // HTTP/2: `:authority` is the request's; a conflicting `host` must not reach the handler.
    let answer = send(
        addr,
        Version::Http2,
        "GET",
        "http://public.example/whoami",
        &[("host", "admin.example")],
    )
    .await;
    assert!(
        answer.status == StatusCode::BAD_REQUEST || answer.body == "host:public.example",
        "{answer:?}"
    );

    // Two `Host` headers have no single meaning (RFC 9112 §3.2).
    let answer = send(
        addr,
        Version::Http1,
        "GET",
        "/whoami",
        &[("host", "public.example"), ("host", "admin.example")],
    )
    .await;
    assert_bad_request(&answer, "two Host headers");
}
