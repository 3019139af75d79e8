//! Trace propagation across real tonic servers on 127.0.0.1: a caller → service A (with the
//! server trace layer; its handler calls B through a mesh channel without touching headers) →
//! service B.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use http::HeaderMap;
use mesh_test_support::echo as support;
use mesh_tower::{
    Mesh,
    trace::{RequestTrace, ServerTraceLayer, TraceContext, Tracing},
};
use support::*;
use tonic::{Status, body::Body, server::NamedService};

/// What a hop saw of one request: its headers and the trace the server layer made current.
#[derive(Clone, Debug)]
struct Seen {
    headers: HeaderMap,
    trace: Option<RequestTrace>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// An echo service that records each request and, with `next`, answers by calling the echo
/// service through a mesh channel — the handler never looks at trace headers.
struct Hop {
    log: Log,
    next: Option<Mesh>,
    fail_first_attempts: bool,
}

/// Serves `hop` (the echo service with those knobs) on 127.0.0.1 behind `layer`.
async fn serve(hop: Hop, layer: ServerTraceLayer) -> SocketAddr {
    let Hop {
        log,
        next,
        fail_first_attempts,
    } = hop;
    let hop = echo_service(
        "",
        Arc::new(Behavior {
            on_request: Some(OnRequest::new(move |req| {
                log.lock().unwrap().push(Seen {
                    headers: req.headers().clone(),
                    trace: req.extensions().get::<RequestTrace>().cloned(),
                });
            })),
            forward: next,
            fail_first_attempts,
            ..Behavior::default()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures::stream::unfold(listener, |listener| async move {
        Some((listener.accept().await.map(|(stream, _)| stream), listener))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(hop)
            .serve_with_incoming(incoming),
    );
    addr
}

fn retries() -> String {
    virtual_service(&format!(
        "  - retries: {{attempts: 2, retryOn: unavailable}}
    route:
    - destination: {{host: {HOST}}}
"
    ))
}

/// Service B, and service A calling it through a mesh (with `policy`, and `tracing` on both
/// A's server layer and its mesh).
struct Chain {
    a: SocketAddr,
    a_log: Log,
    b_log: Log,
}

async fn chain(policy: &str, b_fails_first_attempts: bool, tracing: Tracing) -> Chain {
    let b_log = Log::default();
    let b = serve(
        Hop {
            log: b_log.clone(),
            next: None,
            fail_first_attempts: b_fails_first_attempts,
        },
        ServerTraceLayer::new(),
    )
    .await;
    let mesh_of_a = Mesh::new(config(&format!(
        "{}---\n{policy}",
        services_yaml(&[("b", b)])
    )));
    mesh_of_a.set_tracing(tracing.clone()).unwrap();
    let a_log = Log::default();
    let a = serve(
        Hop {
            log: a_log.clone(),
            next: Some(mesh_of_a),
            fail_first_attempts: false,
        },
        ServerTraceLayer::with_tracing(tracing),
    )
    .await;
    Chain { a, a_log, b_log }
}

/// Calls A from outside the mesh (a plain tonic channel) with the given metadata.
async fn call_from_outside(a: SocketAddr, metadata: &[(&'static str, &str)]) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{a}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut req = request("hello");
    for (name, value) in metadata {
        req.metadata_mut().insert(*name, value.parse().unwrap());
    }
    let reply = EchoClient::new(channel).say(req).await.unwrap();
    assert_eq!(reply.into_inner().message, "hello");
}

fn one(log: &Log) -> Seen {
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    log[0].clone()
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .to_str()
        .unwrap()
}

/// A field of the B3 single header the mesh sends by default
/// (`{trace}-{span}-{sampled}-{parent}`), named as in the multi-header form.
fn b3_field<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    let index = match name {
        "x-b3-traceid" => 0,
        "x-b3-spanid" => 1,
        "x-b3-sampled" => 2,
        "x-b3-parentspanid" => 3,
        other => panic!("{other} is not a B3 field"),
    };
    let b3 = header(headers, "b3");
    b3.split('-')
        .nth(index)
        .unwrap_or_else(|| panic!("no {name} in b3: {b3}"))
}

const TRACE: &str = "463ac35c9f6413ad48485a3953bb6124";
const SPAN: &str = "a2fb4a1d1a96d312";

#[tokio::test]
async fn b3_in_gives_w3c_and_b3_single_out_with_one_trace_through_three_hops() {
    let chain = chain("", false, Tracing::new()).await;
    call_from_outside(
        chain.a,
        &[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "1"),
            ("x-request-id", "req-42"),
        ],
    )
    .await;

    let at_a = one(&chain.a_log);
    let trace_at_a = at_a.trace.unwrap();
    assert_eq!(trace_at_a.context().trace_id().to_string(), TRACE);
    assert_eq!(trace_at_a.context().span_id().to_string(), SPAN);
    assert_eq!(trace_at_a.request_id().as_str(), Some("req-42"));

    let at_b = one(&chain.b_log);
    let h = &at_b.headers;
    // The default is the single `b3` header: `{trace}-{span}-{sampled}-{parent}`.
    let b3: Vec<&str> = header(h, "b3").split('-').collect();
    let [trace, client_span, sampled, parent] = b3[..] else {
        panic!("b3 is not trace-span-sampled-parent: {b3:?}");
    };
    assert_eq!(trace, TRACE);
    assert_eq!(parent, SPAN, "A's call is a child of the caller's span");
    assert_eq!(sampled, "1");
    assert!(
        h.get("x-b3-traceid").is_none(),
        "the multi-header form is not sent by default"
    );
    assert_ne!(client_span, SPAN);
    assert_eq!(
        header(h, "traceparent"),
        format!("00-{TRACE}-{client_span}-01")
    );
    assert_eq!(header(h, "x-request-id"), "req-42");
    let trace_at_b = at_b.trace.unwrap();
    assert_eq!(trace_at_b.context().span_id().to_string(), client_span);
}

#[tokio::test]
async fn a_b3_single_header_continues_the_trace() {
    let chain = chain("", false, Tracing::new()).await;
    call_from_outside(chain.a, &[("b3", &format!("{TRACE}-{SPAN}-1"))]).await;
    let at_b = one(&chain.b_log);
    assert_eq!(b3_field(&at_b.headers, "x-b3-traceid"), TRACE);
    assert_eq!(b3_field(&at_b.headers, "x-b3-parentspanid"), SPAN);
}

#[tokio::test]
async fn a_caller_in_the_mesh_starts_one_trace_that_chains_through_every_hop() {
    let chain = chain("", false, Tracing::new()).await;
    let caller = Mesh::new(config(&services_yaml(&[("a", chain.a)])));
    EchoClient::new(caller.channel(TARGET))
        .say(request("hello"))
        .await
        .unwrap();

    let at_a = one(&chain.a_log).headers;
    let at_b = one(&chain.b_log).headers;
    let trace = b3_field(&at_a, "x-b3-traceid");
    assert_eq!(trace.len(), 32);
    assert_eq!(b3_field(&at_b, "x-b3-traceid"), trace);
    assert_eq!(
        b3_field(&at_b, "x-b3-parentspanid"),
        b3_field(&at_a, "x-b3-spanid"),
        "B's caller span is a child of A's caller span"
    );
    let request_id = header(&at_a, "x-request-id");
    assert_eq!(request_id.len(), 36, "generated by the first client");
    assert_eq!(header(&at_b, "x-request-id"), request_id);
}

#[tokio::test]
async fn a_malformed_traceparent_starts_a_new_trace_and_a_request_id_is_generated() {
    let chain = chain("", false, Tracing::new()).await;
    let malformed = format!("00-{}-{SPAN}-01", TRACE.to_uppercase());
    call_from_outside(chain.a, &[("traceparent", &malformed)]).await;

    let trace_at_a = one(&chain.a_log).trace.unwrap();
    let new_trace = trace_at_a.context().trace_id().to_string();
    assert_ne!(new_trace, TRACE.to_lowercase());
    let at_b = one(&chain.b_log).headers;
    assert_eq!(b3_field(&at_b, "x-b3-traceid"), new_trace);
    assert_eq!(
        b3_field(&at_b, "x-b3-parentspanid"),
        trace_at_a.context().span_id().to_string()
    );
    let generated = trace_at_a.request_id().as_str().unwrap();
    assert_eq!(generated.len(), 36);
    assert_eq!(header(&at_b, "x-request-id"), generated);
}

#[tokio::test]
async fn each_attempt_of_a_retried_call_is_its_own_span() {
    let chain = chain(&retries(), true, Tracing::new()).await;
    call_from_outside(
        chain.a,
        &[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))],
    )
    .await;

    let attempts = chain.b_log.lock().unwrap().clone();
    assert_eq!(
        attempts.len(),
        2,
        "the first attempt failed and was retried"
    );
    let contexts: Vec<TraceContext> = attempts
        .iter()
        .map(|seen| TraceContext::extract(&seen.headers).unwrap())
        .collect();
    for (seen, context) in attempts.iter().zip(&contexts) {
        assert_eq!(context.trace_id().to_string(), TRACE);
        assert_eq!(b3_field(&seen.headers, "x-b3-parentspanid"), SPAN);
    }
    assert_ne!(contexts[0].span_id(), contexts[1].span_id());
    assert_eq!(
        header(&attempts[0].headers, "x-request-id"),
        header(&attempts[1].headers, "x-request-id"),
        "attempts of one call share its request id"
    );
}

#[tokio::test]
async fn a_retried_attempt_sends_the_head_of_the_first_but_for_its_span_and_count() {
    let chain = chain(&retries(), true, Tracing::new()).await;
    call_from_outside(
        chain.a,
        &[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))],
    )
    .await;

    let attempts = chain.b_log.lock().unwrap().clone();
    assert_eq!(attempts.len(), 2, "the first attempt was retried");
    let count = |seen: &Seen| header(&seen.headers, "x-envoy-attempt-count").to_owned();
    assert_eq!(count(&attempts[0]), "1");
    assert_eq!(count(&attempts[1]), "2");
    // The retry is built from the head the balancer hands back: the same headers but for the
    // ones written for each attempt (HTTP/2 gives the order of regular headers no meaning). A
    // replayed body knows its length, which hyper sends as `content-length`; the first
    // attempt's body was still streaming.
    let per_attempt = [
        "traceparent",
        "b3",
        "x-envoy-attempt-count",
        "content-length",
    ];
    let rest = |seen: &Seen| -> Vec<(String, String)> {
        let mut rest: Vec<_> = seen
            .headers
            .iter()
            .filter(|(name, _)| !per_attempt.contains(&name.as_str()))
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        rest.sort();
        rest
    };
    assert_eq!(rest(&attempts[0]), rest(&attempts[1]));
    assert!(
        rest(&attempts[0])
            .iter()
            .any(|(name, _)| name == "x-request-id"),
        "{:?}",
        attempts[0].headers
    );
}

/// Collects the spans a tracer provider exports.
#[derive(Clone, Debug, Default)]
struct Collected(Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

impl opentelemetry_sdk::trace::SpanExporter for Collected {
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        self.0.lock().unwrap().extend(batch);
        std::future::ready(Ok(()))
    }
}

#[tokio::test]
async fn a_call_that_starts_a_trace_exports_its_root_and_every_parent_it_names() {
    use opentelemetry::trace::SpanId;

    let spans = Collected::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let b_log = Log::default();
    let b = serve(
        Hop {
            log: b_log.clone(),
            next: None,
            fail_first_attempts: true,
        },
        ServerTraceLayer::new(),
    )
    .await;
    let mesh = Mesh::new(config(&format!(
        "{}---\n{}",
        services_yaml(&[("b", b)]),
        retries()
    )));
    mesh.set_tracing(Tracing::new().with_tracer_provider(&provider))
        .unwrap();
    // No server scope and no trace headers: this call starts the trace.
    let mut client = EchoClient::new(mesh.channel(TARGET));
    client.say(request("hi")).await.unwrap();

    let spans = spans.0.lock().unwrap().clone();
    let exported: Vec<SpanId> = spans.iter().map(|s| s.span_context.span_id()).collect();
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id == SpanId::INVALID)
        .collect();
    assert_eq!(roots.len(), 1, "one root, the call: {spans:#?}");
    assert_eq!(spans.len(), 3, "the call and its two attempts: {spans:#?}");
    let trace_id = roots[0].span_context.trace_id();
    for span in &spans {
        assert_eq!(span.span_context.trace_id(), trace_id, "{span:#?}");
        assert!(
            span.parent_span_id == SpanId::INVALID || exported.contains(&span.parent_span_id),
            "a parent that is never exported: {span:#?}"
        );
    }
    // What B received names the exported spans.
    for seen in b_log.lock().unwrap().iter() {
        let context = TraceContext::extract(&seen.headers).unwrap();
        assert_eq!(context.trace_id(), trace_id);
        assert!(exported.contains(&context.span_id()));
    }
}

