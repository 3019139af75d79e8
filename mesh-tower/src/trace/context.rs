//! The trace context a request carries, read from and written to its headers.

use std::ops::{BitOr, Range};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

use super::{
    b3::{self, Decoded},
    hex, random_span_id, random_trace_id,
    w3c::{self, TRACEPARENT_LEN},
};

/// Where a request sits in a trace: its trace, its span, that span's parent and the sampling
/// decision, plus the W3C `tracestate` to pass on.
///
/// Cloning is cheap: the ids are plain integers and the `tracestate` value shares its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    sampling: Sampling,
    trace_state: Option<HeaderValue>,
}

/// A sampling decision, as B3 can express it (W3C has only the first two).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sampling {
    /// Record this trace (W3C flag `01`, B3 `1`).
    Sampled,
    /// Do not record this trace (W3C flag `00`, B3 `0`).
    NotSampled,
    /// No decision yet; the next hop decides (B3 with no sampling state; W3C `00`).
    Deferred,
    /// Record, and force through any sampler (B3 `x-b3-flags: 1` / `d`; W3C `01`).
    Debug,
}

/// The header formats a client writes. Combine them with `|`.
///
/// Default is [`Propagation::W3C`] `|` [`Propagation::B3_SINGLE`]: `traceparent` for
/// OpenTelemetry and gRPC, and the single `b3` header, which every B3 reader takes (Envoy's
/// Zipkin tracer, OpenTelemetry's B3 propagator, Brave). The multi-header form says the same
/// in four headers, and every header whose value changes per request costs an HPACK literal
/// and a dynamic-table insertion on both ends of each hop; choose
/// [`Propagation::B3_MULTI`] for peers that read only `x-b3-*`.
///
/// The `b3` header beside `traceparent` costs about 5,400 instructions and 2 allocations per
/// call, both ends together (out of about 198,000 for a call through the mesh; measured with
/// `mesh-bench instr` against plain tonic sending the same headers, `benches/notes.md`). It
/// stays in the default because Istio's Envoy sidecars with the Zipkin tracer read only B3: in
/// a mesh where proxyless workloads and sidecars call each other, traces stay joined. Where
/// every peer reads W3C, [`Tracing::with_propagation`](super::Tracing::with_propagation)`(`
/// [`Propagation::W3C`]`)` saves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Propagation(u8);

// === impl TraceContext ===

impl TraceContext {
    /// A context from its parts; `tracestate` is kept only when it is well formed.
    pub fn from_parts(
        trace_id: TraceId,
        span_id: SpanId,
        parent_span_id: Option<SpanId>,
        sampling: Sampling,
        trace_state: Option<HeaderValue>,
    ) -> Self {
        Self {
            trace_id,
            span_id,
            parent_span_id,
            sampling,
            trace_state: trace_state.filter(w3c::valid_tracestate),
        }
    }

    /// The first span of a new trace, with random ids.
    pub fn new_root(sampling: Sampling) -> Self {
        Self::from_parts(random_trace_id(), random_span_id(), None, sampling, None)
    }

