//! Tracing settings: which header formats clients write, and the optional tracer that records
//! spans (exported over OTLP by a tracer provider built with `opentelemetry-otlp`, or any other
//! exporter).
//!
//! Without a tracer no span is built: the layers only read and write headers. With one, a
//! client span is recorded per attempt and a server span per request; the span ids written to
//! the headers are then the recorded spans' ids, so the exported trace links up across hops.
//! Spans end when the response head arrives: a gRPC status sent in trailers after data is not
//! on the span (a trailers-only status is, as `rpc.grpc.status_code`).
//!
//! # OTLP
//! The tracer provider is the application's; with `opentelemetry-otlp` (feature `grpc-tonic`):
//!
//! ```no_run
//! use opentelemetry_otlp::WithExportConfig;
//! use mesh_tower::{
//!     Mesh,
//!     mesh_core::MeshConfig,
//!     trace::{ServerTraceLayer, Tracing},
//! };
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let exporter = opentelemetry_otlp::SpanExporter::builder()
//!     .with_tonic()
//!     .with_endpoint("http://otel-collector:4317")
//!     .build()?;
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
//!     .with_batch_exporter(exporter)
//!     .build();
//! let tracing = Tracing::new().with_tracer_provider(&provider);
//! // A client span per attempt of every channel of the mesh.
//! let mesh = Mesh::builder().tracing(tracing.clone()).build(MeshConfig::empty())?;
//! # let _ = mesh;
//! let server = tonic::transport::Server::builder()
//!     .layer(ServerTraceLayer::with_tracing(tracing)); // a server span per request
//! # let _ = server;
//! # Ok(()) }
//! ```
//!
//! `tests/trace.rs` exports through exactly this to a collector on 127.0.0.1.

use std::{
    borrow::Cow,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use http::{HeaderMap, Response};
use opentelemetry::{
    Context, KeyValue,
    trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _},
};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};
use pin_project_lite::pin_project;

use super::{Propagation, TraceContext};

/// The instrumentation scope of the mesh's spans.
const SCOPE: &str = "mesh-tower";

/// How the mesh propagates traces and whether it records spans.
///
/// Default is W3C + B3 single-header propagation and no spans.
#[derive(Clone, Default)]
pub struct Tracing {
    propagation: Propagation,
    tracer: Option<SdkTracer>,
}

/// Propagation by default, no spans: what a mesh uses until told otherwise.
pub(crate) static DEFAULT: Tracing = Tracing {
    propagation: Propagation::DEFAULT,
    tracer: None,
};

// === impl Tracing ===

impl Tracing {
    /// Default propagation (W3C + B3 single header), no spans.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records spans with a tracer of `provider`, e.g. one with an OTLP exporter.
    pub fn with_tracer_provider(mut self, provider: &SdkTracerProvider) -> Self {
        use opentelemetry::trace::TracerProvider as _;
        self.tracer = Some(provider.tracer(SCOPE));
        self
    }

    /// The header formats clients write. Default is W3C + the B3 single header.
    pub fn with_propagation(mut self, propagation: Propagation) -> Self {
        self.propagation = propagation;
        self
    }

    /// The header formats clients write.
    pub fn propagation(&self) -> Propagation {
        self.propagation
    }

    /// Whether spans are recorded.
    pub fn records_spans(&self) -> bool {
        self.tracer.is_some()
    }

    /// Starts a span of `kind` as a child of `parent` (or a root when `parent` is `None`),
    /// when a tracer is set. Returns the span and `context` carrying the span's ids.
    pub(crate) fn start_span(
        &self,
        kind: SpanKind,
        name: &str,
        parent: Option<&TraceContext>,
        context: TraceContext,
        attributes: Vec<KeyValue>,
    ) -> (Option<Span>, TraceContext) {
        let Some(tracer) = &self.tracer else {
            return (None, context);
        };
        let parent_cx = match parent {
            Some(parent) => Context::new().with_remote_span_context(parent.span_context(true)),
            None => Context::new(),
        };
        let span = tracer
            .span_builder(Cow::Owned(name.to_owned()))
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent_cx);
        let recorded = span.span_context();
        if !recorded.is_valid() {
            return (Some(span), context);
        }
        let context = context.with_ids(recorded.trace_id(), recorded.span_id());
        (Some(span), context)
    }
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing")
            .field("propagation", &self.propagation)
            .field("records_spans", &self.records_spans())
            .finish()
    }
}

pin_project! {
    /// A response future that ends its request's span, when one is recorded, with the
    /// outcome: the response head or the error.
    #[derive(Debug)]
    pub struct SpanFuture<F> {
        #[pin]
        inner: F,
        span: Option<Span>,
    }
}

// === impl SpanFuture ===

impl<F> SpanFuture<F> {
    pub(crate) fn new(inner: F, span: Option<Span>) -> Self {
        Self { inner, span }
    }
}

impl<F, RB, E> Future for SpanFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: fmt::Display,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Some(span) = this.span.take() {
            match &output {
                Ok(response) => end_with_response(span, response),
                Err(error) => end_with_error(span, error),
            }
        }
        Poll::Ready(output)
    }
}

/// Ends `span` with what the response head says: the HTTP status and, for a gRPC
/// trailers-only answer, its `grpc-status`.
fn end_with_response<B>(mut span: Span, response: &Response<B>) {
    let status = response.status();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    let grpc = grpc_status(response.headers());
    if let Some(code) = grpc {
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
    }
    if status.is_server_error() || grpc.is_some_and(|code| code != 0) {
        span.set_status(Status::error(""));
    }
    span.end();
}

/// Ends `span` as failed with `error`.
fn end_with_error(mut span: Span, error: &dyn fmt::Display) {
    span.set_status(Status::error(error.to_string()));
    span.end();
}

fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    std::str::from_utf8(headers.get(crate::names::GRPC_STATUS)?.as_bytes())
        .ok()?
        .parse()
        .ok()
}

/// The usual attributes of a request span.
pub(crate) fn request_attributes<B>(req: &http::Request<B>) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("http.request.method", req.method().as_str().to_owned()),
        KeyValue::new("url.path", req.uri().path().to_owned()),
    ];
    if let Some(authority) = req.uri().authority() {
        attributes.push(KeyValue::new(
            "server.address",
            authority.as_str().to_owned(),
        ));
    }
    attributes
}
