//! The retry layer: sends a request again when an attempt fails in a way its route says to
//! retry, within the attempt limit, the cluster's retry budget (or `max_retries` breaker), and
//! the capped replay buffer of the request body.
//!
//! - **One classifier.** An attempt's outcome is judged once: the balancer's response flags
//!   mark connect failures and resets; otherwise the HTTP status and a `grpc-status` in the
//!   response head (gRPC's trailers-only form) decide, through
//!   [`RetryPolicy::should_retry`](mesh_core::RetryPolicy::should_retry). Answers the mesh
//!   made for other reasons (breaker overflow, no endpoint, fault abort) are never retried.
//! - **Never after streaming started.** The decision is made on the response head; once a
//!   response is returned to the caller it is theirs. A gRPC status sent in trailers after
//!   data (a streamed failure) is therefore not retried — as in Envoy.
//! - **Capped replay.** The body is teed into a [`ReplayBody`] of at most 64 KiB while the
//!   first attempt streams it; a larger body is sent once and not retried.
//! - **Another endpoint.** Each retry asks the balancer to avoid the endpoints already tried.
//! - **Per-try timeout.** An attempt that exceeds it is cancelled and counts as a timeout;
//!   when no retry follows, the caller gets `DEADLINE_EXCEEDED` / 504.
//! - Each attempt carries `x-envoy-attempt-count`, as Envoy's does, so servers can tell.
//! - Backoff between attempts is `mesh-core`'s jittered exponential
//!   [`Backoff`](mesh_core::Backoff).
//!
//! Why not `tower::retry`: its `Policy` clones whole requests (no capped, streaming replay) and
//! its budget is a per-service token bucket, while Envoy's budget bounds *concurrent* retries
//! per cluster as a share of active requests, shared by every channel of the process.
//!
//! Hedging is not implemented yet: a route's hedge policy is ignored here (and reported by the
//! loaders as unsupported where it can be configured).

mod future;
mod replay;

use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use mesh_core::{GrpcCode, Outcome, RetryPolicy};
use tower::Service;

pub use self::{
    future::RetryFuture,
    replay::{ReplayBody, ReplayError},
};
use crate::{
    balance::{TriedEndpoints, UpstreamAddress},
    body::{BoxError, RequestBody, ResponseBody},
    decision::RouteDecision,
    rng,
    synthesize::{Failure, ResponseFlags},
};

/// The most request-body bytes kept for replay; larger bodies are not retried.
pub const REPLAY_BUFFER_BYTES: usize = 64 * 1024;

/// Retries requests by their route's policy; see the module docs.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
}

// === impl Retry ===

impl<S> Retry<S> {
    /// Retries the requests sent to `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<Request<RequestBody>> for Retry<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = RetryFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        let Some((policy, decision)) = req.extensions().get::<RouteDecision>().and_then(|d| {
            let policy = d.forward.retry.clone()?;
            (policy.max_retries > 0 || policy.per_try_timeout.is_some())
                .then(|| (policy, d.clone()))
        }) else {
            return RetryFuture::passthrough(self.inner.call(req));
        };
        // The service made ready by `poll_ready` takes the first attempt; a fresh clone waits.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        RetryFuture::retrying(Box::pin(attempts(ready, policy, decision, req)))
    }
}

/// The attempts of one request.
///
fn attempts<S>(
    inner: S,
    policy: Arc<RetryPolicy>,
    decision: RouteDecision,
    req: Request<RequestBody>,
) -> impl Future<Output = Result<Response<ResponseBody>, BoxError>> + Send + 'static
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut inner = inner;
    async move {
        let (parts, body) = req.into_parts();
        let mut body = ReplayBody::new(body, REPLAY_BUFFER_BYTES);
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut attempt: u32 = 1;
        // Holds the cluster's retry slot through the backoff and the retry it admitted.
        let mut _retry_slot = None;
        loop {
            let next_body = body.try_clone();
            let mut req = Request::new(body.boxed_unsync());
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = parts.uri.clone();
            *req.version_mut() = parts.version;
            *req.headers_mut() = parts.headers.clone();
            *req.extensions_mut() = parts.extensions.clone();
            req.headers_mut()
                .insert("x-envoy-attempt-count", HeaderValue::from(attempt));
            if !tried.is_empty() {
                req.extensions_mut().insert(TriedEndpoints(tried.clone()));
            }
            if attempt > 1 {
                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            }
            // Boxed to a concrete future: holding the generic `S::Future` across an await keeps
            // rustc from proving this future `Send` (a known higher-ranked inference limit).
            let call: BoxFuture<'static, Result<Response<ResponseBody>, BoxError>> =
                Box::pin(inner.call(req));
            let (outcome, response) = match policy.per_try_timeout {
                Some(bound) => match tokio::time::timeout(bound, call).await {
                    Ok(result) => {
                        let response = result?;
                        (classify(&response), Some(response))
                    }
                    Err(_) => (Some(Outcome::Timeout), None),
                },
                None => {
                    let response = call.await?;
                    (classify(&response), Some(response))
                }
            };
            let retriable = outcome.is_some_and(|o| policy.should_retry(attempt, o));
            let slot = match (&next_body, retriable) {
                (Some(_), true) => decision
                    .cluster
                    .state
                    .try_admit_retry(&decision.cluster.policy.breaker),
                _ => None,
            };
            let (Some(next), Some(slot)) = (next_body, slot) else {
                return Ok(response.unwrap_or_else(|| {
                    per_try_timeout_answer(policy.per_try_timeout, attempt, decision.is_grpc)
                }));
            };
            if let Some(addr) = response
                .as_ref()
                .and_then(|r| r.extensions().get::<UpstreamAddress>())
            {
                tried.push(addr.0);
            }
            // The failed attempt's response is discarded (its body drops with it).
            drop(response);
            _retry_slot = Some(slot);
            tokio::time::sleep(policy.backoff.delay(attempt, rng::draw())).await;
            attempt = attempt.saturating_add(1);
            body = next;
        }
    }
}

/// The outcome of an attempt, or `None` for an answer the mesh made that is never retried.
fn classify(response: &Response<ResponseBody>) -> Option<Outcome> {
    match response.extensions().get::<ResponseFlags>() {
        Some(ResponseFlags::UpstreamConnectionFailure) => Some(Outcome::ConnectFailure),
        Some(ResponseFlags::UpstreamReset) => Some(Outcome::Reset),
        Some(_) => None,
        None => Some(Outcome::Response {
            http_status: response.status().as_u16(),
            grpc_status: response
                .headers()
                .get("grpc-status")
                .and_then(|v| GrpcCode::from_header_bytes(v.as_bytes())),
        }),
    }
}

fn per_try_timeout_answer(
    bound: Option<Duration>,
    attempts: u32,
    is_grpc: bool,
) -> Response<ResponseBody> {
    Failure::new(
        GrpcCode::DeadlineExceeded,
        StatusCode::GATEWAY_TIMEOUT,
        ResponseFlags::UpstreamRequestTimeout,
        format!(
            "per-try timeout of {:?} expired (attempt {attempts})",
            bound.unwrap_or_default()
        ),
    )
    .into_response(is_grpc)
}

#[cfg(test)]
mod tests;
