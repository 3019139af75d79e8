//! The server stack's response future.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use mesh_core::LocalRateLimit;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::Service;

use super::{ServerBody, Shared, rate_limit};
use crate::{body::ResponseBody, fault::ActiveFault, metrics::ServerRecorder};

pin_project! {
    /// Answers at once (denial, fault abort, rate limit), waits out an injected delay, or
    /// forwards to the handler.
    pub struct ServerFuture<S: Service<Request<B>>, B> {
        #[pin]
        state: State<S, B>,
        recorder: Option<ServerRecorder>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<B>>, B> {
        Forward { #[pin] future: S::Future },
        Answer { response: Option<Response<ResponseBody>> },
        Delay {
            #[pin] sleep: Sleep,
            after: Option<AfterDelay<S, B>>,
        },
    }
}

/// What a delayed request needs once its delay is over.
struct AfterDelay<S, B> {
    request: Request<B>,
    abort: Option<Response<ResponseBody>>,
    inner: S,
    guard: ActiveFault,
    shared: Arc<Shared>,
    rate_limit: Option<LocalRateLimit>,
    is_grpc: bool,
}

// === impl ServerFuture ===

impl<S: Service<Request<B>>, B> std::fmt::Debug for ServerFuture<S, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match &self.state {
            State::Forward { .. } => "ServerFuture::Forward",
            State::Answer { .. } => "ServerFuture::Answer",
            State::Delay { .. } => "ServerFuture::Delay",
        })
    }
}

impl<S: Service<Request<B>>, B> ServerFuture<S, B> {
    pub(super) fn forward(future: S::Future, recorder: Option<ServerRecorder>) -> Self {
        Self {
            state: State::Forward { future },
            recorder,
        }
    }

    pub(super) fn answer(
        response: Response<ResponseBody>,
        recorder: Option<ServerRecorder>,
    ) -> Self {
        Self {
            state: State::Answer {
                response: Some(response),
            },
            recorder,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn delay(
        delay: Duration,
        request: Request<B>,
        abort: Option<Response<ResponseBody>>,
        inner: S,
        guard: ActiveFault,
        shared: Arc<Shared>,
        rate_limit: Option<LocalRateLimit>,
        is_grpc: bool,
        recorder: Option<ServerRecorder>,
    ) -> Self {
        Self {
            state: State::Delay {
                sleep: tokio::time::sleep(delay),
                after: Some(AfterDelay {
                    request,
                    abort,
                    inner,
                    guard,
                    shared,
                    rate_limit,
                    is_grpc,
                }),
            },
            recorder,
        }
    }
}

impl<S, B, RB> Future for ServerFuture<S, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Output = Result<Response<ServerBody<RB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Forward { future } => {
                    let response = std::task::ready!(future.poll(cx))?;
                    let mut recorder = this.recorder.take();
                    if let Some(r) = recorder.as_mut() {
                        r.head(&response);
                    }
                    return Poll::Ready(Ok(response.map(|b| ServerBody::handler(b, recorder))));
                }
                StateProj::Answer { response } => {
                    let Some(response) = response.take() else {
                        // Polled after completion: nothing sensible is left to answer with.
                        return Poll::Pending;
                    };
                    let mut recorder = this.recorder.take();
                    if let Some(r) = recorder.as_mut() {
                        r.head(&response);
                    }
                    return Poll::Ready(Ok(response.map(|b| ServerBody::mesh(b, recorder))));
                }
                StateProj::Delay { sleep, after } => {
                    std::task::ready!(sleep.poll(cx));
                    let Some(after) = after.take() else {
                        return Poll::Pending;
                    };
                    let AfterDelay {
                        request,
                        abort,
                        mut inner,
                        guard,
                        shared,
                        rate_limit,
                        is_grpc,
                    } = after;
                    // The delay is over: the fault is no longer active.
                    drop(guard);
                    let next = match abort {
                        Some(response) => State::Answer {
                            response: Some(response),
                        },
                        None => match rate_limit {
                            Some(limit) if !shared.limiter.try_acquire(limit) => State::Answer {
                                response: Some(rate_limit::limited_response(is_grpc)),
                            },
                            _ => State::Forward {
                                future: inner.call(request),
                            },
                        },
                    };
                    this.state.set(next);
                }
            }
        }
    }
}
