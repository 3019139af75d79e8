//! The balance layer: admits the request into its cluster (circuit breaker), picks an endpoint
//! with the cluster's load-balancing policy, and sends the request on that endpoint's shared
//! HTTP/2 connection.
//!
//! Every outcome the mesh can explain is answered rather than failed, with the response flag
//! that names it: over `max_requests` → `UNAVAILABLE` / 503 (`UO`); no endpoint → `UNAVAILABLE`
//! / 503 (`UH`); connect failure → `UNAVAILABLE` / 503 (`UF`); the stream reset →
//! `UNAVAILABLE` / 503 (`UR`). The breaker slot is held until the response body ends.
//!
//! The response future is boxed: hyper's send future cannot be named. It is the stack's only
//! allocation per request besides the type-erased request body.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use mesh_core::GrpcCode;
use tower::Service;

use crate::{
    body::{BoxError, RequestBody, ResponseBody},
    decision::RouteDecision,
    endpoint::Endpoint,
    rng,
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
        let picked = pick(&decision);
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
        Box::pin(async move {
            let sender = match endpoint.connection().await {
                Ok(sender) => sender,
                Err(error) => {
                    return Ok(Failure::new(
                        GrpcCode::Unavailable,
                        StatusCode::SERVICE_UNAVAILABLE,
                        ResponseFlags::UpstreamConnectionFailure,
                        format!("upstream connect error: {error}"),
                    )
                    .into_response(is_grpc));
                }
            };
            let mut sender = sender;
            match sender.send_request(req).await {
                Ok(response) => Ok(response.map(|body| ResponseBody::upstream(body, guard))),
                Err(error) => Ok(Failure::new(
                    GrpcCode::Unavailable,
                    StatusCode::SERVICE_UNAVAILABLE,
                    ResponseFlags::UpstreamReset,
                    format!("upstream {} reset the request: {error}", endpoint.address()),
                )
                .into_response(is_grpc)),
            }
        })
    }
}

/// The endpoint for this request by the cluster's policy.
fn pick(decision: &RouteDecision) -> Option<Arc<Endpoint>> {
    let cluster = &decision.cluster;
    let index = {
        let mut balancer = cluster.balancer.lock().unwrap_or_else(|p| p.into_inner());
        balancer.pick(None, |_| 0, rng::draw())?
    };
    cluster.connections.get(index)?.clone()
}
