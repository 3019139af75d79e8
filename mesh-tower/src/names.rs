//! Header names the stacks read or write on every request, made once.
//!
//! A name given as `&str` is parsed at each lookup and allocated at each insertion (custom
//! names are not interned); a constant `HeaderName` is neither.

use http::HeaderName;

/// `grpc-status`.
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub(crate) const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-timeout`.
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// `x-envoy-attempt-count`.
pub(crate) const X_ENVOY_ATTEMPT_COUNT: HeaderName =
    HeaderName::from_static("x-envoy-attempt-count");
