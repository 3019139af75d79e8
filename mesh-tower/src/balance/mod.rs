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
//! The response future is boxed: hyper's send future cannot be named. It is the stack's only
//! allocation per request besides the type-erased request body.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body::Body;
use mesh_core::{
    EndpointAddress, GrpcCode, LbPolicy, Outcome,
    lb::{RequestView, request_hash},
};
use tokio::time::Instant;
use tower::Service;

use crate::{
    body::{BoxError, InFlight, RequestBody, ResponseBody},
    decision::RouteDecision,
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
        let Some(decision) = req.extensions().get::<RouteDecision>().cloned() else {
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
        let request_hash = if decision.forward.hash_policy.is_empty() {
            None
        } else {
            let view = RequestView {
                headers: req.headers(),
                path_and_query: req.uri().path_and_query().map_or("/", |p| p.as_str()),
                source_ip: None,
            };
            request_hash(&decision.forward.hash_policy, &view)
        };
        let avoid = req
            .extensions()
            .get::<TriedEndpoints>()
            .map_or(&[][..], |t| t.0.as_slice());
        let picked = cluster
            .pick(request_hash, avoid)
            .and_then(|i| cluster.connections.get(i).cloned());
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
        let state = cluster.state.clone();
        let max_pending = cluster.policy.breaker.max_pending_requests;
        let cluster_name = cluster.policy.name.clone();
        let ewma_decay = match cluster.policy.lb {
            LbPolicy::PeakEwma { decay } => Some(decay),
            _ => None,
        };
        Box::pin(async move {
            let address = endpoint.address().clone();
            // Waiting for a connection to be made is "pending" (Envoy's max_pending_requests).
            let pending = if endpoint.is_connected() {
                None
            } else {
                match state.try_admit_pending(max_pending) {
                    Some(slot) => Some(slot),
                    None => {
                        let mut r = Failure::new(
                            GrpcCode::Unavailable,
                            StatusCode::SERVICE_UNAVAILABLE,
                            ResponseFlags::UpstreamOverflow,
                            format!("cluster `{cluster_name}`: circuit breaker open, {max_pending} requests already waiting for a connection"),
                        )
                        .into_response(is_grpc);
                        r.extensions_mut().insert(UpstreamAddress(address));
                        return Ok(r);
                    }
                }
            };
            let active = endpoint.start_request();
            let mut sender = match endpoint.connection().await {
                Ok(sender) => {
                    drop(pending);
                    sender
                }
                Err(error) => {
                    state.record_outcome(&address, Outcome::ConnectFailure);
                    let mut r = Failure::new(
                        GrpcCode::Unavailable,
                        StatusCode::SERVICE_UNAVAILABLE,
                        ResponseFlags::UpstreamConnectionFailure,
                        format!("upstream connect error: {error}"),
                    )
                    .into_response(is_grpc);
                    r.extensions_mut().insert(UpstreamAddress(address));
                    return Ok(r);
                }
            };
            let sent = Instant::now();
            match sender.send_request(req).await {
                Ok(response) => {
                    let now = Instant::now();
                    if let Some(decay) = ewma_decay {
                        endpoint.observe_latency(now - sent, decay, now);
                    }
                    let (mut head, body) = response.into_parts();
                    let mut in_flight = InFlight::new(guard, active, state, address.clone());
                    in_flight.start(&head, body.is_end_stream());
                    head.extensions.insert(UpstreamAddress(address));
                    Ok(Response::from_parts(
                        head,
                        ResponseBody::upstream(body, in_flight),
                    ))
                }
                Err(error) => {
                    state.record_outcome(&address, Outcome::Reset);
                    let mut r = Failure::new(
                        GrpcCode::Unavailable,
                        StatusCode::SERVICE_UNAVAILABLE,
                        ResponseFlags::UpstreamReset,
                        format!("upstream {address} reset the request: {error}"),
                    )
                    .into_response(is_grpc);
                    r.extensions_mut().insert(UpstreamAddress(address));
                    Ok(r)
                }
            }
        })
    }
}

/// The endpoints earlier attempts of a request went to; the balancer avoids them when it can.
#[derive(Clone, Debug, Default)]
pub(crate) struct TriedEndpoints(pub(crate) Vec<EndpointAddress>);

/// The endpoint that served (or failed) a response, in its extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamAddress(pub EndpointAddress);
