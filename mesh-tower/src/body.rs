//! The request and response bodies that flow through the client stack.
//!
//! Connections are shared by every channel of the process, so the request body is type-erased
//! once, at the channel's entry ([`RequestBody`]). Responses are either the upstream's body or a
//! body the mesh synthesized (a fault abort, a timeout, a rejection): [`ResponseBody`].

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use mesh_core::Outcome;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

mod erased;

pub use self::erased::{BoxError, RequestBody};
pub(crate) use crate::cluster::InFlight;
use crate::metrics::{Recorder, recorder};

pin_project! {
    /// A response body: streamed from the upstream, or synthesized by the mesh.
    #[derive(Debug)]
    pub struct ResponseBody {
        #[pin]
        kind: Kind,
        // The call's metrics record, written when the body ends or is dropped.
        recorder: Option<Recorder>,
        // The rest of the request's timeout, which bounds the body too.
        deadline: Option<Deadline>,
    }
}

/// The request's timeout, carried into its response body: Envoy's route timeout (and a gRPC
/// deadline) covers the response to its end, not only its head.
#[derive(Debug)]
pub(crate) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    expiry: Expiry,
}

/// How a body that outlives its deadline ends.
#[derive(Debug)]
pub(crate) enum Expiry {
    /// A gRPC caller already has the headers: the body ends with the trailers `trailers` makes
    /// of `bound` (`DEADLINE_EXCEEDED`), the status gRPC gives a call past its deadline. Made
    /// only when the deadline passes: most bodies end in time, and the trailers cost five
    /// allocations.
    Trailers {
        /// The timeout that passed.
        bound: Duration,
        /// Makes the trailers.
        trailers: fn(Duration) -> HeaderMap,
    },
    /// An HTTP caller: the body fails (the stream is reset, as Envoy resets a response whose
    /// headers it already sent), after the bound it had.
    Reset(Duration),
}

/// The error of an HTTP response body cut off by the route's timeout.
#[derive(Debug, thiserror::Error)]
#[error("response timed out after {bound:?}")]
pub(crate) struct ResponseTimedOut {
    bound: Duration,
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind {
        // The upstream's body; holds the request's breaker slot until it ends.
        Upstream { #[pin] body: hyper::body::Incoming, in_flight: Option<InFlight> },
        // A body the mesh produced (possibly empty: a gRPC trailers-only response).
        Synthesized { #[pin] body: Full<Bytes> },
    }
}

// === impl ResponseBody ===

impl ResponseBody {
    pub(crate) fn upstream(body: hyper::body::Incoming, in_flight: InFlight) -> Self {
        Self {
            kind: Kind::Upstream {
                body,
                in_flight: Some(in_flight),
            },
            recorder: None,
            deadline: None,
        }
    }

    /// An empty body: the headers are the whole response (gRPC trailers-only).
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// A body with `bytes`.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Synthesized {
                body: Full::new(bytes.into()),
            },
            recorder: None,
            deadline: None,
        }
    }

    /// This body, ended by `expiry` if it has not ended when `sleep` (the request's own
    /// timer, handed over: no second timer is made) completes.
    pub(crate) fn with_deadline(mut self, sleep: Pin<Box<Sleep>>, expiry: Expiry) -> Self {
        if !self.is_end_stream() {
            self.deadline = Some(Deadline { sleep, expiry });
        }
        self
    }

    /// This body, writing `recorder` when it ends.
    pub(crate) fn with_recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let frame = match poll_kind(this.kind.as_mut(), cx) {
            Poll::Ready(frame) => {
                if frame
                    .as_ref()
                    .is_none_or(|f| f.as_ref().is_ok_and(Frame::is_trailers))
                {
                    this.deadline.take();
                }
                frame
            }
            Poll::Pending => {
                let Some(deadline) = this.deadline.as_mut() else {
                    return Poll::Pending;
                };
                std::task::ready!(deadline.sleep.as_mut().poll(cx));
                let expiry = this.deadline.take().map(|d| d.expiry);
                expire(this.kind, this.recorder, expiry)
            }
        };
        recorder::observe(this.recorder, &frame);
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Synthesized { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Synthesized { body } => body.size_hint(),
        }
    }
}

/// Ends a body whose deadline passed: judges the upstream's response a timeout (freeing its
/// slots and resetting its stream), flags the record `UT`, and yields the last frame.
fn expire(
    mut kind: Pin<&mut Kind>,
    recorder: &mut Option<Recorder>,
    expiry: Option<Expiry>,
) -> Option<Result<Frame<Bytes>, BoxError>> {
    if let KindProj::Upstream { in_flight, .. } = kind.as_mut().project()
        && let Some(mut flight) = in_flight.take()
    {
        flight.fail(Outcome::Timeout);
    }
    // Dropping the upstream body resets its stream; anything polled later is the end.
    kind.set(Kind::Synthesized {
        body: Full::new(Bytes::new()),
    });
    let frame = match expiry? {
        Expiry::Trailers { bound, trailers } => Ok(Frame::trailers(trailers(bound))),
        Expiry::Reset(bound) => Err(ResponseTimedOut { bound }.into()),
    };
    // Recorded now, as a timeout rather than the reset `observe` would make of the error.
    if let Some(mut record) = recorder.take() {
        if let Some(trailers) = frame.as_ref().ok().and_then(Frame::trailers_ref) {
            record.trailers(trailers);
        }
        record.timed_out();
    }
    Some(frame)
}

fn poll_kind(
    kind: Pin<&mut Kind>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match kind.project() {
        KindProj::Upstream { body, in_flight } => {
            let frame = std::task::ready!(body.poll_frame(cx));
            if let Some(mut flight) = in_flight.take() {
                // At the trailers, the end or an error the response is complete: judge it and
                // free its slots now, not when the caller drops the body.
                match &frame {
                    Some(Ok(f)) => match f.trailers_ref() {
                        Some(trailers) => flight.trailers(trailers),
                        None => *in_flight = Some(flight),
                    },
                    Some(Err(_)) => flight.fail(Outcome::Reset),
                    None => flight.finish(),
                }
            }
            Poll::Ready(frame.map(|f| f.map_err(Into::into)))
        }
        KindProj::Synthesized { body } => body.poll_frame(cx).map_err(|e| match e {}),
    }
}
