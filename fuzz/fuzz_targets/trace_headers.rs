//! Arbitrary bytes as trace headers (W3C, B3 multi and single, x-request-id): decoding never
//! panics, and whatever context results re-encodes into headers that decode to the same ids.

#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mesh_tower::trace::{Propagation, RequestId, TraceContext};

const NAMES: [&str; 9] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-request-id",
];

fuzz_target!(|data: &[u8]| {
    // One header value per line, in the order of NAMES.
    let mut headers = HeaderMap::new();
    for (name, value) in NAMES.iter().zip(data.split(|&b| b == b'\n')) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(*name, value);
        }
    }
    let _ = TraceContext::extract(&headers);
    let _ = RequestId::from_headers_or_generate(&headers);
    let context = TraceContext::extract_or_root(&headers);
    for propagation in [Propagation::W3C, Propagation::B3_MULTI, Propagation::B3_SINGLE] {
        let mut out = HeaderMap::new();
        context.inject(propagation, &mut out);
        let back = TraceContext::extract(&out).expect("injected headers decode");
        assert_eq!(back.trace_id(), context.trace_id());
        assert_eq!(back.span_id(), context.span_id());
    }
});
