//! The fault layer's response future.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::Service;

use super::ActiveFault;
use crate::body::{BoxError, RequestBody, ResponseBody};

pin_project! {
    /// Forwards, waits out an injected delay, or answers an injected abort.
    pub(crate) struct FaultFuture<S: Service<Request<RequestBody>>> {
        #[pin]
        kind: Kind<S>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S: Service<Request<RequestBody>>> {
        // Forwarded (after any delay).
        Forward { #[pin] future: S::Future },
        // Waiting out a delay; then the abort, if one was also injected, or forward.
        Delay {
            #[pin] sleep: Sleep,
            request: Option<Request<RequestBody>>,
            abort: Option<Response<ResponseBody>>,
            inner: S,
            guard: Option<ActiveFault>,
        },
        // Answering with an abort.
        Abort { response: Option<Response<ResponseBody>>, guard: Option<ActiveFault> },
    }
}

impl<S: Service<Request<RequestBody>>> std::fmt::Debug for FaultFuture<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match &self.kind {
            Kind::Forward { .. } => "FaultFuture::Forward",
            Kind::Delay { .. } => "FaultFuture::Delay",
            Kind::Abort { .. } => "FaultFuture::Abort",
        })
    }
}

impl<S: Service<Request<RequestBody>>> FaultFuture<S> {
    pub(crate) fn forward(future: S::Future) -> Self {
        Self {
            kind: Kind::Forward { future },
        }
    }

    pub(crate) fn delay(
        delay: Duration,
        request: Request<RequestBody>,
        abort: Option<Response<ResponseBody>>,
        inner: S,
        guard: ActiveFault,
    ) -> Self {
        Self {
            kind: Kind::Delay {
                sleep: tokio::time::sleep(delay),
                request: Some(request),
                abort,
                inner,
                guard: Some(guard),
            },
        }
    }

    pub(crate) fn abort(response: Option<Response<ResponseBody>>, guard: ActiveFault) -> Self {
        Self {
            kind: Kind::Abort {
                response,
                guard: Some(guard),
            },
        }
    }
}

impl<S> Future for FaultFuture<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        loop {
            match kind.as_mut().project() {
                KindProj::Forward { future } => return future.poll(cx),
                KindProj::Abort { response, guard } => {
                    guard.take();
                    return Poll::Ready(
                        response
                            .take()
                            .ok_or_else(|| "fault future polled after completion".into()),
                    );
                }
                KindProj::Delay {
                    sleep,
                    request,
                    abort,
                    inner,
                    guard,
                } => {
                    std::task::ready!(sleep.poll(cx));
                    // The delay is over: the fault is no longer active.
                    guard.take();
                    if let Some(response) = abort.take() {
                        return Poll::Ready(Ok(response));
                    }
                    // The clone taken at `call` must be ready before it takes the request.
                    std::task::ready!(inner.poll_ready(cx))?;
                    let Some(request) = request.take() else {
                        return Poll::Ready(Err("fault future polled after completion".into()));
                    };
                    let future = inner.call(request);
                    kind.set(Kind::Forward { future });
                }
            }
        }
    }
}