#[tokio::test]
async fn with_a_tracer_provider_a_server_span_and_a_client_span_per_attempt_are_exported() {
    use opentelemetry::trace::SpanKind;

    let spans = Collected::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let chain = chain(
        &retries(),
        true,
        Tracing::new().with_tracer_provider(&provider),
    )
    .await;
    call_from_outside(
        chain.a,
        &[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))],
    )
    .await;

    let spans = spans.0.lock().unwrap().clone();
    assert!(
        spans
            .iter()
            .all(|s| s.span_context.trace_id().to_string() == TRACE)
    );
    let server: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    let client: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .collect();
    assert_eq!((server.len(), client.len()), (1, 2), "{spans:#?}");
    let server = server[0];
    assert_eq!(server.parent_span_id.to_string(), SPAN);
    assert_eq!(server.name, "/echo.Echo/Say");

    // What B received are the recorded spans' ids: each attempt is a child of A's server span.
    let at_b = chain.b_log.lock().unwrap().clone();
    assert_eq!(at_b.len(), 2);
    for (attempt, seen) in client.iter().zip(&at_b) {
        assert_eq!(attempt.parent_span_id, server.span_context.span_id());
        assert_eq!(
            b3_field(&seen.headers, "x-b3-spanid"),
            attempt.span_context.span_id().to_string()
        );
        assert_eq!(
            b3_field(&seen.headers, "x-b3-parentspanid"),
            server.span_context.span_id().to_string()
        );
    }
    assert_ne!(
        client[0].span_context.span_id(),
        client[1].span_context.span_id()
    );
    assert_eq!(
        client[0].status,
        opentelemetry::trace::Status::error(""),
        "UNAVAILABLE"
    );
    assert_eq!(client[1].status, opentelemetry::trace::Status::Unset);
}

