use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::Retry;
use crate::{
    ResponseFlags,
    route::Route,
    synthesize::grpc_status_response,
    test_util::{TARGET, grpc_ok, grpc_request, mesh_with_route, next},
};

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_is_cut_by_the_per_try_timeout_and_retried() {
    // A per-try timeout is retried under `reset` (or 5xx / gateway-error), as in Envoy.
    let mesh = mesh_with_route(
        "    retries: {attempts: 1, perTryTimeout: 100ms, retryOn: \"unavailable,reset\"}\n",
    );
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh, TARGET.into(), Retry::new(mock));
    let start = Instant::now();
    let call = tokio::spawn(svc.ready().await.unwrap().call(grpc_request()));

    let (first, _hung) = next(&mut handle).await;
    assert_eq!(first.headers()["x-envoy-attempt-count"], "1");
    let (second, respond) = next(&mut handle).await;
    assert_eq!(second.headers()["x-envoy-attempt-count"], "2");
    let waited = start.elapsed();
    // tokio's timers fire on whole milliseconds: a backoff just under 25 ms fires at 25.
    assert!(
        waited >= Duration::from_millis(100) && waited <= Duration::from_millis(100 + 25),
        "per-try timeout plus a backoff below the 25ms base: {waited:?}"
    );
    respond.send_response(grpc_ok());
    assert_eq!(call.await.unwrap().unwrap().headers()["grpc-status"], "0");
}

#[tokio::test(start_paused = true)]
async fn when_every_attempt_times_out_the_caller_gets_deadline_exceeded() {
    let mesh = mesh_with_route("    retries: {attempts: 2, perTryTimeout: 50ms, retryOn: reset}\n");
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh, TARGET.into(), Retry::new(mock));
    let call = tokio::spawn(svc.ready().await.unwrap().call(grpc_request()));
    let mut hung = Vec::new();
    for _ in 0..3 {
        hung.push(next(&mut handle).await);
    }
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.headers()["grpc-status"], "4");
    assert_eq!(
        response.extensions().get::<ResponseFlags>(),
        Some(&ResponseFlags::UpstreamRequestTimeout)
    );
    assert!(
        futures::FutureExt::now_or_never(handle.next_request()).is_none(),
        "3 attempts, no more"
    );
}

#[tokio::test(start_paused = true)]
async fn only_the_configured_conditions_are_retried() {
    let mesh = mesh_with_route("    retries: {attempts: 3, retryOn: unavailable}\n");
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh, TARGET.into(), Retry::new(mock));

    // INTERNAL is not in `retryOn`: answered after one attempt.
    let call = tokio::spawn(svc.ready().await.unwrap().call(grpc_request()));
    let (_req, respond) = next(&mut handle).await;
    respond.send_response(grpc_status_response(mesh_core::GrpcCode::Internal, "boom"));
    assert_eq!(call.await.unwrap().unwrap().headers()["grpc-status"], "13");
    assert!(futures::FutureExt::now_or_never(handle.next_request()).is_none());

    // UNAVAILABLE is retried until the limit: 1 + 3 attempts.
    let call = tokio::spawn(svc.ready().await.unwrap().call(grpc_request()));
    for _ in 0..4 {
        let (_req, respond) = next(&mut handle).await;
        respond.send_response(grpc_status_response(
            mesh_core::GrpcCode::Unavailable,
            "down",
        ));
    }
    assert_eq!(call.await.unwrap().unwrap().headers()["grpc-status"], "14");
    assert!(futures::FutureExt::now_or_never(handle.next_request()).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_per_try_timeout_is_not_retried_under_grpc_conditions_alone() {
    // Envoy's semantics (and Istio's default `retryOn` is gRPC conditions only): a per-try
    // timeout is a local timeout, not an upstream `UNAVAILABLE`.
    let mesh =
        mesh_with_route("    retries: {attempts: 3, perTryTimeout: 50ms, retryOn: unavailable}\n");
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh, TARGET.into(), Retry::new(mock));
    let call = tokio::spawn(svc.ready().await.unwrap().call(grpc_request()));
    let _hung = next(&mut handle).await;
    assert_eq!(call.await.unwrap().unwrap().headers()["grpc-status"], "4");
    assert!(futures::FutureExt::now_or_never(handle.next_request()).is_none());
}

fn hedged(initial_requests: u32, hedge_on_per_try_timeout: bool) -> mesh_core::RetryPolicy {
    let (retry_on, _) = mesh_core::RetryOn::parse("reset,unavailable").unwrap();
    let mut policy = mesh_core::RetryPolicy::new(1, retry_on);
    policy.per_try_timeout = Some(Duration::from_millis(100));
    policy.hedge = Some(mesh_core::HedgePolicy {
        initial_requests,
        additional_request_chance: mesh_core::Percentage::ZERO,
        hedge_on_per_try_timeout,
    });
    policy
}

fn answered_by(name: &'static str) -> http::Response<crate::body::ResponseBody> {
    let mut r = grpc_ok();
    r.headers_mut()
        .insert("x-answered-by", http::HeaderValue::from_static(name));
    r
}

#[tokio::test(start_paused = true)]
async fn a_hedge_races_the_slow_attempt_instead_of_cancelling_it() {
    let mesh = crate::test_util::mesh_with_retry_policy(hedged(1, true));
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh, TARGET.into(), Retry::new(mock));
    let start = Instant::now();
    let call = tokio::spawn(svc.ready().await.unwrap().call(grpc_request()));

    let (_first, respond_first) = next(&mut handle).await;
    let (second, _respond_second) = next(&mut handle).await;
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100),
        "hedged at the per-try timeout, no backoff"
    );
    assert_eq!(second.headers()["x-envoy-attempt-count"], "2");
    // The slow first attempt was kept, and its answer wins.
    respond_first.send_response(answered_by("first"));
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.headers()["x-answered-by"], "first");
}

#[tokio::test(start_paused = true)]
async fn initial_requests_start_together_and_the_first_answer_wins() {
    let mesh = crate::test_util::mesh_with_retry_policy(hedged(2, false));
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh, TARGET.into(), Retry::new(mock));
    let call = tokio::spawn(svc.ready().await.unwrap().call(grpc_request()));
    let (_a, _respond_a) = next(&mut handle).await;
    let (_b, respond_b) = next(&mut handle).await;
    respond_b.send_response(answered_by("second"));
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.headers()["x-answered-by"], "second");
}

#[test]
fn attempt_counts_are_decimal_whether_static_or_formatted() {
    for n in [0, 1, 9, 10, 123] {
        assert_eq!(super::attempt_count(n), n.to_string().as_str(), "{n}");
    }
}
