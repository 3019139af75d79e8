//! The timeout layer: the route's timeout over the whole request (every attempt and backoff
//! included), tightened by the caller's `grpc-timeout`.
//!
//! The bound in force is `min(route timeout, caller's grpc-timeout capped by the route's
//! grpc_timeout_max)`. It is sent upstream as `grpc-timeout` so the server knows its deadline.
//! On expiry the request is answered, not failed: `DEADLINE_EXCEEDED` for a gRPC caller, 504
//! for an HTTP caller, flagged [`ResponseFlags::UpstreamRequestTimeout`](crate::ResponseFlags::UpstreamRequestTimeout).
//!
//! The bound covers the response to its end, as Envoy's route timeout and a gRPC deadline do:
//! its rest is carried into the response body. A body still streaming when it expires is cut
//! off — its upstream stream reset, the attempt judged a timeout for outlier detection, the
//! record flagged `UT` — and ends, for a gRPC caller, with `DEADLINE_EXCEEDED` trailers (the
//! headers are already sent); for an HTTP caller, with an error, which resets its stream as
//! Envoy does. A streaming route that must outlive it sets no timeout (`timeout: 0s`).
//!
//! Why not `tower::timeout`: it fails with an error, while a mesh must answer a gRPC caller
//! with a `DEADLINE_EXCEEDED` status and an HTTP caller with 504, and it cannot read the bound
//! from each request's route and `grpc-timeout`.

mod future;
mod grpc_timeout;

use std::{
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderValue, Request, Response};
use tower::Service;

pub(crate) use self::future::TimeoutFuture;
use crate::{
    body::{BoxError, RequestBody, ResponseBody},
    decision::RouteDecision,
};

/// Bounds each request by its route's timeout; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Timeout<S> {
    inner: S,
    /// The last bound sent as `grpc-timeout`, encoded: most calls are bounded by their route's
    /// timeout alone, the same every time, and a copy of the value costs no allocation.
    last_sent: Option<(Duration, HeaderValue)>,
}

// === impl Timeout ===

impl<S> Timeout<S> {
    /// Bounds the requests sent to `inner`.
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            last_sent: None,
        }
    }

    /// `bound` as a `grpc-timeout` value.
    fn grpc_timeout(&mut self, bound: Duration) -> HeaderValue {
        match &self.last_sent {
            Some((sent, value)) if *sent == bound => value.clone(),
            _ => {
                let value = grpc_timeout::encode(bound);
                self.last_sent = Some((bound, value.clone()));
                value
            }
        }
    }
}

impl<S> Service<Request<RequestBody>> for Timeout<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<RequestBody>) -> Self::Future {
        let (bound, is_grpc) = match req.extensions().get::<RouteDecision>() {
            Some(d) => (effective_timeout(&req, d), d.is_grpc),
            None => (None, false),
        };
        let Some(bound) = bound else {
            return TimeoutFuture::unbounded(self.inner.call(req));
        };
        if is_grpc {
            let value = self.grpc_timeout(bound);
            req.headers_mut().insert(crate::names::GRPC_TIMEOUT, value);
        }
        TimeoutFuture::bounded(self.inner.call(req), bound, is_grpc)
    }
}

/// The deadline the caller sent in `grpc-timeout`, if any.
pub(crate) fn caller_deadline(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(crate::names::GRPC_TIMEOUT)
        .and_then(|v| grpc_timeout::parse(v.as_bytes()))
}

/// The bound in force for `req`, if any.
fn effective_timeout(req: &Request<RequestBody>, decision: &RouteDecision) -> Option<Duration> {
    let route = decision.forward.timeout.filter(|t| !t.is_zero());
    let caller = caller_deadline(req.headers()).map(|t| {
        decision
            .forward
            .grpc_timeout_max
            .filter(|m| !m.is_zero())
            .map_or(t, |max| t.min(max))
    });
    match (route, caller) {
        (Some(r), Some(c)) => Some(r.min(c)),
        (r, c) => r.or(c),
    }
}

#[cfg(test)]
mod tests;
