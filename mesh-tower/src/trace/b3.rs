//! Zipkin B3 propagation: the multi-header form (`x-b3-traceid`, `x-b3-spanid`,
//! `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags`) and the single `b3` header
//! (`{traceid}-{spanid}-{sampling}-{parentspanid}`, or only a sampling decision: `b3: 0`).
//!
//! Trace ids are 16 or 32 lower-hex digits (64 or 128 bits); span ids 16. The sampling state is
//! `1` (accept), `0` (deny), `d` (debug; `x-b3-flags: 1` in the multi form) or absent (defer
//! the decision). `true`/`false` are accepted in `x-b3-sampled` as old tracers send them.
//! Headers carrying only a sampling decision start a new trace with that decision.

use http::{HeaderMap, HeaderName};
use opentelemetry::trace::{SpanId, TraceId};

use super::{Sampling, TraceContext, hex};

/// The `b3` single header.
pub const B3: HeaderName = HeaderName::from_static("b3");
/// The `x-b3-traceid` header.
pub const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
/// The `x-b3-spanid` header.
pub const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
/// The `x-b3-parentspanid` header.
pub const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
/// The `x-b3-sampled` header.
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
/// The `x-b3-flags` header (`1`: debug).
pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// The longest `b3` value: a 128-bit trace id, span id, sampling state and parent span id.
pub(crate) const SINGLE_MAX_LEN: usize = 32 + 1 + 16 + 1 + 1 + 1 + 16;

/// What B3 headers say.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A whole context.
    Context(TraceContext),
    /// Only a sampling decision: a new trace starts with it.
    Sampling(Sampling),
    /// No B3 headers, or malformed ones.
    Nothing,
}

/// Decodes the `b3` single header.
pub(crate) fn decode_single(value: &[u8]) -> Decoded {
    let value = value.trim_ascii();
    if let Some(sampling) = sampling_state(value) {
        return Decoded::Sampling(sampling);
    }
    let mut parts = value.split(|&b| b == b'-');
    let (Some(trace_id), Some(span_id)) = (
        parts.next().and_then(hex::trace_id),
        parts.next().and_then(hex::span_id),
    ) else {
        return Decoded::Nothing;
    };
    let sampling = match parts.next() {
        None => Sampling::Deferred,
        Some(state) => match sampling_state(state) {
            Some(sampling) => sampling,
            None => return Decoded::Nothing,
        },
    };
    let Some(parent_span_id) = optional_span_id(parts.next()) else {
        return Decoded::Nothing;
    };
    if parts.next().is_some() {
        return Decoded::Nothing;
    }
    Decoded::Context(context(trace_id, span_id, parent_span_id, sampling))
}

/// Decodes the multi-header form.
pub(crate) fn decode_multi(headers: &HeaderMap) -> Decoded {
    let sampling = if headers
        .get(X_B3_FLAGS)
        .is_some_and(|f| f.as_bytes().trim_ascii() == b"1")
    {
        Sampling::Debug
    } else {
        match headers.get(X_B3_SAMPLED).map(|s| s.as_bytes().trim_ascii()) {
            Some(b"1" | b"true") => Sampling::Sampled,
            Some(b"0" | b"false") => Sampling::NotSampled,
            _ => Sampling::Deferred,
        }
    };
    let (trace_id, span_id) = match (headers.get(X_B3_TRACEID), headers.get(X_B3_SPANID)) {
        (Some(trace), Some(span)) => (
            hex::trace_id(trace.as_bytes().trim_ascii()),
            hex::span_id(span.as_bytes().trim_ascii()),
        ),
        (None, None) if sampling != Sampling::Deferred => return Decoded::Sampling(sampling),
        _ => return Decoded::Nothing,
    };
    let (Some(trace_id), Some(span_id)) = (trace_id, span_id) else {
        return Decoded::Nothing;
    };
    let parent = headers.get(X_B3_PARENTSPANID);
    let Some(parent_span_id) = optional_span_id(parent.map(|p| p.as_bytes().trim_ascii())) else {
        return Decoded::Nothing;
    };
    Decoded::Context(context(trace_id, span_id, parent_span_id, sampling))
}

/// A B3 context (B3 has no `tracestate`).
fn context(
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    sampling: Sampling,
) -> TraceContext {
    TraceContext::from_parts(trace_id, span_id, parent, sampling, None)
}

/// An optional parent span id: `Some(None)` when absent, `None` when malformed.
fn optional_span_id(hex: Option<&[u8]>) -> Option<Option<SpanId>> {
    match hex {
        None => Some(None),
        Some(hex) => hex::span_id(hex).map(Some),
    }
}

fn sampling_state(state: &[u8]) -> Option<Sampling> {
    match state {
        b"1" => Some(Sampling::Sampled),
        b"0" => Some(Sampling::NotSampled),
        b"d" => Some(Sampling::Debug),
        _ => None,
    }
}

/// The single-header sampling character, when the decision is made.
pub(crate) fn sampling_char(sampling: Sampling) -> Option<u8> {
    match sampling {
        Sampling::Sampled => Some(b'1'),
        Sampling::NotSampled => Some(b'0'),
        Sampling::Debug => Some(b'd'),
        Sampling::Deferred => None,
    }
}
