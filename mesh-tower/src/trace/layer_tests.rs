//! The client and server layers around in-process services (the network path is in
//! `tests/trace.rs`).

use std::{convert::Infallible, sync::Arc};

use http::{HeaderMap, Request, Response};
use tokio::sync::Mutex;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;

type Seen = Arc<Mutex<Vec<(HeaderMap, Option<RequestTrace>, Option<RequestTrace>)>>>;

/// A service recording each request's headers, its `RequestTrace` extension and the
/// task-local trace while it runs.
fn recorder() -> (
    Seen,
    impl Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone,
) {
    let seen = Seen::default();
    let svc = {
        let seen = seen.clone();
        service_fn(move |req: Request<()>| {
            let seen = seen.clone();
            async move {
                let ext = req.extensions().get::<RequestTrace>().cloned();
                seen.lock()
                    .await
                    .push((req.headers().clone(), ext, current()));
                Ok::<_, Infallible>(Response::new(()))
            }
        })
    };
    (seen, svc)
}

fn request(pairs: &[(&'static str, &str)]) -> Request<()> {
    let mut req = Request::new(());
    for (name, value) in pairs {
        req.headers_mut().insert(*name, value.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn the_server_layer_makes_the_callers_trace_current_and_sets_a_request_id() {
    let (seen, svc) = recorder();
    let mut server = ServerTraceLayer::new().layer(svc);
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    server
        .ready()
        .await
        .unwrap()
        .call(request(&[("traceparent", parent)]))
        .await
        .unwrap();
    server
        .ready()
        .await
        .unwrap()
        .call(request(&[("traceparent", "00-zz")]))
        .await
        .unwrap();
    assert_eq!(current(), None, "the scope ends with the request");

    let seen = seen.lock().await;
    let (headers, ext, task_local) = &seen[0];
    let ext = ext.as_ref().unwrap();
    assert_eq!(Some(ext), task_local.as_ref());
    assert_eq!(
        ext.context().trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(ext.context().span_id().to_string(), "00f067aa0ba902b7");
    assert_eq!(headers["x-request-id"], ext.request_id().header_value());

    let (_, ext, _) = &seen[1];
    let ext = ext.as_ref().unwrap();
    assert_ne!(
        ext.context().trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        ext.context().parent_span_id(),
        None,
        "a malformed header starts a new trace"
    );
}

#[tokio::test]
async fn each_client_attempt_is_a_new_child_of_the_current_trace() {
    let (seen, svc) = recorder();
    let mut client = ClientTraceLayer::new(Tracing::new()).layer(svc);
    let caller = RequestTrace::from_headers(&HeaderMap::new());
    scope(caller.clone(), async {
        for _ in 0..2 {
            client
                .ready()
                .await
                .unwrap()
                .call(request(&[]))
                .await
                .unwrap();
        }
    })
    .await;
    let seen = seen.lock().await;
    let mut spans = Vec::new();
    for (headers, _, _) in seen.iter() {
        let sent = TraceContext::extract(headers).unwrap();
        assert_eq!(sent.trace_id(), caller.context().trace_id());
        let b3 = headers["b3"].to_str().unwrap();
        assert!(
            b3.ends_with(&format!("-{}", caller.context().span_id())),
            "the caller's span is the parent in `b3: {b3}`"
        );
        assert_eq!(headers["x-request-id"], caller.request_id().header_value());
        spans.push(sent.span_id());
    }
    assert_ne!(spans[0], spans[1]);
    assert!(!spans.contains(&caller.context().span_id()));
}

#[tokio::test]
async fn a_client_without_a_current_trace_continues_the_request_headers_or_starts_one() {
    let (seen, svc) = recorder();
    let mut client = ClientTrace::new(svc, Tracing::new().with_propagation(Propagation::B3_SINGLE));
    let b3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
    let with_headers = request(&[("b3", b3), ("x-request-id", "mine")]);
    client
        .ready()
        .await
        .unwrap()
        .call(with_headers)
        .await
        .unwrap();
    client
        .ready()
        .await
        .unwrap()
        .call(request(&[]))
        .await
        .unwrap();

    let seen = seen.lock().await;
    let (headers, _, _) = &seen[0];
    let sent = headers["b3"].to_str().unwrap();
    assert!(
        sent.starts_with("80f198ee56343ba864fe8b2a57d3eff7-"),
        "{sent}"
    );
    assert!(sent.ends_with("-1-e457b5a2e4d86bd1"), "{sent}");
    assert_eq!(headers["x-request-id"], "mine");
    assert!(!headers.contains_key("traceparent"));

    let (headers, _, _) = &seen[1];
    let root = TraceContext::extract(headers).unwrap();
    assert_eq!(root.parent_span_id(), None);
    assert_eq!(headers["x-request-id"].len(), 36);
}

#[tokio::test]
async fn a_request_trace_extension_wins_over_the_task_local_one() {
    let (seen, svc) = recorder();
    let mut client = ClientTraceLayer::new(Tracing::new()).layer(svc);
    let explicit = RequestTrace::from_headers(&HeaderMap::new());
    let mut req = request(&[]);
    req.extensions_mut().insert(explicit.clone());
    let ambient = RequestTrace::from_headers(&HeaderMap::new());
    scope(ambient, client.ready().await.unwrap().call(req))
        .await
        .unwrap();
    let (headers, _, _) = &seen.lock().await[0];
    assert_eq!(
        TraceContext::extract(headers).unwrap().trace_id(),
        explicit.context().trace_id()
    );
}