    /// A new span of the same trace whose parent is this one.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: random_span_id(),
            parent_span_id: Some(self.span_id),
            sampling: self.sampling,
            trace_state: self.trace_state.clone(),
        }
    }

    /// The same context with other ids: a span recorded by a tracer takes the ids the tracer
    /// gave it (the trace id changes only for a root span).
    pub fn with_ids(mut self, trace_id: TraceId, span_id: SpanId) -> Self {
        self.trace_id = trace_id;
        self.span_id = span_id;
        self
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This span's id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The parent span's id, when known (B3 carries it; W3C does not).
    pub fn parent_span_id(&self) -> Option<SpanId> {
        self.parent_span_id
    }

    /// The sampling decision.
    pub fn sampling(&self) -> Sampling {
        self.sampling
    }

    /// The W3C `tracestate` to pass on.
    pub fn trace_state(&self) -> Option<&HeaderValue> {
        self.trace_state.as_ref()
    }

    /// This context as OpenTelemetry's [`SpanContext`]. Parsing the `tracestate` allocates; the
    /// hot path never calls this unless spans are recorded.
    pub fn span_context(&self, is_remote: bool) -> SpanContext {
        let trace_state = self
            .trace_state
            .as_ref()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<TraceState>().ok())
            .unwrap_or_default();
        SpanContext::new(
            self.trace_id,
            self.span_id,
            self.sampling.trace_flags(),
            is_remote,
            trace_state,
        )
    }

    /// The context the headers carry: W3C `traceparent` first, then `b3`, then the B3
    /// multi-header form. Malformed headers count as absent.
    pub fn extract(headers: &HeaderMap) -> Option<Self> {
        match Self::decode(headers) {
            Decoded::Context(context) => Some(context),
            Decoded::Sampling(_) | Decoded::Nothing => None,
        }
    }

    /// The context the headers carry, or a new root trace (honouring a sampling decision sent
    /// alone, like `b3: 0`; sampled otherwise).
    pub fn extract_or_root(headers: &HeaderMap) -> Self {
        match Self::decode(headers) {
            Decoded::Context(context) => context,
            Decoded::Sampling(sampling) => Self::new_root(sampling),
            Decoded::Nothing => Self::new_root(Sampling::Sampled),
        }
    }

    fn decode(headers: &HeaderMap) -> Decoded {
        if !has_trace_headers(headers) {
            return Decoded::Nothing;
        }
        if let Some((trace_id, span_id, flags)) = headers
            .get(w3c::TRACEPARENT)
            .and_then(|value| w3c::decode_traceparent(value.as_bytes()))
        {
            let sampling = if flags.is_sampled() {
                Sampling::Sampled
            } else {
                Sampling::NotSampled
            };
            let trace_state = headers.get(w3c::TRACESTATE).cloned();
            return Decoded::Context(Self::from_parts(
                trace_id,
                span_id,
                None,
                sampling,
                trace_state,
            ));
        }
        let single = match headers.get(b3::B3) {
            Some(value) => b3::decode_single(value.as_bytes()),
            None => Decoded::Nothing,
        };
        match single {
            Decoded::Context(context) => Decoded::Context(context),
            Decoded::Sampling(sampling) => match b3::decode_multi(headers) {
                Decoded::Context(context) => Decoded::Context(context),
                _ => Decoded::Sampling(sampling),
            },
            Decoded::Nothing => b3::decode_multi(headers),
        }
    }

    /// Writes this context in the given formats, replacing every trace header already there
    /// (of any format, so no stale span id survives).
    ///
    /// All the ids are written into one buffer and each header value is a slice of it: one
    /// buffer for all the headers, no intermediate strings.
    pub fn inject(&self, propagation: Propagation, headers: &mut HeaderMap) {
        remove_trace_headers(headers);
        if propagation == Propagation::NONE {
            return;
        }
        let mut traceparent = [0u8; TRACEPARENT_LEN];
        w3c::encode_traceparent(
            self.trace_id,
            self.span_id,
            self.sampling.trace_flags(),
            &mut traceparent,
        );
        let mut buf = BytesMut::with_capacity(TRACEPARENT_LEN + 16 + b3::SINGLE_MAX_LEN);
        buf.extend_from_slice(&traceparent);
        let parent_at = buf.len();
        let parent = self.parent_span_id.map(|parent| {
            let mut digits = [0u8; 16];
            hex::encode_span_id(parent, &mut digits);
            digits
        });
        if let Some(digits) = &parent {
            buf.extend_from_slice(digits);
        }
        // B3 keeps a 64-bit trace id in its short form.
        let trace = if self.trace_id.to_bytes()[..8] == [0; 8] {
            19..35
        } else {
            3..35
        };
        let span = 36..52;
        let single_at = buf.len();
        if propagation.contains(Propagation::B3_SINGLE) {
            buf.extend_from_slice(&traceparent[trace.clone()]);
            buf.extend_from_slice(b"-");
            buf.extend_from_slice(&traceparent[span.clone()]);
            if let Some(state) = b3::sampling_char(self.sampling) {
                buf.extend_from_slice(&[b'-', state]);
                if let Some(digits) = &parent {
                    buf.extend_from_slice(b"-");
                    buf.extend_from_slice(digits);
                }
            }
        }
        let buf = buf.freeze();

        if propagation.contains(Propagation::W3C) {
            insert(headers, w3c::TRACEPARENT, &buf, 0..TRACEPARENT_LEN);
            if let Some(state) = &self.trace_state {
                headers.insert(w3c::TRACESTATE, state.clone());
            }
        }
        if propagation.contains(Propagation::B3_MULTI) {
            insert(headers, b3::X_B3_TRACEID, &buf, trace);
            insert(headers, b3::X_B3_SPANID, &buf, span);
            if parent.is_some() {
                insert(
                    headers,
                    b3::X_B3_PARENTSPANID,
                    &buf,
                    parent_at..parent_at + 16,
                );
            }
            match self.sampling {
                Sampling::Sampled => {
                    headers.insert(b3::X_B3_SAMPLED, HeaderValue::from_static("1"));
                }
                Sampling::NotSampled => {
                    headers.insert(b3::X_B3_SAMPLED, HeaderValue::from_static("0"));
                }
                Sampling::Debug => {
                    headers.insert(b3::X_B3_FLAGS, HeaderValue::from_static("1"));
                }
                Sampling::Deferred => {}
            }
        }
        if propagation.contains(Propagation::B3_SINGLE) {
            insert(headers, b3::B3, &buf, single_at..buf.len());
        }
    }
}

