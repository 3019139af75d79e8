//! Envoy's `x-envoy-*` request headers through a mesh channel against a real HTTP/2 server on
//! 127.0.0.1: header-driven faults (only when enabled, capped by the configured share), the
//! timeout and retry override headers (honoured only from a trusted application, never
//! forwarded), and `envoy-ratelimited` (a 429 is retried only with `x-envoy-ratelimited`).

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_test_support::echo as support;
use mesh_tower::{RequestControls, mesh_core::HeaderFaultShare};
use support::*;
use tower::ServiceExt;

/// How the upstream answers one request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Ok,
    Status(u16),
    /// 429 with `x-envoy-ratelimited: true`, as an Envoy-fronted upstream rate limits.
    EnvoyRateLimited,
    /// Never answers.
    Stall,
}

/// A server that records the headers of every request it receives.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<http::HeaderMap>>>,
}

impl Upstream {
    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Whether any request that arrived carried `name`.
    fn saw_header(&self, name: &str) -> bool {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.contains_key(name))
    }
}

/// Answers request `i` with `script[i]`, and every later one with 200.
async fn spawn_upstream(script: Vec<Answer>) -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (seen, script) = (recorded.clone(), script.clone());
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                let answer = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(req.headers().clone());
                    script.get(seen.len() - 1).copied().unwrap_or(Answer::Ok)
                };
                async move {
                    let mut response = http::Response::new(Full::new(Bytes::from_static(b"ok")));
                    match answer {
                        Answer::Ok => {}
                        Answer::Status(s) => *response.status_mut() = s.try_into().unwrap(),
                        Answer::EnvoyRateLimited => {
                            *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
                            response
                                .headers_mut()
                                .insert("x-envoy-ratelimited", "true".parse().unwrap());
                        }
                        Answer::Stall => std::future::pending::<()>().await,
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    Upstream { addr, seen }
}

/// A mesh routing the echo host to `upstream` with the VirtualService route `route` (the lines
/// after `- `, indented by four spaces).
fn mesh_with(upstream: &Upstream, route: &str) -> mesh_tower::Mesh {
    let routes = virtual_service(&format!(
        "  - {route}    route:\n    - destination: {{host: {HOST}}}\n"
    ));
    mesh_tower::Mesh::new(config(&format!(
        "{}---\n{routes}",
        services_yaml(&[("up", upstream.addr)])
    )))
}

fn get(headers: &[(&'static str, &'static str)]) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::get(format!("http://{TARGET}/hello"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::new(Bytes::new())).unwrap()
}

async fn status(mesh: &mesh_tower::Mesh, headers: &[(&'static str, &'static str)]) -> u16 {
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        mesh.channel(TARGET).oneshot(get(headers)),
    )
    .await
    .expect("answered in time")
    .unwrap();
    response.status().as_u16()
}

// === header-driven faults ===

#[tokio::test]
async fn fault_headers_abort_only_when_the_mesh_enables_them() {
    let upstream = spawn_upstream(vec![]).await;
    let abort = [("x-envoy-fault-abort-request", "503")];

    let off = mesh_with(&upstream, "retries: {attempts: 0}\n");
    assert_eq!(status(&off, &abort).await, 200, "off by default");
    assert_eq!(upstream.calls(), 1);

    let on = mesh_with(&upstream, "retries: {attempts: 0}\n");
    assert!(
        on.set_request_controls(
            RequestControls::default().header_faults(HeaderFaultShare::HUNDRED)
        )
        .is_ok()
    );
    assert_eq!(status(&on, &abort).await, 503);
    assert_eq!(
        upstream.calls(),
        1,
        "an injected abort never reaches the upstream"
    );
    assert_eq!(status(&on, &[]).await, 200, "no header, no fault");

    // A gRPC caller asking for a gRPC status gets it, trailers-only.
    let mut grpc = get(&[("x-envoy-fault-abort-grpc-request", "8")]);
    grpc.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    let response = on.channel(TARGET).oneshot(grpc).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "8", "RESOURCE_EXHAUSTED");
}

