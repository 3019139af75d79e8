//! Outlier detection through a mesh channel against tonic servers: a failing endpoint is
//! ejected after its consecutive failures, gets no traffic while ejected, returns after the
//! ejection time, and the ejection cap holds.
//!
//! The ejection time is checked on the in-memory network under a paused clock, advanced to
//! just before and just after it; the rest runs against real servers on 127.0.0.1.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use mesh_test_support::echo as support;
use support::{memnet::*, *};

/// The services with outlier detection on, and retries off so every failure reaches the caller
/// (Istio's default retries would hide them).
fn with_outlier_detection(yaml: String, max_ejection_percent: u32) -> String {
    with_consecutive_errors(yaml, 3, max_ejection_percent)
}

/// As [`with_outlier_detection`], ejecting after `consecutive` consecutive 5xx.
fn with_consecutive_errors(yaml: String, consecutive: u32, max_ejection_percent: u32) -> String {
    let no_retries = virtual_service(&format!(
        "  - retries: {{attempts: 0}}\n    route:\n    - destination: {{host: {HOST}}}\n"
    ));
    let yaml = yaml.replace(
        "  subsets:\n",
        &format!(
            "  trafficPolicy:
    loadBalancer: {{simple: ROUND_ROBIN}}
    outlierDetection:
      consecutive5xxErrors: {consecutive}
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: {max_ejection_percent}
  subsets:\n"
        ),
    );
    format!("{yaml}---\n{no_retries}")
}

