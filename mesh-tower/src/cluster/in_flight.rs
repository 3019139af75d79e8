//! A response in flight, holding its cluster's breaker slot and its endpoint's load count until
//! it ends, then judging its outcome for outlier detection.

use std::sync::Arc;

use mesh_core::{EndpointAddress, GrpcCode, Outcome};

use super::{ClusterState, Slot};
use crate::endpoint::ActiveRequest;

/// A response in flight: holds its breaker slot and its endpoint's load count until the body
/// ends, and judges the outcome for outlier detection then (see [`crate::balance`]).
///
/// The outcome is judged exactly once, at the first of:
/// - the head, when it says everything (a trailers-only gRPC status, or no body);
/// - the trailers, where a gRPC status is final — tonic stops polling a unary body once it has
///   them, so waiting for the end of the body would never judge a gRPC success;
/// - the end of the body, or its error (a reset mid-stream: [`Outcome::Reset`]);
/// - the drop of the body, with what is known then: the HTTP status and any `grpc-status` of
///   the head. A caller that abandons a response after a good head has not seen the upstream
///   fail, so it is not counted as a failure; judging it at all keeps the consecutive-failure
///   counts honest (Envoy judges every stream when it completes or is reset).
#[derive(Debug)]
pub(crate) struct InFlight {
    _request: Slot,
    _endpoint: ActiveRequest,
    judge: Option<Judge>,
}

/// What is known of a response's outcome until its end.
#[derive(Debug)]
struct Judge {
    state: Arc<ClusterState>,
    host: EndpointAddress,
    http_status: u16,
    grpc_status: Option<GrpcCode>,
}

impl InFlight {
    pub(crate) fn new(
        request: Slot,
        endpoint: ActiveRequest,
        state: Arc<ClusterState>,
        host: EndpointAddress,
    ) -> Self {
        Self {
            _request: request,
            _endpoint: endpoint,
            judge: Some(Judge {
                state,
                host,
                http_status: 0,
                grpc_status: None,
            }),
        }
    }

    /// Judges now when the head says everything (trailers-only gRPC, or no body to wait for).
    pub(crate) fn start(&mut self, head: &http::response::Parts, body_ended: bool) {
        let Some(judge) = self.judge.as_mut() else {
            return;
        };
        judge.http_status = head.status.as_u16();
        judge.grpc_status = crate::names::grpc_status(&head.headers);
        if judge.grpc_status.is_some() || body_ended {
            self.finish();
        }
    }

    /// The trailers end the response: judges it with their `grpc-status`, if any.
    pub(crate) fn trailers(&mut self, trailers: &http::HeaderMap) {
        if let Some(judge) = self.judge.as_mut()
            && let Some(status) = crate::names::grpc_status(trailers)
        {
            judge.grpc_status = Some(status);
        }
        self.finish();
    }

    /// Judges the response by what is known of it (a no-op once judged).
    pub(crate) fn finish(&mut self) {
        if let Some(j) = self.judge.as_ref() {
            let outcome = Outcome::Response {
                http_status: j.http_status,
                grpc_status: j.grpc_status,
            };
            self.fail(outcome);
        }
    }

    /// Judges the response as `outcome` (a no-op once judged).
    pub(crate) fn fail(&mut self, outcome: Outcome) {
        if let Some(j) = self.judge.take() {
            j.state.outliers.record(j.host, outcome);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.finish();
    }
}
