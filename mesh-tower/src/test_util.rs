//! Helpers for the layers' unit tests: a mesh from Istio YAML and requests to send through it.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Empty};

use crate::{
    Mesh,
    body::{RequestBody, ResponseBody},
};

pub(crate) const TARGET: &str = "echo.default.svc.cluster.local:50051";

/// A mesh with an `echo` service (never contacted: tests replace the balancer with a mock) and
/// `route_yaml` as the body of its VirtualService's single `http` route, e.g. `timeout: 2s`.
pub(crate) fn mesh_with_route(route_yaml: &str) -> Mesh {
    Mesh::new(config_with_route(route_yaml))
}

/// [`mesh_with_route`] with `policy` as the route's retry policy (for what Istio's YAML cannot
/// express, such as hedging).
pub(crate) fn mesh_with_retry_policy(policy: mesh_core::RetryPolicy) -> Mesh {
    use std::sync::Arc;

    use mesh_core::{
        Action, MeshConfig,
        route::{RouteTable, VirtualHost},
    };
    let base = config_with_route("");
    let policy = Arc::new(policy);
    let listeners = base
        .listeners()
        .iter()
        .map(|(name, table)| {
            let vhosts = table
                .virtual_hosts()
                .iter()
                .map(|vh| {
                    let routes = vh
                        .routes()
                        .iter()
                        .map(|r| {
                            let mut r = r.clone();
                            if let Action::Forward(f) = &r.action {
                                let mut f = (**f).clone();
                                f.retry = Some(policy.clone());
                                r.action = Action::Forward(Arc::new(f));
                            }
                            r
                        })
                        .collect();
                    VirtualHost::new(vh.name(), vh.domains().to_vec(), routes).unwrap()
                })
                .collect();
            (
                name.clone(),
                Arc::new(RouteTable::new(table.name(), vhosts).unwrap()),
            )
        })
        .collect();
    let config = MeshConfig::new(
        "custom",
        listeners,
        base.clusters().clone(),
        (**base.server()).clone(),
    );
    Mesh::new(config.unwrap())
}

/// A mesh with the `echo` service and `http_yaml` as its VirtualService's whole `http:` list.
pub(crate) fn mesh_with_http(http_yaml: &str) -> Mesh {
    Mesh::new(load(&format!(
        "{SERVICE_ENTRY}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [echo.default.svc.cluster.local]
  http:
{http_yaml}"
    )))
}

const SERVICE_ENTRY: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo}
spec:
  hosts: [echo.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 50051, name: grpc, protocol: GRPC}]
  endpoints: [{address: 127.0.0.1}]
";

fn load(yaml: &str) -> mesh_core::MeshConfig {
    match mesh_core::istio::load_str("test.yaml", yaml) {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("{e}"),
    }
}

fn config_with_route(route_yaml: &str) -> mesh_core::MeshConfig {
    load(&format!(
        "{SERVICE_ENTRY}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [echo.default.svc.cluster.local]
  http:
  - route: [{{destination: {{host: echo.default.svc.cluster.local}}}}]
{route_yaml}"
    ))
}

/// A gRPC request for `/echo.Echo/Say` with an empty body.
pub(crate) fn grpc_request() -> Request<RequestBody> {
    let mut req = http_request();
    *req.method_mut() = Method::POST;
    *req.uri_mut() = Uri::from_static("/echo.Echo/Say");
    req.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    req
}

/// A plain HTTP `GET /`.
pub(crate) fn http_request() -> Request<RequestBody> {
    let mut req = Request::new(Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync());
    *req.uri_mut() = Uri::from_static("/");
    req
}

/// An upstream stand-in answering gRPC OK.
pub(crate) fn grpc_ok() -> http::Response<ResponseBody> {
    crate::synthesize::grpc_status_response(mesh_core::GrpcCode::Ok, "")
}

/// The mock's handle, as the layers' tests use it.
pub(crate) type Handle =
    tower_test::mock::Handle<Request<RequestBody>, http::Response<ResponseBody>>;

/// The next request the mock receives; fails (rather than hangs) when none comes within a
/// minute of (paused) time.
pub(crate) async fn next(
    handle: &mut Handle,
) -> (
    Request<RequestBody>,
    tower_test::mock::SendResponse<http::Response<ResponseBody>>,
) {
    tokio::time::timeout(std::time::Duration::from_secs(60), handle.next_request())
        .await
        .expect("an attempt arrives")
        .expect("the mock is alive")
}