fn insert(headers: &mut HeaderMap, name: http::HeaderName, buf: &Bytes, range: Range<usize>) {
    // Always valid (hex digits and dashes); a failure would only drop the header.
    if let Ok(value) = HeaderValue::from_maybe_shared(buf.slice(range)) {
        headers.insert(name, never_indexed(value));
    }
}

/// Marks a value that is new on every request as HPACK "never indexed".
///
/// An indexed literal would be added to both ends' HPACK tables only to evict entries that do
/// repeat; h2 sends a sensitive value as a literal and leaves the tables alone. (The flag also
/// makes `HeaderValue`'s `Debug` print `Sensitive`; `to_str` is unaffected.)
pub(crate) fn never_indexed(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// The headers of every trace format.
const TRACE_HEADERS: [http::HeaderName; 8] = [
    w3c::TRACEPARENT,
    w3c::TRACESTATE,
    b3::B3,
    b3::X_B3_TRACEID,
    b3::X_B3_SPANID,
    b3::X_B3_PARENTSPANID,
    b3::X_B3_SAMPLED,
    b3::X_B3_FLAGS,
];

/// Removes the headers of every trace format.
///
/// Most requests carry none: one pass over the names present (a byte compare each) finds
/// that, where removing (or looking up) each format's names would hash eight names.
pub(crate) fn remove_trace_headers(headers: &mut HeaderMap) {
    if !has_trace_headers(headers) {
        return;
    }
    for name in TRACE_HEADERS {
        headers.remove(name);
    }
}

/// Whether any trace format's header is present, in one pass over the names present.
fn has_trace_headers(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        // Every trace header starts with `t`, `b` or `x`: most names fail on their first byte.
        matches!(name.as_str().as_bytes().first(), Some(b't' | b'b' | b'x'))
            && TRACE_HEADERS.contains(name)
    })
}

// === impl Sampling ===

impl Sampling {
    /// Whether spans of this trace are recorded.
    pub fn is_sampled(self) -> bool {
        matches!(self, Self::Sampled | Self::Debug)
    }

    /// The W3C / OpenTelemetry flags.
    pub fn trace_flags(self) -> TraceFlags {
        if self.is_sampled() {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::NOT_SAMPLED
        }
    }
}

// === impl Propagation ===

impl Propagation {
    /// No trace headers.
    pub const NONE: Self = Self(0);
    /// W3C `traceparent` and `tracestate`.
    pub const W3C: Self = Self(1);
    /// B3 `x-b3-*` headers.
    pub const B3_MULTI: Self = Self(2);
    /// The B3 single `b3` header.
    pub const B3_SINGLE: Self = Self(4);
    /// W3C + the B3 single header (see [`Propagation`]).
    pub const DEFAULT: Self = Self(Self::W3C.0 | Self::B3_SINGLE.0);

    /// Whether every format of `other` is in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Propagation {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl Default for Propagation {
    fn default() -> Self {
        Self::DEFAULT
    }
}