async fn send(client: &mut EchoClient<mesh_tower::Channel>, n: usize) -> usize {
    let mut failures = 0;
    for i in 0..n {
        if client.say(request(&i.to_string())).await.is_err() {
            failures += 1;
        }
    }
    failures
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_is_ejected_and_returns_after_its_ejection_time() {
    let net = MemNet::new();
    let good_a = spawn_echo_in(&net, "a", Behavior::default());
    let good_b = spawn_echo_in(&net, "b", Behavior::default());
    let bad = spawn_echo_in(
        &net,
        "bad",
        Behavior {
            fail: Some((1, 1)),
            ..Behavior::default()
        },
    );
    let yaml = with_outlier_detection(
        services_yaml(&[("a", good_a.addr), ("b", good_b.addr), ("bad", bad.addr)]),
        50,
    );
    let mesh = mesh_tower::Mesh::with_connector(config(&yaml), net.connector());
    let mut client = EchoClient::new(mesh.channel(TARGET));

    // Round robin sends every third call to `bad` until its third consecutive failure.
    let failures = send(&mut client, 30).await;
    assert_eq!(failures, 3);
    assert_eq!(
        bad.behavior.calls.load(Ordering::SeqCst),
        3,
        "ejected after exactly 3 failures"
    );
    assert_eq!(send(&mut client, 30).await, 0, "no traffic while ejected");
    assert_eq!(bad.behavior.calls.load(Ordering::SeqCst), 3);

    // Just before the ejection ends it is still out; just after, it is back. (In-memory
    // traffic never leaves every task idle, so the paused clock stays where it is put.)
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(send(&mut client, 9).await, 0);
    tokio::time::advance(Duration::from_secs(2)).await;
    let failures = send(&mut client, 30).await;
    assert_eq!(
        failures, 3,
        "back in rotation, and ejected again after 3 more failures"
    );
    assert_eq!(bad.behavior.calls.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn the_ejection_cap_keeps_a_second_failing_endpoint_in_service() {
    let good = spawn_echo("good", Behavior::default()).await;
    let bad1 = spawn_echo(
        "bad1",
        Behavior {
            fail: Some((1, 1)),
            ..Behavior::default()
        },
    )
    .await;
    let bad2 = spawn_echo(
        "bad2",
        Behavior {
            fail: Some((1, 1)),
            ..Behavior::default()
        },
    )
    .await;
    // 34 % of 3 endpoints: at most one ejected at a time.
    let yaml = with_outlier_detection(
        services_yaml(&[
            ("good", good.addr),
            ("bad1", bad1.addr),
            ("bad2", bad2.addr),
        ]),
        34,
    );
    let mesh = mesh_tower::Mesh::new(config(&yaml));
    let mut client = EchoClient::new(mesh.channel(TARGET));
    send(&mut client, 60).await;
    let before = (
        bad1.behavior.calls.load(Ordering::SeqCst),
        bad2.behavior.calls.load(Ordering::SeqCst),
    );
    send(&mut client, 60).await;
    let after = (
        bad1.behavior.calls.load(Ordering::SeqCst),
        bad2.behavior.calls.load(Ordering::SeqCst),
    );
    let served = (after.0 - before.0, after.1 - before.1);
    // Exactly one failing endpoint is out; the other still takes its share (the cap holds).
    assert!(
        (served.0 == 0 && served.1 > 0) || (served.1 == 0 && served.0 > 0),
        "{served:?}"
    );
}

/// Successes reset the consecutive-failure count: tonic stops polling a unary response body
/// once it has the trailers (`grpc-status: 0` there), so the success must be judged then, not
/// only when the body is polled to its end.
#[tokio::test]
async fn failures_interleaved_with_successes_do_not_eject() {
    let good = spawn_echo("good", Behavior::default()).await;
    // One call in ten fails (a trailers-only UNAVAILABLE); nine succeed between failures.
    let flaky = spawn_echo(
        "flaky",
        Behavior {
            fail: Some((1, 10)),
            ..Behavior::default()
        },
    )
    .await;
    let yaml = with_consecutive_errors(
        services_yaml(&[("good", good.addr), ("flaky", flaky.addr)]),
        5,
        50,
    );
    let mesh = mesh_tower::Mesh::new(config(&yaml));
    let mut client = EchoClient::new(mesh.channel(TARGET));

    let failures = send(&mut client, 100).await;
    assert_eq!(failures, 5, "one in ten of flaky's 50 calls");
    assert_eq!(
        flaky.behavior.calls.load(Ordering::SeqCst),
        50,
        "never ejected: its failures were never consecutive"
    );
}

/// The same endpoint failing five times in a row is still ejected.
#[tokio::test]
async fn consecutive_failures_between_successes_still_eject() {
    let good = spawn_echo("good", Behavior::default()).await;
    // Calls 0..5 of every 10 fail.
    let flaky = spawn_echo(
        "flaky",
        Behavior {
            fail: Some((5, 10)),
            ..Behavior::default()
        },
    )
    .await;
    let yaml = with_consecutive_errors(
        services_yaml(&[("good", good.addr), ("flaky", flaky.addr)]),
        5,
        50,
    );
    let mesh = mesh_tower::Mesh::new(config(&yaml));
    let mut client = EchoClient::new(mesh.channel(TARGET));

    let failures = send(&mut client, 100).await;
    assert_eq!(failures, 5);
    assert_eq!(
        flaky.behavior.calls.load(Ordering::SeqCst),
        5,
        "ejected after its fifth consecutive failure"
    );
}

/// Istio's default `maxEjectionPercent: 10` of three endpoints rounds to zero; as in Envoy, one
/// endpoint is ejected anyway.
#[tokio::test]
async fn the_default_cap_ejects_one_endpoint_of_a_small_cluster() {
    let good_a = spawn_echo("a", Behavior::default()).await;
    let good_b = spawn_echo("b", Behavior::default()).await;
    let bad = spawn_echo(
        "bad",
        Behavior {
            fail: Some((1, 1)),
            ..Behavior::default()
        },
    )
    .await;
    let yaml = with_outlier_detection(
        services_yaml(&[("a", good_a.addr), ("b", good_b.addr), ("bad", bad.addr)]),
        10,
    );
    let mesh = mesh_tower::Mesh::new(config(&yaml));
    let mut client = EchoClient::new(mesh.channel(TARGET));
    assert_eq!(send(&mut client, 30).await, 3);
    assert_eq!(bad.behavior.calls.load(Ordering::SeqCst), 3, "ejected");
}

/// A server whose even calls fail at once (trailers-only `UNAVAILABLE`) and whose odd calls
/// send `200` headers and then stall their body; counts calls.
async fn spawn_fail_or_stall_server() -> (std::net::SocketAddr, std::sync::Arc<AtomicU32>) {
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let count = calls.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let count = count.clone();
            let service = hyper::service::service_fn(move |_req: http::Request<_>| {
                let n = count.fetch_add(1, Ordering::SeqCst);
                async move {
                    let body = http_body_util::StreamBody::new(futures::stream::pending::<
                        Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>,
                    >());
                    let mut response = http::Response::new(body);
                    let headers = response.headers_mut();
                    headers.insert("content-type", "application/grpc".parse().unwrap());
                    if n.is_multiple_of(2) {
                        headers.insert("grpc-status", "14".parse().unwrap());
                    }
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    (addr, calls)
}

/// A response whose caller drops its body after a good head is judged by that head: a success
/// between two failures, so they are not consecutive.
#[tokio::test]
async fn a_dropped_body_after_a_good_head_is_judged_a_success() {
    use tower::ServiceExt;
    let good = spawn_echo("good", Behavior::default()).await;
    let (flaky, calls) = spawn_fail_or_stall_server().await;
    let yaml = with_consecutive_errors(
        services_yaml(&[("good", good.addr), ("flaky", flaky)]),
        2,
        50,
    );
    let mesh = mesh_tower::Mesh::new(config(&yaml));
    let channel = mesh.channel(TARGET);
    let call = || {
        let req = http::Request::post(format!("http://{TARGET}/echo.Echo/Say"))
            .header("content-type", "application/grpc")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"\0\0\0\0\0",
            )))
            .unwrap();
        // The head is all the caller waits for; the body is dropped unread.
        channel.clone().oneshot(req)
    };
    // Round robin: flaky fails, stalls (dropped), fails, with good's calls between.
    for _ in 0..6 {
        drop(call().await.unwrap());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    for _ in 0..2 {
        drop(call().await.unwrap());
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "not ejected: its two failures were not consecutive"
    );
}
