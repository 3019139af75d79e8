use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::Timeout;
use crate::{
    ResponseFlags,
    route::Route,
    test_util::{TARGET, grpc_ok, grpc_request, http_request, mesh_with_route},
};

#[tokio::test(start_paused = true)]
async fn the_route_timeout_answers_deadline_exceeded_or_504() {
    let mesh = mesh_with_route("    timeout: 2s\n");
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh, TARGET.into(), Timeout::new(mock));
    let start = Instant::now();

    let call = tokio::spawn(svc.ready().await.unwrap().call(grpc_request()));
    let (req, _never_answered) = handle.next_request().await.unwrap();
    assert_eq!(
        req.headers()["grpc-timeout"],
        "2000000u",
        "the deadline is sent upstream"
    );
    let grpc = call.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(grpc.headers()["grpc-status"], "4");
    assert_eq!(
        grpc.extensions().get::<ResponseFlags>(),
        Some(&ResponseFlags::UpstreamRequestTimeout)
    );

    let call = tokio::spawn(svc.ready().await.unwrap().call(http_request()));
    let (_req, _never_answered) = handle.next_request().await.unwrap();
    assert_eq!(call.await.unwrap().unwrap().status(), 504);
}

#[tokio::test(start_paused = true)]
async fn a_tighter_grpc_timeout_from_the_caller_wins() {
    let mesh = mesh_with_route("    timeout: 10s\n");
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh, TARGET.into(), Timeout::new(mock));
    let start = Instant::now();
    let mut req = grpc_request();
    req.headers_mut()
        .insert("grpc-timeout", "250m".parse().unwrap());
    let call = tokio::spawn(svc.ready().await.unwrap().call(req));
    let (_req, _never_answered) = handle.next_request().await.unwrap();
    assert_eq!(call.await.unwrap().unwrap().headers()["grpc-status"], "4");
    assert_eq!(start.elapsed(), Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn a_response_in_time_passes_through_untouched() {
    let mesh = mesh_with_route("    timeout: 2s\n");
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh, TARGET.into(), Timeout::new(mock));
    let call = tokio::spawn(svc.ready().await.unwrap().call(grpc_request()));
    let (_req, respond) = handle.next_request().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1999)).await;
    respond.send_response(grpc_ok());
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.headers()["grpc-status"], "0");
    assert!(response.extensions().get::<ResponseFlags>().is_none());
}

#[tokio::test(start_paused = true)]
async fn without_any_bound_nothing_times_out() {
    let mesh = mesh_with_route("");
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh, TARGET.into(), Timeout::new(mock));
    let call = tokio::spawn(svc.ready().await.unwrap().call(grpc_request()));
    let (req, respond) = handle.next_request().await.unwrap();
    assert!(req.headers().get("grpc-timeout").is_none());
    tokio::time::sleep(Duration::from_secs(3600)).await;
    respond.send_response(grpc_ok());
    assert_eq!(call.await.unwrap().unwrap().headers()["grpc-status"], "0");
}
