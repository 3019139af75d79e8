//! The balance layer: admits the request into its cluster (circuit breaker), picks an endpoint
//! with the cluster's load-balancing policy, and sends the request on that endpoint's shared
//! HTTP/2 connection.
//!
//! Every outcome the mesh can explain is answered rather than failed, with the response flag
//! that names it: over `max_requests` → `UNAVAILABLE` / 503 (`UO`); no endpoint → `UNAVAILABLE`
//! / 503 (`UH`); connect failure → `UNAVAILABLE` / 503 (`UF`); the stream reset →
//! `UNAVAILABLE` / 503 (`UR`). The breaker slot is held until the response body ends.
//! A request waiting for its endpoint's connection to be made is *pending* and counts against
//! `max_pending_requests`. `max_connections` bounds nothing more here: with one HTTP/2
//! connection per endpoint it is met by construction (Envoy documents it as an HTTP/1.1
//! pool limit too).
//!
//! A request the upstream provably did not process — its stream refused (`REFUSED_STREAM`),
//! above the last stream id of a graceful GOAWAY, or handed back unsent by a connection that is
//! closing — is sent again, on another endpoint when there is one, else on a new connection, up
//! to two times: whatever the route's retry policy and without counting
//! against it (gRPC's transparent retry; Envoy retries refused streams too). The body is kept
//! for that in a replay buffer capped like the retry layer's; a larger body is not resent.
//!
//! Each outcome is classified once and fed to the cluster's outlier detection: a connect
//! failure or reset at once; a response when its status is known — at the head for a
//! trailers-only gRPC response or an empty body, else at the trailers (a `grpc-status` there
//! counts), the end of the body or its reset; a response the caller drops before then is judged
//! by its head (see [`InFlight`]).
//!
//! Why not `tower::balance::p2c` and `tower::limit`: Envoy's balancing needs priorities, panic
//! mode, weights, ring hash and outlier ejection over a cluster shared by every channel, which
//! `mesh_core::lb::Balancer` decides purely; and an Envoy breaker fails fast per cluster, where
//! `ConcurrencyLimit` waits per service.
//!
//! Session pins and generated hash cookies are read before the pick and written on the
//! response in the `affinity` module.
//!
//! The response future is boxed: hyper's send future cannot be named. It is the stack's only
//! allocation per request besides the type-erased request body.

mod affinity;
mod upstream;

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use mesh_core::{EndpointAddress, GrpcCode, LbPolicy, Outcome};
use tokio::time::Instant;
use tower::Service;

use self::affinity::{Affinity, Pin};
pub(crate) use self::upstream::TriedEndpoints;
pub use self::upstream::UpstreamAddress;
use crate::{
    body::{BoxError, RequestBody, ResponseBody},
    cluster::{ClusterEntry, InFlight, Slot},
    decision::RouteDecision,
    endpoint::Endpoint,
    retry::{self, REPLAY_BUFFER_BYTES, ReplayBody, head::SentHead, replay::ReplaySource},
    synthesize::{Failure, ResponseFlags},
};

/// Picks an endpoint and sends; the innermost service of the client stack.
#[derive(Clone, Debug, Default)]
pub struct Balance {
    _private: (),
}

// === impl Balance ===