#[tokio::test]
async fn an_axum_router_behind_the_layer_continues_the_trace_in_its_handlers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let b_log = Log::default();
    let b = serve(
        Hop {
            log: b_log.clone(),
            next: None,
            fail_first_attempts: false,
        },
        ServerTraceLayer::new(),
    )
    .await;
    let mesh = Mesh::new(config(&services_yaml(&[("b", b)])));
    let router = axum::Router::new()
        .route(
            "/",
            axum::routing::get(move || {
                let mesh = mesh.clone();
                async move {
                    EchoClient::new(mesh.channel(TARGET))
                        .say(request("from axum"))
                        .await
                        .unwrap();
                    let current = mesh_tower::trace::current().unwrap();
                    current.context().trace_id().to_string()
                }
            }),
        )
        .layer(ServerTraceLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head =
        format!("GET / HTTP/1.1\r\nhost: a\r\nb3: {TRACE}-{SPAN}-1\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.ends_with(TRACE),
        "the handler saw the caller's trace: {response}"
    );
    let at_b = one(&b_log).headers;
    assert_eq!(b3_field(&at_b, "x-b3-traceid"), TRACE);
    assert_eq!(b3_field(&at_b, "x-b3-parentspanid"), SPAN);
}

/// The subset of OTLP's `ExportTraceServiceRequest` a test reads (prost skips the rest).
mod otlp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub(crate) resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ResourceSpans {
        #[prost(message, repeated, tag = "2")]
        pub(crate) scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ScopeSpans {
        #[prost(message, repeated, tag = "2")]
        pub(crate) spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub(crate) trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub(crate) span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub(crate) parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub(crate) name: String,
        /// 2: server, 3: client.
        #[prost(int32, tag = "6")]
        pub(crate) kind: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ExportTraceServiceResponse {}
}

/// An OTLP/gRPC trace collector on 127.0.0.1 that keeps the spans it receives.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<otlp::Span>>>,
}

