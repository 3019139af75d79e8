//! The trace of the request being handled, held in a tokio task-local so calls made while
//! handling it continue its trace without the handler passing anything along.
//!
//! [`ServerTraceLayer`](super::ServerTraceLayer) runs each handler inside [`scope`]; every
//! channel's per-attempt trace layer reads [`current`]. A task-local covers the handler's own
//! future, not tasks it spawns: carry it into one with `trace::scope(trace::current()?, fut)`,
//! or put the [`RequestTrace`] in the outgoing request's extensions.

use std::future::Future;

use http::HeaderMap;
use tokio::task::futures::TaskLocalFuture;

use super::{RequestId, TraceContext};

tokio::task_local! {
    static CURRENT: RequestTrace;
}

/// The trace a request belongs to: its context (outgoing calls are children of its span) and
/// its `x-request-id`.
///
/// The server layer puts one in each request's extensions; a client reads one from an outgoing
/// request's extensions before the task-local one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestTrace {
    context: TraceContext,
    request_id: RequestId,
}

// === impl RequestTrace ===

impl RequestTrace {
    /// A request's trace from its parts.
    pub fn new(context: TraceContext, request_id: RequestId) -> Self {
        Self {
            context,
            request_id,
        }
    }

    /// The trace the headers carry (any format) and their `x-request-id`; a new root trace and
    /// a new id for what is missing or malformed.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self {
            context: TraceContext::extract_or_root(headers),
            request_id: RequestId::from_headers_or_generate(headers),
        }
    }

    /// The context whose span outgoing calls are children of.
    pub fn context(&self) -> &TraceContext {
        &self.context
    }

    /// The `x-request-id`.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }
}

/// The trace of the request this task is handling, when it runs inside [`scope`].
pub fn current() -> Option<RequestTrace> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Reads the current trace without cloning it.
pub(crate) fn with_current<R>(f: impl FnOnce(&RequestTrace) -> R) -> Option<R> {
    CURRENT.try_with(f).ok()
}

/// Runs `future` with `trace` as the [`current`] trace.
pub fn scope<F: Future>(trace: RequestTrace, future: F) -> TaskLocalFuture<RequestTrace, F> {
    CURRENT.scope(trace, future)
}
