//! The timeout layer's response future.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderMap, Response, StatusCode};
use mesh_core::GrpcCode;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::{
    body::{BoxError, Expiry, ResponseBody},
    synthesize::{Failure, ResponseFlags, grpc_status_trailers},
};

pin_project! {
    /// The inner response, or a timeout answer when the bound expires first.
    #[derive(Debug)]
    pub(crate) struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        // Boxed: it is handed over to the response body, whose deadline it stays.
        sleep: Option<Pin<Box<Sleep>>>,
        bound: Duration,
        is_grpc: bool,
    }
}

impl<F> TimeoutFuture<F> {
    pub(crate) fn unbounded(inner: F) -> Self {
        Self {
            inner,
            sleep: None,
            bound: Duration::ZERO,
            is_grpc: false,
        }
    }

    pub(crate) fn bounded(inner: F, bound: Duration, is_grpc: bool) -> Self {
        Self {
            inner,
            sleep: Some(Box::pin(tokio::time::sleep(bound))),
            bound,
            is_grpc,
        }
    }
}

impl<F> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, BoxError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            // The rest of the bound covers the body: a response whose headers came in time
            // can still stall.
            let Some(sleep) = this.sleep.take() else {
                return Poll::Ready(out);
            };
            let expiry = if *this.is_grpc {
                Expiry::Trailers {
                    bound: *this.bound,
                    trailers: deadline_exceeded,
                }
            } else {
                Expiry::Reset(*this.bound)
            };
            return Poll::Ready(
                out.map(|response| response.map(|body| body.with_deadline(sleep, expiry))),
            );
        }
        match this.sleep.as_mut() {
            Some(sleep) => {
                std::task::ready!(sleep.as_mut().poll(cx));
                Poll::Ready(Ok(Failure::new(
                    GrpcCode::DeadlineExceeded,
                    StatusCode::GATEWAY_TIMEOUT,
                    ResponseFlags::UpstreamRequestTimeout,
                    timed_out(*this.bound),
                )
                .into_response(*this.is_grpc)))
            }
            None => Poll::Pending,
        }
    }
}

/// The trailers that end a gRPC response past its deadline.
fn deadline_exceeded(bound: Duration) -> HeaderMap {
    grpc_status_trailers(GrpcCode::DeadlineExceeded, &timed_out(bound))
}

fn timed_out(bound: Duration) -> String {
    format!("request timed out after {bound:?}")
}
