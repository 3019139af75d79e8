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
//! - **The head comes back for a retry.** In the mesh's channel the first attempt sends the
//!   request's own head, and the balancer hands it back with any answer that may be retried
//!   (module `head`); a call that is not retried copies no head. Other stacks, per-try
//!   timeouts and hedging copy the head for each attempt.
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
//! **Hedging** (Envoy's `HedgePolicy`): `initial_requests` (plus `additional_request_chance`)
//! attempts start at once, and with `hedge_on_per_try_timeout` an attempt whose per-try timeout
//! fires keeps running while another starts; the first answer that is not retriable wins and
//! the others are cancelled. Concurrent attempts need the whole request body in hand, so they
//! start only once it is fully known (an empty or fully buffered body — for a unary call, by the
//! time a per-try timeout fires); otherwise the slow attempt is cancelled and retried as usual.

mod future;
pub(crate) mod head;
pub(crate) mod replay;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use mesh_core::{EndpointAddress, GrpcCode, Outcome, RetryPolicy};
use tower::Service;

use self::head::SentHead;
pub(crate) use self::{future::RetryFuture, replay::ReplayBody};
use crate::{
    balance::{TriedEndpoints, UpstreamAddress},
    body::{BoxError, RequestBody, ResponseBody},
    decision::RouteDecision,
    names::X_ENVOY_ATTEMPT_COUNT,
    rng,
    synthesize::{Failure, ResponseFlags},
};

/// The most request-body bytes kept for replay; larger bodies are not retried.
pub(crate) const REPLAY_BUFFER_BYTES: usize = 64 * 1024;

/// Retries requests by their route's policy; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Retry<S> {
    inner: S,
    /// Whether the balancer below hands the head of a retriable answer back ([`head`]), so
    /// that no copy is made up front.
    hand_back_heads: bool,
}

// === impl Retry ===

impl<S> Retry<S> {
    /// Retries the requests sent to `inner`.
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            hand_back_heads: false,
        }
    }

    /// Retries the requests sent to `inner`, which passes them to the mesh's balancer
    /// untouched but for headers it writes again on every attempt; the balancer hands back the
    /// head a retry needs ([`head`]).
    pub(crate) fn handing_back_heads(inner: S) -> Self {
        Self {
            inner,
            hand_back_heads: true,
        }
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
        let Some((policy, target)) = req.extensions().get::<RouteDecision>().and_then(|d| {
            let policy = d.forward.retry.clone()?;
            (policy.max_retries > 0 || policy.per_try_timeout.is_some()).then(|| {
                let target = Target {
                    cluster: d.cluster.clone(),
                    is_grpc: d.is_grpc,
                };
                (policy, target)
            })
        }) else {
            return RetryFuture::passthrough(self.inner.call(req));
        };
        let hand_back = self.hand_back_heads
            && policy.per_try_timeout.is_none()
            && policy.hedge.is_none()
            && !policy.retriable_status_codes.contains(&200);
        // The service made ready by `poll_ready` takes the first attempt; a fresh clone waits.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        RetryFuture::retrying(Box::pin(attempts(ready, policy, target, req, hand_back)))
    }
}

/// An attempt started without a head to send: a state `admit_retry` keeps the loop out of.
const NO_HEAD: &str = "retry: no request head to send the attempt with";

/// The `x-envoy-attempt-count` value: a static string for the counts seen in practice (no
/// allocation per attempt), formatted beyond them.
fn attempt_count(n: u32) -> HeaderValue {
    const COUNTS: [&str; 9] = ["1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match n.checked_sub(1).and_then(|i| COUNTS.get(i as usize)) {
        Some(count) => HeaderValue::from_static(count),
        None => HeaderValue::from(n),
    }
}

/// Whether `outcome` would have been retried had attempts remained: Envoy's `URX`.
fn retries_exhausted(policy: &RetryPolicy, started: u32, outcome: Outcome) -> bool {
    policy.max_retries > 0
        && started > policy.max_retries
        && policy
            .retry_on
            .should_retry(outcome, &policy.retriable_status_codes)
}

/// Marks `response` with `flag` unless the mesh already explained it (an overflow, a connect
/// failure) — that first reason is the one worth reporting.
fn flag_if_unflagged(response: &mut Response<ResponseBody>, flag: ResponseFlags) {
    if response.extensions().get::<ResponseFlags>().is_none() {
        response.extensions_mut().insert(flag);
    }
}

