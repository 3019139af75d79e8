use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::Fault;
use crate::{
    ResponseFlags,
    route::Route,
    test_util::{TARGET, grpc_ok, grpc_request, http_request, mesh_with_route},
};

#[tokio::test(start_paused = true)]
async fn a_delay_holds_the_request_for_exactly_its_duration() {
    let mesh = mesh_with_route("    fault: {delay: {fixedDelay: 3s, percentage: {value: 100}}}\n");
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh.clone(), TARGET.into(), Fault::new(mesh.clone(), mock));
    let start = Instant::now();
    let call = tokio::spawn(svc.ready().await.unwrap().call(grpc_request()));
    let (req, respond) = handle
        .next_request()
        .await
        .expect("forwarded after the delay");
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(req.uri().path(), "/echo.Echo/Say");
    assert_eq!(
        mesh.active_faults()
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the delay is over"
    );
    respond.send_response(grpc_ok());
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.headers()["grpc-status"], "0");
}

#[tokio::test(start_paused = true)]
async fn an_abort_answers_grpc_with_its_status_and_http_with_its_code() {
    let mesh = mesh_with_route(
        "    fault: {abort: {httpStatus: 503, percentage: {value: 100}}, delay: {fixedDelay: 1s, percentage: {value: 100}}}\n",
    );
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh.clone(), TARGET.into(), Fault::new(mesh, mock));
    let start = Instant::now();

    let grpc = svc
        .ready()
        .await
        .unwrap()
        .call(grpc_request())
        .await
        .unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "delayed, then aborted"
    );
    assert_eq!(grpc.status(), 200);
    assert_eq!(
        grpc.headers()["grpc-status"],
        "14",
        "503 maps to UNAVAILABLE"
    );
    assert!(
        grpc.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .contains("injected fault")
    );
    assert_eq!(
        grpc.extensions().get::<ResponseFlags>(),
        Some(&ResponseFlags::FaultInjected)
    );

    let http = svc
        .ready()
        .await
        .unwrap()
        .call(http_request())
        .await
        .unwrap();
    assert_eq!(http.status(), 503);
    assert!(http.headers().get("grpc-status").is_none());

    // Nothing reached the upstream.
    assert!(futures::FutureExt::now_or_never(handle.next_request()).is_none());
}

#[tokio::test]
async fn a_grpc_status_abort_is_sent_as_configured() {
    let mesh = mesh_with_route(
        "    fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED, percentage: {value: 100}}}\n",
    );
    let (mock, _handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh.clone(), TARGET.into(), Fault::new(mesh, mock));
    let grpc = svc
        .ready()
        .await
        .unwrap()
        .call(grpc_request())
        .await
        .unwrap();
    assert_eq!(grpc.headers()["grpc-status"], "8");
    let http = svc
        .ready()
        .await
        .unwrap()
        .call(http_request())
        .await
        .unwrap();
    assert_eq!(
        http.status(),
        429,
        "Envoy's HTTP mapping of RESOURCE_EXHAUSTED"
    );
}
