//! The client stack's metrics middleware (`reporter="source"`).
//!
//! It sits right after the route layer, where the request's
//! [`RouteDecision`](crate::RouteDecision) names the destination cluster, and sees each call
//! once (retries are inside it), as Istio's source reporter counts one request per call.
//! Requests the route layer answers itself (no route: `NR`, direct responses and redirects:
//! `DR`) never reach it; the route layer records those with the channel's target as the
//! destination, as Envoy's source reporter counts them.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower::Service;

use super::{CountingBody, Recorder};
use crate::{
    Mesh, RouteDecision,
    body::{BoxError, RequestBody, ResponseBody},
};

/// Records Istio's standard metrics for each routed call, after the route layer (see
/// [`crate::metrics`]).
#[derive(Clone, Debug)]
pub(crate) struct ClientMetrics<S> {
    mesh: Mesh,
    inner: S,
}

pin_project! {
    /// Attaches the record to the response body, which writes it when it ends.
    #[derive(Debug)]
    pub(crate) struct ClientMetricsFuture<F> {
        #[pin]
        inner: F,
        recorder: Option<Recorder>,
    }
}

// === impl ClientMetrics ===

impl<S> ClientMetrics<S> {
    /// Records the calls that go through `inner`, when `mesh` has metrics.
    pub(crate) fn new(mesh: Mesh, inner: S) -> Self {
        Self { mesh, inner }
    }
}

impl<S> Service<Request<RequestBody>> for ClientMetrics<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ClientMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        let recorder = req
            .extensions()
            .get::<RouteDecision>()
            .and_then(|decision| {
                Recorder::client(&self.mesh, decision.cluster_name(), decision.is_grpc, &req)
            });
        let req = match &recorder {
            Some(r) => {
                let count = r.request_bytes();
                req.map(|inner| CountingBody::new(inner, count).boxed_unsync())
            }
            None => req,
        };
        ClientMetricsFuture {
            inner: self.inner.call(req),
            recorder,
        }
    }
}

// === impl ClientMetricsFuture ===

impl<F> Future for ClientMetricsFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, BoxError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let Some(mut recorder) = this.recorder.take() else {
            return Poll::Ready(Ok(response));
        };
        recorder.head(&response);
        Poll::Ready(Ok(response.map(|body| body.with_recorder(recorder))))
    }
}