impl Balance {
    /// The balancer service.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Service<Request<RequestBody>> for Balance {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        // Read in place: the decision stays in the request's extensions (handed back to the
        // retry layer with the head) and is not copied.
        let Some(decision) = req.extensions().get::<RouteDecision>() else {
            let failure = Failure::new(
                GrpcCode::Internal,
                StatusCode::INTERNAL_SERVER_ERROR,
                ResponseFlags::NoRoute,
                "request reached the balancer without a route decision",
            );
            return Box::pin(std::future::ready(Ok(failure.into_response(false))));
        };
        let is_grpc = decision.is_grpc;
        let cluster = &decision.cluster;
        let name = &cluster.policy.name;
        let max = cluster.policy.breaker.max_requests;
        let Some(guard) = cluster.state.try_admit_request(max) else {
            let failure = Failure::new(
                GrpcCode::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlags::UpstreamOverflow,
                format!("cluster `{name}`: circuit breaker open, {max} requests already in flight"),
            );
            return Box::pin(std::future::ready(Ok(failure.into_response(is_grpc))));
        };
        let (affinity, request_hash) = Affinity::read(decision, &req);
        let avoid = req
            .extensions()
            .get::<TriedEndpoints>()
            .map_or(&[][..], |t| t.0.as_slice());
        let index = match affinity.pin(cluster) {
            Pin::Endpoint(i) => Some(i),
            Pin::Balance => cluster.pick(request_hash, avoid),
            Pin::Refused(host) => {
                let failure = Failure::new(
                    GrpcCode::Unavailable,
                    StatusCode::SERVICE_UNAVAILABLE,
                    ResponseFlags::NoHealthyUpstream,
                    format!(
                        "cluster `{name}`: the session's endpoint {host} cannot take the request (strict session)"
                    ),
                );
                return Box::pin(std::future::ready(Ok(failure.into_response(is_grpc))));
            }
        };
        let picked = index.and_then(|i| cluster.connections.get(i).cloned());
        let avoid_owned = avoid.to_vec();
        let Some(endpoint) = picked else {
            let failure = Failure::new(
                GrpcCode::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlags::NoHealthyUpstream,
                if cluster.policy.endpoints.is_empty() {
                    format!("cluster `{name}` has no endpoints")
                } else {
                    format!("cluster `{name}` has no healthy endpoint")
                },
            );
            return Box::pin(std::future::ready(Ok(failure.into_response(is_grpc))));
        };
        let cluster = cluster.clone();
        // The retry layer's replay buffer, when it wants the head back with a retriable answer.
        let replay = decision.hand_back.clone();
        let hand_back = replay.is_some();
        let sending: Self::Future = Box::pin(async move {
            let mut endpoint = endpoint;
            let mut guard = Some(guard);
            let (mut parts, body) = req.into_parts();
            // hyper reads no extensions of a request; the head kept for a resend need not copy
            // them. They are kept apart, for the head handed back to the retry layer.
            let extensions = std::mem::take(&mut parts.extensions);
            // The body is a fresh handle of the retry layer's replay buffer: it is sent as is,
            // and resends draw new handles from the buffer rather than buffering it again.
            let (mut first, mut body) = match replay {
                Some(source) => (Some(body), Resend::Shared(source)),
                None => (None, Resend::new(body)),
            };
            let mut tried = avoid_owned;
            let mut resends = 0;
            let mut response = loop {
                let Some(attempt_body) = first.take().or_else(|| body.next()) else {
                    break internal_error(is_grpc);
                };
                let attempt = Request::from_parts(clone_head(&parts), attempt_body);
                match send(&cluster, &endpoint, &mut guard, attempt, is_grpc).await {
                    Sent::Answer(response) => break response,
                    Sent::NotProcessed(address, refusal)
                        if resends < MAX_TRANSPARENT_RESENDS && body.can_resend() =>
                    {
                        resends += 1;
                        tracing::debug!(%address, %refusal, "resending a request the upstream did not process");
                        tried.push(address);
                        // Another endpoint when there is one, else a new connection to this one.
                        let Some(next) = cluster
                            .pick(request_hash, &tried)
                            .and_then(|i| cluster.connections.get(i).cloned())
                        else {
                            break not_processed_answer(&cluster, &endpoint, refusal, is_grpc);
                        };
                        endpoint = next;
                    }
                    Sent::NotProcessed(_, refusal) => {
                        cluster
                            .state
                            .record_outcome(endpoint.address(), Outcome::RefusedStream);
                        break not_processed_answer(&cluster, &endpoint, refusal, is_grpc);
                    }
                }
            };
            if hand_back && retry::head::may_be_retried(&response) {
                response
                    .extensions_mut()
                    .insert(SentHead::new(parts, extensions));
            }
            Ok(response)
        });
        if affinity.is_inert() {
            return sending;
        }
        Box::pin(async move {
            let mut response = sending.await?;
            affinity.write(&mut response);
            Ok(response)
        })
    }
}

/// Resends of one request the upstream provably did not process (a refused stream, a stream
/// above a GOAWAY's last stream id, a connection that closed before the request was written),
/// made whatever the route's retry policy and not counted by it — gRPC's transparent retry and
/// Envoy's handling of `REFUSED_STREAM`. Bounded: an endpoint refusing everything is answered.
const MAX_TRANSPARENT_RESENDS: u32 = 2;

/// What one send on one endpoint came to.
// A transient value on the stack: boxing the response would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Sent {
    /// The response, or the mesh's answer to a failure that may have been processed.
    Answer(Response<ResponseBody>),
    /// The upstream did not process the request: it can be sent again.
    NotProcessed(EndpointAddress, BoxError),
}

