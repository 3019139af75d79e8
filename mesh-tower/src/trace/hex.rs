//! Lowercase hex into and out of fixed arrays: no `format!`, no allocation.
//!
//! Trace-context and B3 ids are lower-hex on the wire; an uppercase digit is malformed (W3C says
//! so explicitly, B3 says "lower-hex"), so decoding rejects it rather than guessing.

use opentelemetry::trace::{SpanId, TraceId};

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lowercase hex into `out`, which holds exactly two digits per byte.
pub(crate) fn encode(bytes: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), bytes.len() * 2);
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// Decodes exactly `2 * N` lowercase hex digits.
pub(crate) fn decode<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let mut invalid = 0;
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (high, low) = (NIBBLES[usize::from(pair[0])], NIBBLES[usize::from(pair[1])]);
        invalid |= high | low;
        *byte = (high << 4) | (low & 0x0f);
    }
    // One check at the end: every id on every request is decoded here.
    (invalid & INVALID == 0).then_some(out)
}

/// A digit's value, or `INVALID` for anything but `0-9a-f`.
const NIBBLES: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

const INVALID: u8 = 0x10;

/// A 128-bit trace id from 32 hex digits, or a 64-bit one from 16 (B3 allows both; the short
/// form is the low half). All-zero ids are invalid.
pub(crate) fn trace_id(hex: &[u8]) -> Option<TraceId> {
    let id = match hex.len() {
        32 => TraceId::from_bytes(decode::<16>(hex)?),
        16 => TraceId::from(u128::from(u64::from_be_bytes(decode::<8>(hex)?))),
        _ => return None,
    };
    (id != TraceId::INVALID).then_some(id)
}

/// A span id from 16 hex digits; all-zero is invalid.
pub(crate) fn span_id(hex: &[u8]) -> Option<SpanId> {
    let id = SpanId::from_bytes(decode::<8>(hex)?);
    (id != SpanId::INVALID).then_some(id)
}

/// Writes a span id as 16 hex digits.
pub(crate) fn encode_span_id(id: SpanId, out: &mut [u8; 16]) {
    encode(&id.to_bytes(), out);
}
