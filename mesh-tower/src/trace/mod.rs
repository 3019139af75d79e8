//! Trace propagation: W3C Trace Context, B3 (multi and single header) and `x-request-id`,
//! continued across hops without the application copying headers.
//!
//! - **Server side**, [`ServerTraceLayer`]: reads the incoming context (any format), puts a
//!   [`RequestTrace`] in the request's extensions and runs the handler inside a task-local scope
//!   holding it ([`current`]).
//! - **Client side**, [`ClientTrace`], one per attempt in every [`Channel`](crate::Channel): a
//!   new span id per attempt, child of the caller's span — the request's [`RequestTrace`]
//!   extension, else the task-local one, else trace headers already on the request, else a new
//!   root — written in the configured [`Propagation`] formats (default W3C + B3 single header), with
//!   `x-request-id` carried through or generated.
//! - **Spans** are recorded only when [`Tracing`] has a tracer provider (e.g. one exporting over
//!   OTLP with `opentelemetry-otlp`); without one, nothing is allocated for spans.
//!
//! # Why not opentelemetry's propagators
//! `opentelemetry_sdk::propagation::TraceContextPropagator` and `opentelemetry-propagator-b3`
//! work through `Injector::set(&str, String)` and `Extractor::get -> &str`: every injected
//! header is a `String` built with `format!`/`to_string`, extraction splits into a `Vec`, parses
//! `tracestate` into owned strings, and the result travels in an `opentelemetry::Context`
//! (reference-counted map). That is several allocations per header per attempt. The codecs here
//! decode straight from header bytes into fixed arrays and encode every id into one buffer that
//! all header values slice (one buffer per attempt for all trace headers: its bytes and the
//! shared handle `bytes` makes on the first slice); `tracestate` is passed on as the same bytes.
//! Measured by `cargo bench -p mesh-benches --bench trace_headers`, next to the propagator. They produce and accept OpenTelemetry's own types
//! ([`TraceId`], [`SpanId`],
//! [`TraceFlags`](opentelemetry::trace::TraceFlags),
//! [`SpanContext`](opentelemetry::trace::SpanContext) via [`TraceContext::span_context`]), so
//! they interoperate with an OpenTelemetry SDK and its propagators.
//!
//! Malformed headers (wrong length, non-hex or uppercase digits, all-zero ids, version `ff`, …)
//! are ignored as if absent: a new trace starts. Parsing never panics (property tests and the
//! `trace_headers` fuzz target check that).

mod b3;
mod client;
mod context;
mod export;
mod hex;
mod request_id;
mod scope;
mod server;
mod w3c;

#[cfg(test)]
mod layer_tests;
#[cfg(test)]
mod tests;

use opentelemetry::trace::{SpanId, TraceId};

pub use self::{
    b3::{B3, X_B3_FLAGS, X_B3_PARENTSPANID, X_B3_SAMPLED, X_B3_SPANID, X_B3_TRACEID},
    client::{ClientTrace, ClientTraceFuture, ClientTraceLayer},
    context::{Propagation, Sampling, TraceContext},
    export::{SpanFuture, Tracing},
    request_id::{RequestId, X_REQUEST_ID},
    scope::{RequestTrace, current, scope},
    server::{ServerTrace, ServerTraceFuture, ServerTraceLayer},
    w3c::{TRACEPARENT, TRACESTATE},
};
pub(crate) use self::{client::pin_caller_trace, export::DEFAULT as DEFAULT_TRACING};
use crate::rng;

/// A random, valid (non-zero) trace id.
fn random_trace_id() -> TraceId {
    let high = u128::from(rng::draw()) << 64;
    let low = u128::from(rng::draw().max(1));
    TraceId::from(high | low)
}

/// A random, valid (non-zero) span id.
fn random_span_id() -> SpanId {
    SpanId::from(rng::draw().max(1))
}