impl NamedService for Collector {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tower::Service<http::Request<Body>> for Collector {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(this, req).await)
        })
    }
}

impl tower::Service<tonic::Request<otlp::ExportTraceServiceRequest>> for Collector {
    type Response = tonic::Response<otlp::ExportTraceServiceResponse>;
    type Error = Status;
    type Future = std::future::Ready<Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<otlp::ExportTraceServiceRequest>) -> Self::Future {
        let spans = req
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.spans.lock().unwrap().extend(spans);
        std::future::ready(Ok(tonic::Response::new(
            otlp::ExportTraceServiceResponse {},
        )))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_grpc_to_a_collector() {
    use opentelemetry_otlp::WithExportConfig;

    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    let incoming = futures::stream::unfold(listener, |listener| async move {
        Some((listener.accept().await.map(|(stream, _)| stream), listener))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(collector.clone())
            .serve_with_incoming(incoming),
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{collector_addr}"))
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();

    let chain = chain("", false, Tracing::new().with_tracer_provider(&provider)).await;
    call_from_outside(
        chain.a,
        &[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))],
    )
    .await;
    // Flushing blocks until the batch is exported; keep it off the runtime's workers.
    tokio::task::spawn_blocking(move || provider.force_flush())
        .await
        .unwrap()
        .unwrap();

    let spans = collector.spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 2, "{spans:?}");
    let server = spans.iter().find(|s| s.kind == 2).unwrap();
    let client = spans.iter().find(|s| s.kind == 3).unwrap();
    assert!(spans.iter().all(|s| hex(&s.trace_id) == TRACE));
    assert_eq!(hex(&server.parent_span_id), SPAN);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(client.name, "/echo.Echo/Say");
    let at_b = one(&chain.b_log).headers;
    assert_eq!(b3_field(&at_b, "x-b3-spanid"), hex(&client.span_id));
}
