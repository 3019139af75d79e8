//! The request and response bodies that flow through the client stack.
//!
//! Connections are shared by every channel of the process, so the request body is type-erased
//! once, at the channel's entry ([`RequestBody`]). Responses are either the upstream's body or a
//! body the mesh synthesized (a fault abort, a timeout, a rejection): [`ResponseBody`].

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Full, combinators::UnsyncBoxBody};
use pin_project_lite::pin_project;

/// The error type of bodies and services in the stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A type-erased request body.
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

pin_project! {
    /// A response body: streamed from the upstream, or synthesized by the mesh.
    #[derive(Debug)]
    pub struct ResponseBody {
        #[pin]
        kind: Kind,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind {
        // The upstream's body; holds the request's breaker slot until it ends.
        Upstream { #[pin] body: hyper::body::Incoming, in_flight: Option<InFlight> },
        // A body the mesh produced (possibly empty: a gRPC trailers-only response).
        Synthesized { #[pin] body: Full<Bytes> },
    }
}

/// Keeps a request counted as in flight (for the circuit breaker) until the body is dropped.
#[derive(Debug)]
pub struct InFlight {
    _guard: crate::mesh::RequestGuard,
}

// === impl ResponseBody ===

impl ResponseBody {
    pub(crate) fn upstream(body: hyper::body::Incoming, guard: crate::mesh::RequestGuard) -> Self {
        Self {
            kind: Kind::Upstream {
                body,
                in_flight: Some(InFlight { _guard: guard }),
            },
        }
    }

    /// An empty body: the headers are the whole response (gRPC trailers-only).
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// A body with `bytes`.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Synthesized {
                body: Full::new(bytes.into()),
            },
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Upstream { body, in_flight } => {
                let frame = std::task::ready!(body.poll_frame(cx));
                if frame.is_none() {
                    // The response is complete: free the breaker slot now, not at drop.
                    in_flight.take();
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            KindProj::Synthesized { body } => body.poll_frame(cx).map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Synthesized { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Synthesized { body } => body.size_hint(),
        }
    }
}
