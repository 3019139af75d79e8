//! The server side: reads the incoming trace (any format) and runs the handler inside it.
//!
//! [`ServerTraceLayer`] goes first in a server's stack — around tonic's
//! `Server::builder().layer(..)` or an axum `Router::layer(..)`, alone or as the first layer of
//! the mesh's server policy stack. For each request it
//! - builds the [`RequestTrace`]: the caller's context from `traceparent`, `b3` or `x-b3-*`
//!   (malformed headers are ignored: a new trace starts), and `x-request-id`, generated and set
//!   on the request when absent;
//! - with a tracer ([`Tracing::with_tracer_provider`]), records a server span, child of the
//!   caller's, and makes it the context outgoing calls descend from; without one, outgoing
//!   calls descend directly from the caller's span and nothing is allocated for spans;
//! - puts the [`RequestTrace`] in the request's extensions and runs the inner service's future
//!   inside [`scope`](super::scope), so a mesh [`Channel`](crate::Channel) used by the handler
//!   continues the trace without the handler touching headers.

use std::task::{Context, Poll};

use http::{Request, Response};
use opentelemetry::trace::SpanKind;
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};

use super::{
    RequestId, RequestTrace, TraceContext, X_REQUEST_ID,
    export::{self, SpanFuture, Tracing},
    scope,
};

/// Makes each request's trace current while its handler runs; see the module docs.
#[derive(Clone, Debug)]
pub struct ServerTrace<S> {
    inner: S,
    tracing: Tracing,
}

/// A [`Layer`] of [`ServerTrace`].
#[derive(Clone, Debug, Default)]
pub struct ServerTraceLayer {
    tracing: Tracing,
}

/// The response future of [`ServerTrace`]: the handler's, polled inside its trace's scope;
/// ends the server span, when one is recorded.
pub type ServerTraceFuture<F> = SpanFuture<TaskLocalFuture<RequestTrace, F>>;

// === impl ServerTraceLayer ===

impl ServerTraceLayer {
    /// Propagation only: no server spans.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records server spans when `tracing` has a tracer.
    pub fn with_tracing(tracing: Tracing) -> Self {
        Self { tracing }
    }
}

impl<S> Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> ServerTrace<S> {
        ServerTrace {
            inner,
            tracing: self.tracing.clone(),
        }
    }
}

// === impl ServerTrace ===

impl<S> ServerTrace<S> {
    /// Traces the requests `inner` handles.
    pub fn new(inner: S, tracing: Tracing) -> Self {
        Self { inner, tracing }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, RB> Service<Request<B>> for ServerTrace<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ServerTraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let caller = TraceContext::extract(req.headers());
        let request_id = match RequestId::from_headers(req.headers()) {
            Some(id) => id,
            None => {
                let id = RequestId::generate();
                req.headers_mut()
                    .insert(X_REQUEST_ID, id.header_value().clone());
                id
            }
        };
        let (span, context) = if self.tracing.records_spans() {
            let context = match &caller {
                Some(caller) => caller.child(),
                None => TraceContext::extract_or_root(req.headers()),
            };
            self.tracing.start_span(
                SpanKind::Server,
                req.uri().path(),
                caller.as_ref(),
                context,
                export::request_attributes(&req),
            )
        } else {
            let context = caller.unwrap_or_else(|| TraceContext::extract_or_root(req.headers()));
            (None, context)
        };
        let trace = RequestTrace::new(context, request_id);
        req.extensions_mut().insert(trace.clone());
        SpanFuture::new(scope::scope(trace, self.inner.call(req)), span)
    }
}