#[tokio::test]
async fn fault_header_percentages_are_capped_by_the_configured_share() {
    let upstream = spawn_upstream(vec![]).await;
    let mesh = mesh_with(&upstream, "retries: {attempts: 0}\n");
    mesh.set_request_controls(
        RequestControls::default().header_faults(HeaderFaultShare::new(20, 100).unwrap()),
    )
    .unwrap();
    let n = 1_000;
    let mut aborted = 0;
    for _ in 0..n {
        let asked = [
            ("x-envoy-fault-abort-request", "500"),
            ("x-envoy-fault-abort-request-percentage", "100"),
        ];
        if status(&mesh, &asked).await == 500 {
            aborted += 1;
        }
    }
    let share = f64::from(aborted) / f64::from(n);
    assert!((share - 0.20).abs() <= 0.05, "capped at 20 %: {share}");
    let none = [
        ("x-envoy-fault-abort-request", "500"),
        ("x-envoy-fault-abort-request-percentage", "0"),
    ];
    for _ in 0..50 {
        assert_eq!(status(&mesh, &none).await, 200, "the caller asked for 0 %");
    }
}

#[tokio::test]
async fn fault_headers_delay_only_when_enabled() {
    let upstream = spawn_upstream(vec![]).await;
    let delay = [("x-envoy-fault-delay-request", "300")];

    let off = mesh_with(&upstream, "retries: {attempts: 0}\n");
    let started = tokio::time::Instant::now();
    assert_eq!(status(&off, &delay).await, 200);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "not delayed when off"
    );

    let on = mesh_with(&upstream, "retries: {attempts: 0}\n");
    on.set_request_controls(RequestControls::default().header_faults(HeaderFaultShare::HUNDRED))
        .unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(status(&on, &delay).await, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "delayed as asked"
    );
}

#[tokio::test]
async fn a_route_fault_replaces_the_mesh_wide_header_faults() {
    // Envoy's per-route fault replaces the listener's: a route with its own fixed fault
    // ignores the headers.
    let upstream = spawn_upstream(vec![]).await;
    let abort = [("x-envoy-fault-abort-request", "503")];
    let without_fault = mesh_with(&upstream, "retries: {attempts: 0}\n");
    without_fault
        .set_request_controls(RequestControls::default().header_faults(HeaderFaultShare::HUNDRED))
        .unwrap();
    assert_eq!(
        status(&without_fault, &abort).await,
        503,
        "the mesh-wide setting"
    );

    let mesh = mesh_with(
        &upstream,
        "retries: {attempts: 0}\n    fault:\n      delay: {fixedDelay: 1ms, percentage: {value: 100}}\n",
    );
    mesh.set_request_controls(RequestControls::default().header_faults(HeaderFaultShare::HUNDRED))
        .unwrap();
    assert_eq!(
        status(&mesh, &[("x-envoy-fault-abort-request", "503")]).await,
        200
    );
}

// === override headers ===

const OVERRIDES: [&str; 5] = [
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-max-retries",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
];

fn all_overrides() -> [(&'static str, &'static str); 5] {
    [
        ("x-envoy-upstream-rq-timeout-ms", "5000"),
        ("x-envoy-upstream-rq-per-try-timeout-ms", "4000"),
        ("x-envoy-max-retries", "1"),
        ("x-envoy-retry-on", "5xx"),
        ("x-envoy-retry-grpc-on", "unavailable"),
    ]
}

