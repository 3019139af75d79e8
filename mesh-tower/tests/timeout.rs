//! The route timeout through a mesh channel against a real HTTP/2 server on 127.0.0.1 that
//! sends its response headers and then stalls its body: the timeout covers the body too.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_test_support::echo as support;
use support::*;
use tower::ServiceExt;

/// Counts a stalled body's streams that ended: the server drops the body when its stream is
/// reset.
struct Ended(Arc<AtomicU32>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A server answering every request with 200 headers and one data frame, then nothing.
async fn spawn_stalling_server() -> (SocketAddr, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ended = Arc::new(AtomicU32::new(0));
    let streams_ended = ended.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let ended = streams_ended.clone();
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                let guard = Ended(ended.clone());
                let grpc = req.headers().get("content-type").cloned();
                async move {
                    let first = futures::stream::iter([Ok::<_, Infallible>(Frame::data(
                        Bytes::from_static(b"\0\0\0\0\x05hello"),
                    ))]);
                    let stalled = first.chain(futures::stream::pending()).map(move |f| {
                        let _ = &guard;
                        f
                    });
                    let mut response = http::Response::new(StreamBody::new(stalled));
                    if let Some(content_type) = grpc {
                        response.headers_mut().insert("content-type", content_type);
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
    (addr, ended)
}

fn mesh_with_timeout(addr: SocketAddr) -> mesh_tower::Mesh {
    let routes = virtual_service(&format!(
        "  - timeout: 300ms\n    retries: {{attempts: 0}}\n    route:\n    - destination: {{host: {HOST}}}\n"
    ));
    mesh_tower::Mesh::new(config(&format!(
        "{}---\n{routes}",
        services_yaml(&[("stall", addr)])
    )))
}

fn call(grpc: bool) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::post(format!("http://{TARGET}/echo.Echo/Say"));
    if grpc {
        req = req.header("content-type", "application/grpc");
    }
    req.body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap()
}

/// Polls `body` to its last frame, which must come well before the test gives up.
async fn last_frame(
    body: mesh_tower::body::ResponseBody,
) -> Result<Option<Frame<Bytes>>, mesh_tower::body::BoxError> {
    tokio::time::timeout(Duration::from_secs(10), async move {
        let mut body = body;
        let mut last = None;
        while let Some(frame) = body.frame().await {
            last = Some(frame?);
        }
        Ok(last)
    })
    .await
    .expect("the route timeout ends a stalled body")
}

#[tokio::test]
async fn a_stalled_grpc_body_ends_with_deadline_exceeded_trailers() {
    let (addr, ended) = spawn_stalling_server().await;
    let mesh = mesh_with_timeout(addr);
    let response = mesh.channel(TARGET).oneshot(call(true)).await.unwrap();
    assert_eq!(response.status(), 200, "the headers came in time");
    assert!(response.headers().get("grpc-status").is_none());

    let last = last_frame(response.into_body()).await.unwrap().unwrap();
    let trailers = last.trailers_ref().expect("ends with trailers");
    assert_eq!(trailers["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert!(trailers.contains_key("grpc-message"));
    // The upstream stream was reset: the server dropped its body.
    for _ in 0..100 {
        if ended.load(Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the upstream stream was not reset");
}

#[tokio::test]
async fn a_stalled_http_body_fails_at_the_route_timeout() {
    let (addr, _ended) = spawn_stalling_server().await;
    let mesh = mesh_with_timeout(addr);
    let response = mesh.channel(TARGET).oneshot(call(false)).await.unwrap();
    assert_eq!(response.status(), 200, "the headers came in time");
    let error = last_frame(response.into_body()).await.unwrap_err();
    assert!(error.to_string().contains("timed out"), "{error}");
}
