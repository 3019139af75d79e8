//! The client side: each attempt is a new span, child of the caller's, written into the
//! attempt's headers.
//!
//! The caller's span is, in order: the trace the channel pinned to the call before its retries
//! (in the route decision, so every attempt of a call shares its trace and its `x-request-id`),
//! a [`RequestTrace`] in the request's extensions, the task-local [`current`](super::current) trace of the request being
//! handled, trace headers already on the request, or else a new root trace. Each attempt gets
//! a fresh span id — retries and hedged attempts are told apart — and the headers of every
//! format are replaced by the configured ones ([`Propagation`](super::Propagation)).
//! `x-request-id` is kept when the request has one, else taken from the caller's trace.
//!
//! With a tracer ([`Tracing::with_tracer_provider`]) each attempt is also a recorded client
//! span, ended when the response head arrives (or the attempt fails).

use std::{
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use http::{Request, Response};
use opentelemetry::{KeyValue, trace::SpanKind};
use opentelemetry_sdk::trace::Span;
use tower::{Layer, Service};

use super::{
    RequestId, RequestTrace, TraceContext,
    export::{self, DEFAULT, SpanFuture, Tracing},
    scope,
};

/// Writes a new child span into each request it sends; see the module docs.
#[derive(Clone, Debug)]
pub struct ClientTrace<S> {
    inner: S,
    tracing: Arc<OnceLock<Tracing>>,
    /// Finds the caller's trace in a request's extensions: a [`RequestTrace`] there, or (in a
    /// channel) the trace pinned to the call, which travels in the route decision so that a
    /// call carries one extension rather than two.
    pinned: Pinned,
}

/// Where [`ClientTrace`] finds the trace pinned to a request.
pub(crate) type Pinned = fn(&http::Extensions) -> Option<&RequestTrace>;

fn request_trace(extensions: &http::Extensions) -> Option<&RequestTrace> {
    extensions.get::<RequestTrace>()
}

/// A [`Layer`] of [`ClientTrace`].
#[derive(Clone, Debug)]
pub struct ClientTraceLayer {
    tracing: Arc<OnceLock<Tracing>>,
}

/// The response future of [`ClientTrace`]: ends the attempt's span, when one is recorded.
pub type ClientTraceFuture<F> = SpanFuture<F>;

// === impl ClientTrace ===

impl<S> ClientTrace<S> {
    /// Traces the requests sent to `inner` with `tracing`.
    pub fn new(inner: S, tracing: Tracing) -> Self {
        Self {
            inner,
            tracing: Arc::new(OnceLock::from(tracing)),
            pinned: request_trace,
        }
    }

    /// Traces the requests sent to `inner` with whatever `tracing` holds when they are sent
    /// (the mesh's settings, which may be set after its channels are made).
    pub(crate) fn with_shared(inner: S, tracing: Arc<OnceLock<Tracing>>) -> Self {
        Self {
            inner,
            tracing,
            pinned: request_trace,
        }
    }

    /// Finds the caller's trace with `pinned` (a channel's: in its route decision, else a
    /// [`RequestTrace`] extension).
    pub(crate) fn with_pinned(mut self, pinned: Pinned) -> Self {
        self.pinned = pinned;
        self
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

impl<S, B, RB> Service<Request<B>> for ClientTrace<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ClientTraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let tracing = self.tracing.get().unwrap_or(&DEFAULT);
        let (parent, request_id) = match (self.pinned)(req.extensions()) {
            Some(trace) => (
                Some(trace.context().clone()),
                Some(trace.request_id().clone()),
            ),
            None => match scope::with_current(|t| (t.context().clone(), t.request_id().clone())) {
                Some((context, request_id)) => (Some(context), Some(request_id)),
                None => (TraceContext::extract(req.headers()), None),
            },
        };
        let attempt = match &parent {
            Some(parent) => parent.child(),
            None => TraceContext::extract_or_root(req.headers()),
        };
        let (span, attempt) = if tracing.records_spans() {
            let mut attributes = export::request_attributes(&req);
            if let Some(count) = req
                .headers()
                .get(crate::names::X_ENVOY_ATTEMPT_COUNT)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
            {
                attributes.push(KeyValue::new("mesh.attempt", count));
            }
            tracing.start_span(
                SpanKind::Client,
                req.uri().path(),
                parent.as_ref(),
                attempt,
                attributes,
            )
        } else {
            (None, attempt)
        };
        attempt.inject(tracing.propagation(), req.headers_mut());
        match request_id {
            Some(request_id) => request_id.insert_if_absent(req.headers_mut()),
            None if RequestId::from_headers(req.headers()).is_none() => {
                RequestId::generate().insert_if_absent(req.headers_mut());
            }
            None => {}
        }
        SpanFuture::new(self.inner.call(req), span)
    }
}

// === impl ClientTraceLayer ===

impl ClientTraceLayer {
    /// Traces with `tracing`.
    pub fn new(tracing: Tracing) -> Self {
        Self {
            tracing: Arc::new(OnceLock::from(tracing)),
        }
    }
}

impl<S> Layer<S> for ClientTraceLayer {
    type Service = ClientTrace<S>;

    fn layer(&self, inner: S) -> ClientTrace<S> {
        ClientTrace::with_shared(inner, self.tracing.clone())
    }
}

/// The caller's trace to pin to a request before its attempts are made, so that every attempt
/// shares the trace and `x-request-id` (a call with no caller trace starts one here); `None`
/// when the request carries its own [`RequestTrace`]. The channel pins it in the request's route
/// decision.
///
/// A call that starts a new trace is its root: with a tracer, that root is recorded as the
/// call's own client span (returned, to be ended when the call's response head arrives), and
/// every attempt is its child, as gRPC's call and attempt spans are (gRFC A72). Without it the
/// attempts would name as their parent a span id that no process ever exports.
pub(crate) fn pin_caller_trace<B>(
    req: &Request<B>,
    tracing: &Tracing,
) -> (Option<RequestTrace>, Option<Span>) {
    if req.extensions().get::<RequestTrace>().is_some() {
        return (None, None);
    }
    let mut call_span = None;
    let trace = match scope::current() {
        Some(current) => match RequestId::from_headers(req.headers()) {
            // The application's own id for this call wins over the handled request's.
            Some(own) => RequestTrace::new(current.context().clone(), own),
            None => current,
        },
        None => {
            let from_headers = RequestTrace::from_headers(req.headers());
            if tracing.records_spans() && TraceContext::extract(req.headers()).is_none() {
                let (span, context) = tracing.start_span(
                    SpanKind::Client,
                    req.uri().path(),
                    None,
                    from_headers.context().clone(),
                    export::request_attributes(req),
                );
                call_span = span;
                RequestTrace::new(context, from_headers.request_id().clone())
            } else {
                from_headers
            }
        }
    };
    (Some(trace), call_span)
}
