//! The channel's response future.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::Service;
use tracing::instrument::Instrumented;

use super::Routed;
use crate::{
    body::{BoxError, RequestBody, ResponseBody},
    route::RouteFuture,
    trace::SpanFuture,
};

/// What the layers of a channel make of one call, attempt service `S` at the bottom.
type Inner<S> =
    SpanFuture<Instrumented<RouteFuture<<Routed<S> as Service<Request<RequestBody>>>::Future>>>;

pin_project! {
    /// The response of one call through a [`Channel`](super::Channel): routing, retries and
    /// every attempt run as it is polled.
    ///
    /// A name for the channel's `Service::Future`, as tonic's `channel::ResponseFuture` is: the
    /// layers inside (route, metrics, fault, timeout, retry, trace) are not part of the API.
    pub struct ResponseFuture<S>
    where
        S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>,
        S: Clone,
        S: Send,
        S: 'static,
        S::Future: Send,
    {
        #[pin]
        inner: Inner<S>,
    }
}

// === impl ResponseFuture ===

impl<S> ResponseFuture<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    pub(super) fn new(inner: Inner<S>) -> Self {
        Self { inner }
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<S> fmt::Debug for ResponseFuture<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
