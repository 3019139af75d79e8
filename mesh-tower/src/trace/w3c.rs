//! W3C Trace Context: `traceparent` and `tracestate`.
//!
//! `traceparent` is `{version:2}-{trace-id:32}-{parent-id:16}-{flags:2}`, lower-hex. Version
//! `ff` is invalid; version `00` has exactly these 55 bytes; a later version may append fields
//! after a `-`, which are ignored (the spec's forward-compatibility rule). Only the sampled flag
//! is kept: the others are reserved and must be propagated as zero.
//!
//! `tracestate` is vendor data this mesh does not interpret: it is passed on unchanged when it
//! looks like a list of at most 32 `key=value` members within 512 bytes, and dropped otherwise,
//! as the spec allows.

use http::HeaderValue;
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};

use super::hex;

/// The `traceparent` header.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// The `tracestate` header.
pub const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// The length of a version-00 `traceparent`.
pub(crate) const TRACEPARENT_LEN: usize = 55;

const TRACESTATE_MAX_LEN: usize = 512;
const TRACESTATE_MAX_MEMBERS: usize = 32;

/// Decodes a `traceparent` value; `None` when it is malformed in any way.
pub(crate) fn decode_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    let value = value.trim_ascii();
    if value.len() < TRACEPARENT_LEN {
        return None;
    }
    let (head, rest) = value.split_at(TRACEPARENT_LEN);
    let [version] = hex::decode::<1>(&head[0..2])?;
    let forward_compatible = match version {
        0xff => false,
        0 => rest.is_empty(),
        _ => rest.first().is_none_or(|&b| b == b'-'),
    };
    if !forward_compatible || head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
        return None;
    }
    let trace_id = TraceId::from_bytes(hex::decode::<16>(&head[3..35])?);
    let span_id = hex::span_id(&head[36..52])?;
    let [flags] = hex::decode::<1>(&head[53..55])?;
    if trace_id == TraceId::INVALID {
        return None;
    }
    Some((
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
    ))
}

/// Writes a version-00 `traceparent`.
pub(crate) fn encode_traceparent(
    trace_id: TraceId,
    span_id: SpanId,
    flags: TraceFlags,
    out: &mut [u8; TRACEPARENT_LEN],
) {
    let (version, rest) = out.split_at_mut(3);
    version.copy_from_slice(b"00-");
    let (trace, rest) = rest.split_at_mut(32);
    hex::encode(&trace_id.to_bytes(), trace);
    let (dash, rest) = rest.split_at_mut(1);
    dash[0] = b'-';
    let (span, rest) = rest.split_at_mut(16);
    hex::encode(&span_id.to_bytes(), span);
    let (dash, flag_digits) = rest.split_at_mut(1);
    dash[0] = b'-';
    hex::encode(&[flags.to_u8()], flag_digits);
}

/// A `tracestate` worth passing on: within the spec's size limits and shaped like a list of
/// `key=value` members (empty members are allowed and ignored, as the spec says).
pub(crate) fn valid_tracestate(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > TRACESTATE_MAX_LEN {
        return false;
    }
    let mut members = 0;
    for member in bytes.split(|&b| b == b',') {
        let member = member.trim_ascii();
        if member.is_empty() {
            continue;
        }
        members += 1;
        let Some(eq) = member.iter().position(|&b| b == b'=') else {
            return false;
        };
        if eq == 0 || members > TRACESTATE_MAX_MEMBERS || !member.is_ascii() {
            return false;
        }
    }
    members > 0
}
