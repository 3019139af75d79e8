//! The retry layer's response future.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use http::Response;
use pin_project_lite::pin_project;

use crate::body::{BoxError, ResponseBody};

pin_project! {
    /// The inner future when the route has no retry policy, else the boxed attempt loop.
    pub(crate) struct RetryFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Passthrough { #[pin] future: F },
        Retrying { future: BoxFuture<'static, Result<Response<ResponseBody>, BoxError>> },
    }
}

impl<F> RetryFuture<F> {
    pub(crate) fn passthrough(future: F) -> Self {
        Self {
            kind: Kind::Passthrough { future },
        }
    }

    pub(crate) fn retrying(
        future: BoxFuture<'static, Result<Response<ResponseBody>, BoxError>>,
    ) -> Self {
        Self {
            kind: Kind::Retrying { future },
        }
    }
}

impl<F> std::fmt::Debug for RetryFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetryFuture")
    }
}

impl<F> Future for RetryFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, BoxError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { future } => future.poll(cx),
            KindProj::Retrying { future } => future.as_mut().poll(cx),
        }
    }
}
