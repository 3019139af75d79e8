//! The route layer's response future.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;
use pin_project_lite::pin_project;

use crate::body::{BoxError, ResponseBody};

pin_project! {
    /// Either the inner service's response (with the route's response-header changes applied)
    /// or an answer the route layer made itself.
    #[derive(Debug)]
    pub(crate) struct RouteFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        // The route's and the weighted cluster's response header changes, when there are any.
        Inner { #[pin] future: F, response_headers: Option<super::ResponseHeaders> },
        Ready { response: Option<Response<ResponseBody>> },
        Waiting { pending: Pending<F> },
    }
}

impl<F> RouteFuture<F> {
    pub(crate) fn inner(future: F, response_headers: Option<super::ResponseHeaders>) -> Self {
        Self {
            kind: Kind::Inner {
                future,
                response_headers,
            },
        }
    }

    pub(crate) fn waiting(
        wait: Pin<Box<dyn Future<Output = ()> + Send>>,
        then: Box<dyn FnOnce() -> Self + Send>,
    ) -> Self {
        Self {
            kind: Kind::Waiting {
                pending: Pending {
                    wait,
                    then: Some(then),
                },
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

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.as_mut().project().kind.project() {
            KindProj::Inner {
                future,
                response_headers,
            } => {
                let mut response = std::task::ready!(future.poll(cx))?;
                for m in response_headers.iter().flat_map(|pair| pair.iter()) {
                    m.apply(response.headers_mut());
                }
                Poll::Ready(Ok(response))
            }
            KindProj::Waiting { pending } => {
                std::task::ready!(pending.wait.as_mut().poll(cx));
                let Some(then) = pending.then.take() else {
                    return Poll::Ready(Err("route future polled after completion".into()));
                };
                self.set(then());
                self.poll(cx)
            }
            KindProj::Ready { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => Poll::Ready(Err("route future polled after completion".into())),
            },
        }
    }
}

/// A request waiting for its target's configuration, and what it does once resolved: route and
/// call the inner service.
pub(crate) struct Pending<F> {
    wait: Pin<Box<dyn Future<Output = ()> + Send>>,
    then: Option<Box<dyn FnOnce() -> RouteFuture<F> + Send>>,
}

impl<F> fmt::Debug for Pending<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}