/// The attempts of one request.
///
async fn attempts<S>(
    inner: S,
    policy: Arc<RetryPolicy>,
    target: Target,
    req: Request<RequestBody>,
    hand_back: bool,
) -> Result<Response<ResponseBody>, BoxError>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let (parts, body) = req.into_parts();
    let mut a = Attempts {
        inner,
        policy: policy.clone(),
        target,
        parts: Some(parts),
        hand_back,
        body: ReplayBody::new(body, REPLAY_BUFFER_BYTES),
        started: 0,
        tried: Vec::new(),
        retry_slots: Vec::new(),
    };
    let hedge = policy.hedge;
    let initial = match hedge {
        Some(h) if a.body_complete() => h.initial_attempts(rng::draw()),
        _ => 1,
    };
    let mut outstanding = Outstanding::default();
    for _ in 0..initial {
        outstanding.push(a.start().await?);
    }
    let mut timer = PerTryTimer::new(policy.per_try_timeout);
    loop {
        match next_event(&mut outstanding, &mut timer).await {
            Event::Done(result) => {
                let mut response = result?;
                a.take_head_back(&mut response);
                a.release_finished(outstanding.len());
                let outcome = classify(&response);
                let rate_limited = outcome.is_some() && envoy_rate_limited(&response);
                let retriable = outcome.is_some_and(|o| policy.should_retry(a.started, o))
                    || (rate_limited && policy.should_retry_envoy_rate_limit(a.started));
                if !retriable {
                    if outcome.is_some_and(|o| retries_exhausted(&policy, a.started, o)) {
                        flag_if_unflagged(&mut response, ResponseFlags::UpstreamRetryLimitExceeded);
                    }
                    return Ok(response);
                }
                a.note_tried(&response);
                if !outstanding.is_empty() {
                    // A hedged attempt is still running and may yet succeed.
                    continue;
                }
                if !a.admit_retry() {
                    return Ok(response);
                }
                drop(response);
                let backoff = policy.backoff.delay(a.started, rng::draw());
                tracing::debug!(attempts = a.started, reason = ?outcome, ?backoff, "retrying");
                tokio::time::sleep(backoff).await;
                outstanding.push(a.start().await?);
                timer.restart();
            }
            Event::PerTryTimeout => {
                let hedging =
                    hedge.is_some_and(|h| h.hedge_on_per_try_timeout) && a.body_complete();
                if hedging {
                    // Race a new attempt against the slow one instead of cancelling it.
                    if a.admit_retry() {
                        outstanding.push(a.start().await?);
                        timer.restart();
                    } else {
                        timer.stop();
                    }
                    continue;
                }
                outstanding.clear();
                a.release_finished(0);
                if policy.should_retry(a.started, Outcome::Timeout) && a.admit_retry() {
                    let backoff = policy.backoff.delay(a.started, rng::draw());
                    tracing::debug!(
                        attempts = a.started,
                        reason = "per-try timeout",
                        ?backoff,
                        "retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    outstanding.push(a.start().await?);
                    timer.restart();
                } else {
                    return Ok(per_try_timeout_answer(
                        policy.per_try_timeout,
                        a.started,
                        a.target.is_grpc,
                    ));
                }
            }
        }
    }
}

/// What the attempts need of the route decision (which itself travels in the request's
/// extensions, copied into every attempt).
struct Target {
    cluster: crate::cluster::ClusterEntry,
    is_grpc: bool,
}

/// The state of one request's attempts.
struct Attempts<S> {
    inner: S,
    policy: Arc<RetryPolicy>,
    target: Target,
    /// The head each attempt is made of: copied for each attempt, or (with `hand_back`) sent
    /// itself and handed back by the balancer with an answer that may be retried.
    parts: Option<http::request::Parts>,
    hand_back: bool,
    /// The handle each attempt's body is cloned from; never sent itself.
    body: ReplayBody,
    started: u32,
    tried: Vec<EndpointAddress>,
    /// The cluster's retry slots held by the retries in flight.
    retry_slots: Vec<crate::cluster::Slot>,
}

type AttemptFuture = BoxFuture<'static, Result<Response<ResponseBody>, BoxError>>;

impl<S> Attempts<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>,
    S::Future: Send + 'static,
{
    /// Sends the next attempt.
    async fn start(&mut self) -> Result<AttemptFuture, BoxError> {
        let body = self
            .body
            .try_clone()
            .ok_or("request body exceeded the replay buffer and cannot be sent again")?;
        let body = body.boxed_unsync();
        let mut req = if self.hand_back {
            let parts = self.parts.take().ok_or(NO_HEAD)?;
            let mut req = Request::from_parts(parts, body);
            if let Some(decision) = req.extensions_mut().get_mut::<RouteDecision>() {
                decision.hand_back = Some(self.body.source());
            }
            req
        } else {
            let parts = self.parts.as_ref().ok_or(NO_HEAD)?;
            let mut req = Request::new(body);
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = parts.uri.clone();
            *req.version_mut() = parts.version;
            *req.headers_mut() = parts.headers.clone();
            *req.extensions_mut() = parts.extensions.clone();
            req
        };
        self.started = self.started.saturating_add(1);
        req.headers_mut()
            .insert(X_ENVOY_ATTEMPT_COUNT, attempt_count(self.started));
        if !self.tried.is_empty() {
            req.extensions_mut()
                .insert(TriedEndpoints(self.tried.clone()));
        }
        if self.started > 1 {
            std::future::poll_fn(|cx| self.inner.poll_ready(cx)).await?;
        }
        // Boxed to a concrete future: holding the generic `S::Future` across an await keeps
        // rustc from proving this future `Send` (a known higher-ranked inference limit).
        Ok(Box::pin(self.inner.call(req)))
    }

    /// Whether another attempt may start: retries remain, the body can be replayed, and the
    /// cluster's retry budget (or `max_retries`) admits it — whose slot is then held.
    fn admit_retry(&mut self) -> bool {
        if self.started > self.policy.max_retries || !self.body.is_replayable() {
            return false;
        }
        if self.parts.is_none() {
            tracing::debug!("retry not possible: the attempt's head did not come back");
            return false;
        }
        let cluster = &self.target.cluster;
        match cluster.state.try_admit_retry(&cluster.policy.breaker) {
            Some(slot) => {
                self.retry_slots.push(slot);
                true
            }
            None => {
                tracing::debug!(cluster = %cluster.policy.name, "retry refused: retry budget or max_retries spent");
                false
            }
        }
    }

    /// Frees the retry slots of attempts no longer in flight.
    fn release_finished(&mut self, outstanding: usize) {
        self.retry_slots.truncate(outstanding);
    }

    /// Whether the whole request body is known, so concurrent (hedged) attempts can each
    /// replay it without waiting on one another.
    fn body_complete(&self) -> bool {
        self.body
            .try_clone()
            .is_some_and(|clone| clone.size_hint().exact().is_some())
    }

    /// Takes the head the balancer handed back with `response` (see [`head`]), so that the
    /// caller never sees it.
    fn take_head_back(&mut self, response: &mut Response<ResponseBody>) {
        if self.hand_back
            && let Some(head) = response.extensions_mut().remove::<SentHead>()
        {
            self.parts = Some(head.into_parts());
        }
    }

    fn note_tried(&mut self, response: &Response<ResponseBody>) {
        if let Some(addr) = response.extensions().get::<UpstreamAddress>() {
            self.tried.push(addr.0.clone());
        }
    }
}

