//! The server stack's response body: the handler's or one the mesh answered with, observed for
//! metrics. (The request body is metered without changing its type:
//! [`MeteredRequestBody`](crate::server::MeteredRequestBody).)

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::{
    body::{BoxError, ResponseBody},
    metrics::{ServerRecorder, recorder},
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
