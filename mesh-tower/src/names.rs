//! Header names the stacks read or write on every request, made once, and the one reader of
//! `grpc-status` they share.
//!
//! A name given as `&str` is parsed at each lookup and allocated at each insertion (custom
//! names are not interned); a constant `HeaderName` is neither.

use http::{HeaderMap, HeaderName};
use mesh_core::GrpcCode;

/// `grpc-status`.
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub(crate) const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-timeout`.
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// `x-envoy-attempt-count`.
pub(crate) const X_ENVOY_ATTEMPT_COUNT: HeaderName =
    HeaderName::from_static("x-envoy-attempt-count");
/// Set by an Envoy that rate limited the request: what `envoy-ratelimited` retries.
pub(crate) const X_ENVOY_RATELIMITED: HeaderName = HeaderName::from_static("x-envoy-ratelimited");

/// The `grpc-status` of response headers or trailers, when present and valid.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<GrpcCode> {
    headers
        .get(GRPC_STATUS)
        .and_then(|v| GrpcCode::from_header_bytes(v.as_bytes()))
}
