use tower::{Service, ServiceExt};

use super::Route;
use crate::{
    ResponseFlags, RouteDecision,
    test_util::{TARGET, grpc_ok, grpc_request, http_request, mesh_with_http, next},
};

async fn forwarded(
    http_yaml: &str,
    mut req: http::Request<crate::body::RequestBody>,
    path: &'static str,
) -> http::Request<crate::body::RequestBody> {
    let mesh = mesh_with_http(http_yaml);
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh, TARGET.into(), mock);
    *req.uri_mut() = http::Uri::from_static(path);
    let call = tokio::spawn(svc.ready().await.unwrap().call(req));
    let (req, respond) = next(&mut handle).await;
    respond.send_response(grpc_ok());
    call.await.unwrap().unwrap();
    req
}

#[tokio::test]
async fn a_prefix_rewrite_replaces_the_matched_prefix_and_keeps_the_query() {
    let http = "  - match: [{uri: {prefix: /v1/reviews}}]
    rewrite: {uri: /reviews, authority: reviews.internal}
    headers: {request: {set: {x-routed: \"yes\"}, remove: [x-secret]}}
    route: [{destination: {host: echo.default.svc.cluster.local}}]
";
    let mut req = http_request();
    req.headers_mut()
        .insert("x-secret", http::HeaderValue::from_static("s"));
    let req = forwarded(http, req, "/v1/reviews/7?color=red").await;
    assert_eq!(
        req.uri().to_string(),
        "http://reviews.internal/reviews/7?color=red"
    );
    assert_eq!(req.headers()["host"], "reviews.internal");
    assert_eq!(req.headers()["x-routed"], "yes");
    assert!(req.headers().get("x-secret").is_none());
    let decision = req
        .extensions()
        .get::<RouteDecision>()
        .expect("the decision travels with the request");
    assert_eq!(
        decision.cluster_name(),
        "outbound|50051||echo.default.svc.cluster.local"
    );
}

#[tokio::test]
async fn a_regex_rewrite_substitutes_groups() {
    let http = "  - match: [{uri: {prefix: /service}}]
    rewrite: {uriRegexRewrite: {match: \"^/service/([^/]+)(/.*)$\", rewrite: \"\\\\2/instance/\\\\1\"}}
    route: [{destination: {host: echo.default.svc.cluster.local}}]
";
    let req = forwarded(http, http_request(), "/service/foo/v1/api").await;
    assert_eq!(req.uri().path(), "/v1/api/instance/foo");
}

#[tokio::test]
async fn redirects_and_direct_responses_are_answered_without_the_upstream() {
    let http = "  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, redirectCode: 308}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: \"short and stout\"}}
";
    let mesh = mesh_with_http(http);
    let (mock, mut handle) = tower_test::mock::pair::<
        http::Request<crate::body::RequestBody>,
        http::Response<crate::body::ResponseBody>,
    >();
    let mut svc = Route::new(mesh, TARGET.into(), mock);

    let mut req = http_request();
    *req.uri_mut() = http::Uri::from_static("/old?x=1");
    let r = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], format!("http://{TARGET}/new?x=1"));

    let mut req = http_request();
    *req.uri_mut() = http::Uri::from_static("/teapot");
    let r = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(r.status(), 418);
    assert_eq!(
        r.extensions().get::<ResponseFlags>(),
        Some(&ResponseFlags::DirectResponse)
    );

    // A gRPC caller gets a gRPC status for the same answer.
    let mut req = grpc_request();
    *req.uri_mut() = http::Uri::from_static("/teapot");
    let r = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["grpc-status"], "2", "418 maps to UNKNOWN");

    assert!(
        futures::FutureExt::now_or_never(handle.next_request()).is_none(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn response_header_changes_apply_to_the_upstreams_answer() {
    let http = "  - headers: {response: {set: {x-served-via: mesh}, remove: [server]}}
    route: [{destination: {host: echo.default.svc.cluster.local}}]
";
    let mesh = mesh_with_http(http);
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh, TARGET.into(), mock);
    let call = tokio::spawn(svc.ready().await.unwrap().call(grpc_request()));
    let (_req, respond) = next(&mut handle).await;
    let mut upstream = grpc_ok();
    upstream
        .headers_mut()
        .insert("server", http::HeaderValue::from_static("secret/1.0"));
    respond.send_response(upstream);
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.headers()["x-served-via"], "mesh");
    assert!(r.headers().get("server").is_none());
}

/// A discovery source whose targets stay pending until told otherwise.
#[derive(Debug, Default)]
struct FakeDiscovery {
    watched: std::sync::Mutex<Vec<String>>,
    pending: std::sync::atomic::AtomicBool,
}

impl crate::Discovery for FakeDiscovery {
    fn watch(&self, target: &str) {
        self.watched.lock().unwrap().push(target.to_owned());
    }

    fn is_pending(&self, _: &str) -> bool {
        self.pending.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn discovering_mesh() -> (crate::Mesh, std::sync::Arc<FakeDiscovery>) {
    let mesh = crate::Mesh::new(mesh_core::MeshConfig::empty());
    let discovery = std::sync::Arc::new(FakeDiscovery::default());
    discovery
        .pending
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(mesh.set_discovery(discovery.clone()).is_ok());
    (mesh, discovery)
}

#[tokio::test]
async fn an_xds_target_is_watched_without_its_scheme() {
    let (mesh, discovery) = discovering_mesh();
    let _channel = mesh.channel(format!("xds:///{TARGET}"));
    let _plain = mesh.channel(TARGET);
    assert_eq!(*discovery.watched.lock().unwrap(), [TARGET]);
}

#[tokio::test(start_paused = true)]
async fn a_request_for_a_pending_target_waits_for_its_configuration() {
    let (mesh, _discovery) = discovering_mesh();
    let (mock, mut handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh.clone(), TARGET.into(), mock);
    let call = tokio::spawn(svc.ready().await.unwrap().call(grpc_request()));

    // A minute of nothing: the request neither fails nor reaches the upstream.
    tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    assert!(!call.is_finished(), "held while the target is pending");

    let configured =
        mesh_with_http("  - route: [{destination: {host: echo.default.svc.cluster.local}}]\n");
    mesh.publish(configured.config());
    let (req, respond) = next(&mut handle).await;
    assert!(req.extensions().get::<RouteDecision>().is_some());
    respond.send_response(grpc_ok());
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.headers()["grpc-status"], "0");
}

#[tokio::test(start_paused = true)]
async fn a_pending_target_answers_no_route_at_the_callers_deadline_or_once_known_absent() {
    let (mesh, discovery) = discovering_mesh();
    let (mock, _handle) = tower_test::mock::pair();
    let mut svc = Route::new(mesh.clone(), TARGET.into(), mock);

    let mut req = grpc_request();
    req.headers_mut()
        .insert("grpc-timeout", http::HeaderValue::from_static("2S"));
    let started = tokio::time::Instant::now();
    let response = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(2));
    assert_eq!(response.headers()["grpc-status"], "14");
    assert_eq!(
        response.extensions().get::<ResponseFlags>(),
        Some(&ResponseFlags::NoRoute)
    );

    // The discovery source learns the target does not exist: waiting requests are answered at
    // the next publish, and new ones at once.
    let waiting = tokio::spawn(svc.ready().await.unwrap().call(grpc_request()));
    tokio::task::yield_now().await;
    discovery
        .pending
        .store(false, std::sync::atomic::Ordering::SeqCst);
    mesh.publish(std::sync::Arc::new(mesh_core::MeshConfig::empty()));
    let started = tokio::time::Instant::now();
    let response = waiting.await.unwrap().unwrap();
    assert_eq!(started.elapsed(), std::time::Duration::ZERO);
    assert_eq!(response.headers()["grpc-status"], "14");
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(grpc_request())
        .await
        .unwrap();
    assert_eq!(response.headers()["grpc-status"], "14");
}
