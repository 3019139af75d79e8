//! The route layer's response future.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;
use mesh_core::route::HeaderMutations;
use pin_project_lite::pin_project;

use crate::body::{BoxError, ResponseBody};

pin_project! {
    /// Either the inner service's response (with the route's response-header changes applied)
    /// or an answer the route layer made itself.
    #[derive(Debug)]
    pub struct RouteFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Inner { #[pin] future: F, response_headers: [HeaderMutations; 2] },
        Ready { response: Option<Response<ResponseBody>> },
    }
}

impl<F> RouteFuture<F> {
    pub(crate) fn inner(future: F, response_headers: [HeaderMutations; 2]) -> Self {
        Self {
            kind: Kind::Inner {
                future,
                response_headers,
            },
        }
    }

    pub(crate) fn ready(response: Response<ResponseBody>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }
}

impl<F> Future for RouteFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, BoxError>>,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner {
                future,
                response_headers,
            } => {
                let mut response = std::task::ready!(future.poll(cx))?;
                for m in response_headers.iter().filter(|m| !m.is_empty()) {
                    m.apply(response.headers_mut());
                }
                Poll::Ready(Ok(response))
            }
            KindProj::Ready { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => Poll::Ready(Err("route future polled after completion".into())),
            },
        }
    }
}
