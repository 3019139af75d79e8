//! The fuzz targets' bodies, as plain functions: `cargo fuzz run <target>` drives them with
//! libFuzzer (`fuzz_targets/`), and `cargo test` here replays every committed corpus input
//! through them (`tests/replay.rs`), so CI checks the corpora without a fuzzing toolchain.
//!
//! Each function panics only on a real finding: a crash, or a broken property.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::{config::core::v3::Node, service::discovery::v3::DiscoveryResponse};
use http::{HeaderMap, HeaderValue};
use mesh_core::{EscapedSlashesAction, PathNormalization, PathNormalizer};
use mesh_tower::trace::{Propagation, RequestId, TraceContext};
use mesh_xds::client::state::AdsState;
use prost::Message;

mod authz;

pub use authz::authz;

/// A target's body: one input, a panic on a finding.
pub type Target = fn(&[u8]);

/// The targets, by name: what `tests/replay.rs` replays `seeds/<name>/*` through.
pub const TARGETS: [(&str, Target); 5] = [
    ("authz", authz),
    ("istio_yaml", istio_yaml),
    ("path_normalize", path_normalize),
    ("trace_headers", trace_headers),
    ("xds_response", xds_response),
];

/// The Istio YAML loader: no input may panic.
pub fn istio_yaml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mesh_core::istio::load_str("fuzz.yaml", text);
    }
}

/// Arbitrary bytes as a request path, under every normalization mode and escaped-slashes
/// action: normalizing never panics, a normalized path is rooted, has no dot segment, no
/// backslash, no `%00` and no escape of an unreserved character, and normalizing it again
/// changes nothing.
pub fn path_normalize(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    for mode in MODES {
        for action in ACTIONS {
            let normalizer = PathNormalizer::new(mode).with_escaped_slashes(action);
            let Ok(once) = normalizer.normalize(path) else {
                continue;
            };
            let twice = normalizer.normalize(&once);
            assert_eq!(twice.as_deref(), Ok(&*once), "not idempotent: {path:?}");
            assert!(!once.contains("%00"), "{path:?} -> {once:?}");
            if mode == PathNormalization::None || once == "*" {
                continue;
            }
            assert!(once.starts_with('/'), "{path:?} -> {once:?}");
            assert!(!once.contains('\\'), "{path:?} -> {once:?}");
            for segment in once.split('/') {
                assert!(segment != "." && segment != "..", "{path:?} -> {once:?}");
            }
            if mode != PathNormalization::Base {
                assert!(!once.contains("//"), "{path:?} -> {once:?}");
            }
            let bytes = once.as_bytes();
            for (i, _) in once.match_indices('%') {
                let byte = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                let Some(byte) = byte else {
                    panic!("broken escape kept: {path:?} -> {once:?}");
                };
                let unreserved = byte.is_ascii_alphanumeric() || b"-._~".contains(&byte);
                assert!(!unreserved, "unreserved escape kept: {path:?} -> {once:?}");
            }
        }
    }
}

const MODES: [PathNormalization; 4] = [
    PathNormalization::None,
    PathNormalization::Base,
    PathNormalization::MergeSlashes,
    PathNormalization::DecodeAndMergeSlashes,
];

const ACTIONS: [EscapedSlashesAction; 3] = [
    EscapedSlashesAction::KeepUnchanged,
    EscapedSlashesAction::RejectRequest,
    EscapedSlashesAction::UnescapeAndForward,
];


/// Arbitrary bytes as trace headers (W3C, B3 multi and single, x-request-id), one header value
/// per line in the order of [`NAMES`]: decoding never panics, and whatever context results
/// re-encodes into headers that decode to the same ids.
pub fn trace_headers(data: &[u8]) {
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
}

/// The trace headers [`trace_headers`] reads, in the order of the input's lines.
pub const NAMES: [&str; 9] = [
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


/// Arbitrary bytes as an ADS DiscoveryResponse, fed to the xDS client's state machine (which
/// decodes every resource into the mesh-core model): no input panics.
pub fn xds_response(data: &[u8]) {
    let Ok(response) = DiscoveryResponse::decode(data) else {
        return;
    };
    let node = Node::default();
    let mut state = AdsState::new();
    state.watch(
        "reviews.default.svc.cluster.local:9080",
        "reviews.default.svc.cluster.local:9080",
    );
    state.on_connected();
    let now = Instant::now();
    while state.poll_request(now, &node).is_some() {}
    state.on_response(&response, SystemTime::now());
    while state.poll_request(now, &node).is_some() {}
    state.handle_timeout(now + Duration::from_secs(30));
}
