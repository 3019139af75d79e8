//! The fault layer: injects the route's delay and abort faults.
//!
//! The decision is `mesh-core`'s [`FaultPolicy::decide`](mesh_core::FaultPolicy::decide), fed
//! with the process-wide count of active faults and two random draws. An abort is answered, not
//! failed: a gRPC caller gets a trailers-only response with the configured gRPC status (or the
//! gRPC mapping of the configured HTTP status), an HTTP caller the HTTP status; the message says
//! the failure was injected and the response carries [`ResponseFlags::FaultInjected`].
//!
//! Header-driven faults (Envoy's `header_abort` / `header_delay`) are read from the request's
//! `x-envoy-fault-*` headers when the route's fault policy enables them, or, for a route without
//! a fault policy, when [`RequestControls::header_faults`](crate::RequestControls::header_faults)
//! enables them mesh-wide; see [`mesh_core::FaultPolicy::for_request`].
//!
//! After a delay the request is sent with a clone of the inner service, made ready first.

mod future;

use std::{
    sync::atomic::Ordering,
    task::{Context, Poll},
};

use http::{Request, Response, StatusCode};
use mesh_core::AbortStatus;
use tower::Service;

pub(crate) use self::future::FaultFuture;
use crate::{
    Mesh,
    body::{BoxError, RequestBody, ResponseBody},
    decision::RouteDecision,
    rng,
    synthesize::{Failure, ResponseFlags},
};

/// Injects faults; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Fault<S> {
    mesh: Mesh,
    inner: S,
}

/// Counts a fault in flight for `max_active_faults` until dropped.
#[derive(Debug)]
pub(crate) struct ActiveFault(Mesh);

// === impl Fault ===

impl<S> Fault<S> {
    /// Injects the faults of each request's route, then calls `inner`.
    pub(crate) fn new(mesh: Mesh, inner: S) -> Self {
        Self { mesh, inner }
    }
}

impl<S> Service<Request<RequestBody>> for Fault<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError> + Clone,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = FaultFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        let mesh_wide = self.mesh.request_controls().header_fault_policy();
        let Some((policy, is_grpc)) = req.extensions().get::<RouteDecision>().and_then(|d| {
            let policy = d.fault.as_ref().or(mesh_wide)?;
            Some((policy.clone(), d.is_grpc))
        }) else {
            return FaultFuture::forward(self.inner.call(req));
        };
        let active = self.mesh.active_faults().load(Ordering::Relaxed);
        let (delay_draw, abort_draw) = (rng::draw(), rng::draw());
        let decision = if policy.reads_headers() {
            policy
                .for_request(req.headers())
                .decide(active, delay_draw, abort_draw)
        } else {
            policy.decide(active, delay_draw, abort_draw)
        };
        if !decision.is_fault() {
            return FaultFuture::forward(self.inner.call(req));
        }
        let guard = ActiveFault::new(&self.mesh);
        let abort = decision
            .abort
            .map(|status| injected_abort(status).into_response(is_grpc));
        match decision.delay {
            Some(delay) => FaultFuture::delay(delay, req, abort, self.inner.clone(), guard),
            None => FaultFuture::abort(abort, guard),
        }
    }
}

/// The failure an injected abort answers with (client and server side alike).
pub(crate) fn injected_abort(status: AbortStatus) -> Failure {
    let http =
        StatusCode::from_u16(status.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = match status {
        AbortStatus::Http(s) => format!("injected fault: abort with HTTP {s}"),
        AbortStatus::Grpc(c) => format!("injected fault: abort with gRPC {c}"),
    };
    Failure::new(
        status.grpc_code(),
        http,
        ResponseFlags::FaultInjected,
        message,
    )
}

// === impl ActiveFault ===

impl ActiveFault {
    pub(crate) fn new(mesh: &Mesh) -> Self {
        mesh.active_faults().fetch_add(1, Ordering::Relaxed);
        Self(mesh.clone())
    }
}

impl Drop for ActiveFault {
    fn drop(&mut self) {
        self.0.active_faults().fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
