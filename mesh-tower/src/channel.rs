//! A channel to one target: the client stack as a single `tower::Service`.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tower::Service;

use crate::{
    Mesh,
    balance::Balance,
    body::{BoxError, ResponseBody},
    fault::Fault,
    retry::Retry,
    route::{Route, RouteFuture},
    timeout::Timeout,
};

type Stack = Route<Fault<Timeout<Retry<Balance>>>>;

/// A channel to one target (`host:port`): route → fault → timeout → retry → breaker and
/// balance → endpoint.
///
/// It is a `tower::Service<http::Request<B>>` for any body `B`, so a tonic-generated client
/// takes it as is (`ReviewsClient::new(mesh.channel("reviews.default.svc.cluster.local:9080"))`)
/// and an axum handler can send plain HTTP requests through it. Cloning is cheap; clones share
/// the mesh's connections. The channel is always ready: admission is decided per request by the
/// cluster's circuit breaker, which answers an overflow at once.
#[derive(Clone, Debug)]
pub struct Channel {
    stack: Stack,
}

// === impl Channel ===

impl Channel {
    pub(crate) fn new(mesh: Mesh, target: Arc<str>) -> Self {
        let stack = Route::new(
            mesh.clone(),
            target,
            Fault::new(mesh, Timeout::new(Retry::new(Balance::new()))),
        );
        Self { stack }
    }
}

impl<B> Service<Request<B>> for Channel
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = RouteFuture<
        <Fault<Timeout<Retry<Balance>>> as Service<Request<crate::body::RequestBody>>>::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.stack.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.stack
            .call(req.map(|body| body.map_err(Into::into).boxed_unsync()))
    }
}
