//! The request head a retry is rebuilt from, handed back by the balancer rather than copied by
//! the retry layer before every call.
//!
//! A retry sends the request's head again, but most calls are never retried: copying the head
//! (header map and extensions) for every call and dropping the copy unused cost about 4,000
//! instructions and 5 allocations per call (`mesh-bench instr`). The balancer keeps a copy of
//! the head anyway, to resend a request an upstream provably did not process. When the retry
//! layer asks for it (its replay buffer in the attempt's route decision, `hand_back`), the
//! balancer hands that copy back, with the request's extensions, in the extensions of every
//! response a retry could follow ([`may_be_retried`]). The retry layer removes it before anything
//! else sees the response and builds the next attempt from it. What the attempt layers added to the head
//! (`x-envoy-attempt-count`, the trace headers, `x-request-id`) is written again on the next
//! attempt exactly as on the first (the count replaced, every trace header replaced by a new span
//! of the same trace, the call's own `x-request-id` kept), so the wire is the same as with a copy
//! made up front.
//!
//! Only the mesh's own channel asks ([`Retry::handing_back_heads`](super::Retry)): an attempt
//! layer of the application's ([`Mesh::channel_with_attempt_layer`](crate::Mesh)) could answer
//! without reaching the balancer, and no head would come back. Per-try timeouts and hedging
//! cancel or race attempts, whose heads never come back either; and a policy that retries a
//! `200` could retry any answer. Those keep the copy made up front.

use http::{Extensions, HeaderMap, Method, Request, Response, StatusCode, Uri, Version};

use crate::{
    body::ResponseBody,
    names::{GRPC_STATUS, X_ENVOY_RATELIMITED},
    synthesize::ResponseFlags,
};

/// In a response's extensions: the head of the request it answers, for the next attempt.
#[derive(Clone, Debug)]
pub(crate) struct SentHead {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
}

impl SentHead {
    /// The head of `parts` with `extensions` (which the balancer keeps apart from the head it
    /// sends, hyper reading none).
    pub(crate) fn new(parts: http::request::Parts, extensions: Extensions) -> Self {
        Self {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            extensions,
        }
    }

    /// The head again, to send.
    pub(crate) fn into_parts(self) -> http::request::Parts {
        let mut parts = Request::new(()).into_parts().0;
        parts.method = self.method;
        parts.uri = self.uri;
        parts.version = self.version;
        parts.headers = self.headers;
        parts.extensions = self.extensions;
        parts
    }
}

/// Whether some retry policy could retry `response`, judged on its head: anything but a plain
/// `200` whose head carries no `grpc-status`, no `x-envoy-ratelimited` and no mesh failure flag.
pub(crate) fn may_be_retried(response: &Response<ResponseBody>) -> bool {
    response.status() != StatusCode::OK
        || response.extensions().get::<ResponseFlags>().is_some()
        || response.headers().contains_key(GRPC_STATUS)
        || response.headers().contains_key(X_ENVOY_RATELIMITED)
}
