//! The client stack's own cost per request: route → fault → timeout → retry over an in-memory
//! upstream (the balancer replaced through the per-attempt layer point), against calling the
//! in-memory upstream directly. No network, so the difference is the mesh's overhead.

// A benchmark with a broken fixture should stop loudly; it is test code, not library code.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{
    convert::Infallible,
    future::{Ready, ready},
    hint::black_box,
    task::{Context, Poll},
};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use mesh_tower::{
    Mesh,
    body::{BoxError, RequestBody, ResponseBody},
    mesh_core::istio,
};
use tower::{Service, ServiceExt, layer::layer_fn};

/// An upstream that answers gRPC OK at once.
#[derive(Clone, Debug)]
struct InMemory;

impl Service<Request<RequestBody>> for InMemory {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = Ready<Result<Response<ResponseBody>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<RequestBody>) -> Self::Future {
        let mut r = Response::new(ResponseBody::empty());
        r.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("0"));
        ready(Ok(r))
    }
}

const TARGET: &str = "echo.default.svc.cluster.local:50051";

fn mesh(retries: &str) -> Mesh {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [echo.default.svc.cluster.local]
  resolution: STATIC
  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [echo.default.svc.cluster.local]
  http:
  - match: [{{headers: {{x-beta-user: {{exact: \"true\"}}}}}}]
    route: [{{destination: {{host: echo.default.svc.cluster.local}}}}]
  - timeout: 10s
    retries: {retries}
    route: [{{destination: {{host: echo.default.svc.cluster.local}}}}]
"
    );
    Mesh::new(
        istio::load_str("bench.yaml", &yaml)
            .expect("valid config")
            .config,
    )
}

type BenchBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn request() -> Request<BenchBody> {
    let mut req = Request::new(Empty::<Bytes>::new().boxed_unsync());
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static("/echo.Echo/Say");
    req.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    req
}

fn client_stack(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("client_stack");

    group.bench_function("upstream_alone", |b| {
        let mut svc = InMemory;
        b.iter(|| {
            // The same request, erased as the channel erases it, so only the layers differ.
            let req = request().map(|b| b.map_err(|e| match e {}).boxed_unsync());
            black_box(rt.block_on(async {
                ServiceExt::<Request<RequestBody>>::ready(&mut svc)
                    .await
                    .unwrap()
                    .call(req)
                    .await
            }))
        })
    });

    for (name, retries) in [
        ("mesh_no_retries", "{attempts: 0}"),
        (
            "mesh_istio_default_retries",
            "{attempts: 2, retryOn: \"unavailable,reset\"}",
        ),
    ] {
        let mesh = mesh(retries);
        let mut channel = mesh.channel_with_attempt_layer(TARGET, layer_fn(|_balancer| InMemory));
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(rt.block_on(async {
                    ServiceExt::<Request<BenchBody>>::ready(&mut channel)
                        .await
                        .unwrap()
                        .call(request())
                        .await
                }))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, client_stack);
criterion_main!(benches);