/// The attempts in flight, in the order of a `Vec` (`swap_remove` as a `Vec`'s): the first
/// kept inline, for most calls make one attempt and a `Vec` would cost an allocation for it.
#[derive(Default)]
struct Outstanding {
    first: Option<AttemptFuture>,
    rest: Vec<AttemptFuture>,
}

impl Outstanding {
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn push(&mut self, attempt: AttemptFuture) {
        if self.first.is_none() {
            self.first = Some(attempt);
        } else {
            self.rest.push(attempt);
        }
    }

    fn clear(&mut self) {
        self.first = None;
        self.rest.clear();
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut AttemptFuture> {
        match i.checked_sub(1) {
            None => self.first.as_mut(),
            Some(i) => self.rest.get_mut(i),
        }
    }

    /// Removes the `i`th attempt, moving the last into its place.
    fn swap_remove(&mut self, i: usize) -> Option<AttemptFuture> {
        match i.checked_sub(1) {
            Some(i) if i < self.rest.len() => Some(self.rest.swap_remove(i)),
            Some(_) => None,
            None => {
                let last = self.rest.pop();
                match last {
                    Some(last) => self.first.replace(last),
                    None => self.first.take(),
                }
            }
        }
    }
}

/// The per-try timeout of the latest attempt.
struct PerTryTimer {
    bound: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl PerTryTimer {
    fn new(bound: Option<Duration>) -> Self {
        let mut t = Self { bound, sleep: None };
        t.restart();
        t
    }

    fn restart(&mut self) {
        self.sleep = self.bound.map(|b| Box::pin(tokio::time::sleep(b)));
    }

    fn stop(&mut self) {
        self.sleep = None;
    }
}

// A transient value on the stack: boxing the response would cost an allocation per attempt.
#[allow(clippy::large_enum_variant)]
enum Event {
    Done(Result<Response<ResponseBody>, BoxError>),
    PerTryTimeout,
}

/// The first attempt to finish (removed from `outstanding`), or the per-try timer.
async fn next_event(outstanding: &mut Outstanding, timer: &mut PerTryTimer) -> Event {
    std::future::poll_fn(|cx| {
        for i in 0..outstanding.len() {
            if let Some(Poll::Ready(result)) = outstanding.get_mut(i).map(|f| f.as_mut().poll(cx)) {
                drop(outstanding.swap_remove(i));
                return Poll::Ready(Event::Done(result));
            }
        }
        if let Some(sleep) = timer.sleep.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            timer.stop();
            return Poll::Ready(Event::PerTryTimeout);
        }
        Poll::Pending
    })
    .await
}

/// Whether an upstream's response says an Envoy in front of it rate limited the request
/// (`x-envoy-ratelimited`): what `envoy-ratelimited` retries.
fn envoy_rate_limited(response: &Response<ResponseBody>) -> bool {
    response
        .headers()
        .contains_key(crate::names::X_ENVOY_RATELIMITED)
}

/// The outcome of an attempt, or `None` for an answer the mesh made that is never retried.
fn classify(response: &Response<ResponseBody>) -> Option<Outcome> {
    match response.extensions().get::<ResponseFlags>() {
        Some(ResponseFlags::UpstreamConnectionFailure) => Some(Outcome::ConnectFailure),
        Some(ResponseFlags::UpstreamReset) => Some(Outcome::Reset),
        Some(_) => None,
        None => Some(Outcome::Response {
            http_status: response.status().as_u16(),
            grpc_status: crate::names::grpc_status(response.headers()),
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