/// Sends `req` on `endpoint`'s connection, connecting first if needed.
async fn send(
    cluster: &ClusterEntry,
    endpoint: &Arc<Endpoint>,
    guard: &mut Option<Slot>,
    req: Request<RequestBody>,
    is_grpc: bool,
) -> Sent {
    let state = &cluster.state;
    let address = endpoint.address().clone();
    let cluster_name = &cluster.policy.name;
    // Waiting for a connection to be made is "pending" (Envoy's max_pending_requests).
    let pending = if endpoint.is_connected() {
        None
    } else {
        let max_pending = cluster.policy.breaker.max_pending_requests;
        match state.try_admit_pending(max_pending) {
            Some(slot) => Some(slot),
            None => {
                let r = Failure::new(
                    GrpcCode::Unavailable,
                    StatusCode::SERVICE_UNAVAILABLE,
                    ResponseFlags::UpstreamOverflow,
                    format!("cluster `{cluster_name}`: circuit breaker open, {max_pending} requests already waiting for a connection"),
                )
                .into_response(is_grpc);
                return Sent::Answer(with_address(r, address));
            }
        }
    };
    let mut active = endpoint.start_request();
    let mut sender = match active.connection().await {
        Ok(sender) => {
            drop(pending);
            sender
        }
        Err(error) => {
            state.record_outcome(&address, Outcome::ConnectFailure);
            let r = Failure::new(
                GrpcCode::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlags::UpstreamConnectionFailure,
                format!("upstream connect error: {error}"),
            )
            .into_response(is_grpc);
            return Sent::Answer(with_address(r, address));
        }
    };
    // The clock is read only for the balancer that uses round trips.
    let sent = matches!(cluster.policy.lb, LbPolicy::PeakEwma { .. }).then(Instant::now);
    match sender.try_send_request(req).await {
        Ok(response) => {
            if let (LbPolicy::PeakEwma { decay }, Some(sent)) = (&cluster.policy.lb, sent) {
                let now = Instant::now();
                endpoint.observe_latency(now - sent, *decay, now);
            }
            let (mut head, body) = response.into_parts();
            let Some(guard) = guard.take() else {
                return Sent::Answer(internal_error(is_grpc));
            };
            let mut in_flight = InFlight::new(guard, active, state.clone(), address.clone());
            in_flight.start(&head, body.is_end_stream());
            head.extensions.insert(UpstreamAddress(address));
            Sent::Answer(Response::from_parts(
                head,
                ResponseBody::upstream(body, in_flight),
            ))
        }
        Err(mut error) => {
            // A request hyper hands back was never written: the connection was closing.
            let unsent = error.take_message().is_some();
            let error = error.into_error();
            if unsent || not_processed(&error) {
                return Sent::NotProcessed(address, error.into());
            }
            state.record_outcome(&address, Outcome::Reset);
            let r = Failure::new(
                GrpcCode::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlags::UpstreamReset,
                format!("upstream {address} reset the request: {error}"),
            )
            .into_response(is_grpc);
            Sent::Answer(with_address(r, address))
        }
    }
}

/// Whether the upstream provably did not process a request that failed with `error`: it
/// refused the stream (`REFUSED_STREAM`), or announced a graceful shutdown (`GOAWAY` with
/// `NO_ERROR`) whose last stream id is below this stream's — h2 gives that error only to such
/// streams and to requests sent after the GOAWAY. A GOAWAY with an error code is not trusted:
/// h2 then reports it on every stream, processed or not.
fn not_processed(error: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            let refused = h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            let drained = h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR);
            return h2.is_remote() && (refused || drained);
        }
        source = e.source();
    }
    false
}

/// The answer when every send was refused: `UNAVAILABLE` / 503, flagged `UR` like a reset.
fn not_processed_answer(
    cluster: &ClusterEntry,
    endpoint: &Endpoint,
    refusal: BoxError,
    is_grpc: bool,
) -> Response<ResponseBody> {
    let address = endpoint.address().clone();
    let r = Failure::new(
        GrpcCode::Unavailable,
        StatusCode::SERVICE_UNAVAILABLE,
        ResponseFlags::UpstreamReset,
        format!(
            "cluster `{}`: upstream {address} did not process the request: {refusal}",
            cluster.policy.name
        ),
    )
    .into_response(is_grpc);
    with_address(r, address)
}

/// A state the loop never reaches (a send after the body or the breaker slot was used up),
/// answered rather than panicked on.
fn internal_error(is_grpc: bool) -> Response<ResponseBody> {
    Failure::new(
        GrpcCode::Internal,
        StatusCode::INTERNAL_SERVER_ERROR,
        ResponseFlags::UpstreamReset,
        "balancer: a resend found its request body or breaker slot already used",
    )
    .into_response(is_grpc)
}

fn with_address(mut r: Response<ResponseBody>, address: EndpointAddress) -> Response<ResponseBody> {
    r.extensions_mut().insert(UpstreamAddress(address));
    r
}

/// A copy of a request head for a resend (extensions are not sent, so not kept).
fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut head = Request::new(()).into_parts().0;
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

/// The request body of the sends: the original when it is empty; else a replay buffer (the
/// retry layer's, capped the same) so a request the upstream did not process can be resent.
enum Resend {
    Empty,
    Replay(ReplayBody),
    /// The retry layer's replay buffer (the request's own body is a fresh handle of it).
    Shared(ReplaySource),
}

impl Resend {
    fn new(body: RequestBody) -> Self {
        if body.is_end_stream() {
            Self::Empty
        } else {
            Self::Replay(ReplayBody::new(body, REPLAY_BUFFER_BYTES))
        }
    }

    /// The body of the next send; `None` once the body cannot be replayed.
    fn next(&mut self) -> Option<RequestBody> {
        match self {
            Self::Empty => Some(RequestBody::new(
                http_body_util::Empty::new().map_err(|e| match e {}),
            )),
            Self::Replay(body) => body.try_clone().map(BodyExt::boxed_unsync),
            Self::Shared(source) => source.body().map(BodyExt::boxed_unsync),
        }
    }

    fn can_resend(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Replay(body) => body.is_replayable(),
            Self::Shared(source) => source.is_replayable(),
        }
    }
}