#[tokio::test]
async fn retry_headers_are_honoured_only_from_a_trusted_application() {
    // The route does not retry; the caller asks for one retry on 5xx.
    let untrusted_upstream = spawn_upstream(vec![Answer::Status(503)]).await;
    let untrusted = mesh_with(&untrusted_upstream, "retries: {attempts: 0}\n");
    assert_eq!(status(&untrusted, &all_overrides()).await, 503);
    assert_eq!(untrusted_upstream.calls(), 1, "not retried");

    let trusted_upstream = spawn_upstream(vec![Answer::Status(503)]).await;
    let trusted = mesh_with(&trusted_upstream, "retries: {attempts: 0}\n");
    assert!(
        trusted
            .set_request_controls(RequestControls::default().trust_override_headers(true))
            .is_ok()
    );
    assert_eq!(status(&trusted, &all_overrides()).await, 200, "retried");
    assert_eq!(trusted_upstream.calls(), 2);

    // Stripped either way: the upstream never sees them.
    for header in OVERRIDES {
        assert!(!untrusted_upstream.saw_header(header), "{header} forwarded");
        assert!(!trusted_upstream.saw_header(header), "{header} forwarded");
    }
}

#[tokio::test]
async fn the_max_retries_header_replaces_the_route_limit_when_trusted() {
    let script = vec![Answer::Status(503); 3];
    let upstream = spawn_upstream(script.clone()).await;
    let mesh = mesh_with(&upstream, "retries: {attempts: 1, retryOn: 5xx}\n");
    mesh.set_request_controls(RequestControls::default().trust_override_headers(true))
        .unwrap();
    assert_eq!(status(&mesh, &[("x-envoy-max-retries", "3")]).await, 200);
    assert_eq!(upstream.calls(), 4);

    let untrusted_upstream = spawn_upstream(script).await;
    let untrusted = mesh_with(
        &untrusted_upstream,
        "retries: {attempts: 1, retryOn: 5xx}\n",
    );
    assert_eq!(
        status(&untrusted, &[("x-envoy-max-retries", "3")]).await,
        503
    );
    assert_eq!(untrusted_upstream.calls(), 2, "the route's limit");
}

#[tokio::test]
async fn the_timeout_header_is_honoured_only_from_a_trusted_application() {
    let upstream = spawn_upstream(vec![Answer::Stall; 2]).await;
    let asked = [("x-envoy-upstream-rq-timeout-ms", "100")];

    let trusted = mesh_with(&upstream, "retries: {attempts: 0}\n    timeout: 20s\n");
    trusted
        .set_request_controls(RequestControls::default().trust_override_headers(true))
        .unwrap();
    assert_eq!(status(&trusted, &asked).await, 504, "the caller's 100 ms");

    let untrusted = mesh_with(&upstream, "retries: {attempts: 0}\n    timeout: 20s\n");
    let answered = tokio::time::timeout(
        Duration::from_secs(1),
        untrusted.channel(TARGET).oneshot(get(&asked)),
    )
    .await;
    assert!(answered.is_err(), "the route's 20 s still applies");
    assert!(!upstream.saw_header("x-envoy-upstream-rq-timeout-ms"));
}

#[tokio::test]
async fn the_per_try_timeout_header_is_honoured_when_trusted() {
    let upstream = spawn_upstream(vec![Answer::Stall]).await;
    let mesh = mesh_with(
        &upstream,
        "retries: {attempts: 1, retryOn: reset}\n    timeout: 20s\n",
    );
    mesh.set_request_controls(RequestControls::default().trust_override_headers(true))
        .unwrap();
    let asked = [("x-envoy-upstream-rq-per-try-timeout-ms", "100")];
    assert_eq!(
        status(&mesh, &asked).await,
        200,
        "the stalled try was retried"
    );
    assert_eq!(upstream.calls(), 2);
}

// === envoy-ratelimited ===

#[tokio::test]
async fn envoy_ratelimited_retries_a_429_only_with_the_envoy_header() {
    let route = "retries: {attempts: 1, retryOn: envoy-ratelimited}\n";
    let plain = spawn_upstream(vec![Answer::Status(429)]).await;
    assert_eq!(status(&mesh_with(&plain, route), &[]).await, 429);
    assert_eq!(plain.calls(), 1, "a plain 429 is not Envoy's rate limit");

    let limited = spawn_upstream(vec![Answer::EnvoyRateLimited]).await;
    assert_eq!(status(&mesh_with(&limited, route), &[]).await, 200);
    assert_eq!(limited.calls(), 2);
}
