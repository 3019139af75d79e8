//! The server stack's bodies: the response either from the handler or answered by the mesh,
//! observed for metrics; and the request body, metered without changing its type.

use std::{
    pin::Pin,
    sync::{Arc, atomic::AtomicU64},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::{
    body::{BoxError, ResponseBody},
    metrics::{CountingBody, ServerRecorder, recorder},
};

pin_project! {
    /// A response body of the server stack: the handler's, or one the mesh answered with
    /// (denial, fault, rate limit). Metrics are recorded when it ends (or is dropped), with the
    /// `grpc-status` of its trailers.
    #[derive(Debug)]
    pub struct ServerBody<B> {
        #[pin]
        kind: Kind<B>,
        recorder: Option<ServerRecorder>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Handler { #[pin] body: B },
        Mesh { #[pin] body: ResponseBody },
    }
}

/// A request body type the server stack can meter (count the bytes of) while keeping its type:
/// tonic's and axum's bodies, which both erase an inner body.
pub trait MeteredRequestBody: Body<Data = Bytes> + Sized + Send + 'static {
    /// This body, counting the bytes of its data frames into `count`.
    fn metered(self, count: Arc<AtomicU64>) -> Self;
}

// === impl ServerBody ===

impl<B> ServerBody<B> {
    pub(crate) fn handler(body: B, recorder: Option<ServerRecorder>) -> Self {
        Self {
            kind: Kind::Handler { body },
            recorder,
        }
    }

    pub(crate) fn mesh(body: ResponseBody, recorder: Option<ServerRecorder>) -> Self {
        Self {
            kind: Kind::Mesh { body },
            recorder,
        }
    }
}

impl<B> Body for ServerBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = match this.kind.project() {
            KindProj::Handler { body } => {
                std::task::ready!(body.poll_frame(cx)).map(|f| f.map_err(Into::into))
            }
            KindProj::Mesh { body } => std::task::ready!(body.poll_frame(cx)),
        };
        recorder::observe(this.recorder, &frame);
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Handler { body } => body.is_end_stream(),
            Kind::Mesh { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Handler { body } => body.size_hint(),
            Kind::Mesh { body } => body.size_hint(),
        }
    }
}

// === impl MeteredRequestBody ===

impl MeteredRequestBody for tonic::body::Body {
    fn metered(self, count: Arc<AtomicU64>) -> Self {
        tonic::body::Body::new(CountingBody::new(self, count))
    }
}

impl MeteredRequestBody for axum::body::Body {
    fn metered(self, count: Arc<AtomicU64>) -> Self {
        axum::body::Body::new(CountingBody::new(self, count))
    }
}
