//! Authorization: Istio `AuthorizationPolicy` for one incoming request, or the RBAC filters of
//! the port's xDS inbound listener when an xDS client serves it.
//!
//! The decision is `mesh-core`'s pure [`authorize`](mesh_core::authorize) or
//! [`authorize_rbac`](mesh_core::authorize_rbac); this module only
//! gathers its inputs from the request (principal and address from the [`Peer`], the workload's
//! namespace, labels and port) and answers a denial as Envoy's RBAC filter does: HTTP 403
//! `RBAC: access denied`, or a trailers-only `PERMISSION_DENIED` for gRPC callers. Dry-run
//! policies that would have denied are logged here and counted by the metrics recorder.

use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use mesh_core::{AuthzReason, AuthzRequest, GrpcCode, RbacFilter, ServerPolicy};

use super::Workload;
use crate::{Peer, body::ResponseBody, metrics::ServerRecorder, synthesize::Failure};

/// Envoy's RBAC denial message.
const DENIED_MESSAGE: &str = "RBAC: access denied";

/// The outcome for one request.
#[derive(Debug)]
pub(crate) enum Authorized {
    /// Let it through.
    Allowed,
    /// Denied; the deciding policy's name, or `None` when no ALLOW policy matched.
    Denied(Option<Arc<str>>),
}

/// Where a server's authorization rules come from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rules<'a> {
    /// The local `AuthorizationPolicy` resources.
    Local(&'a ServerPolicy),
    /// The RBAC filters of the port's xDS inbound listener.
    Rbac(&'a [RbacFilter]),
}

/// Judges `req` from `peer` against `rules` for `workload`; logs and counts dry-run denials.
pub(crate) fn authorize<B>(
    rules: Rules<'_>,
    workload: &Workload,
    peer: &Peer,
    req: &Request<B>,
    recorder: Option<&ServerRecorder>,
) -> Authorized {
    let nothing_to_check = match rules {
        Rules::Local(policy) => policy.authorization.is_empty(),
        Rules::Rbac(filters) => filters.is_empty(),
    };
    if nothing_to_check {
        return Authorized::Allowed;
    }
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or_default();
    let principals = peer
        .identity
        .as_ref()
        .map_or(&[][..], |identity| &identity.principals);
    let request = AuthzRequest {
        principals,
        trust_domains: &workload.trust_domains,
        source_namespace: None,
        source_ip: peer.address.map(|a| a.ip()),
        destination_port: workload.port,
        host,
        method: req.method().as_str(),
        path: req.uri().path(),
        headers: req.headers(),
    };
    let decision = match rules {
        Rules::Local(policy) => policy.authorize(
            &workload.namespace,
            &workload.labels,
            &workload.root_namespace,
            &request,
        ),
        Rules::Rbac(filters) => mesh_core::authorize_rbac(filters, &request),
    };
    for name in &decision.dry_run_denials {
        tracing::info!(
            policy = %name,
            principal = peer.principal().unwrap_or("-"),
            source_ip = ?request.source_ip,
            method = request.method,
            path = request.path,
            "dry-run authorization policy would have denied the request"
        );
        if let Some(recorder) = recorder {
            recorder.dry_run_denied(name);
        }
    }
    if decision.audit {
        tracing::info!(
            principal = peer.principal().unwrap_or("-"),
            method = request.method,
            path = request.path,
            allowed = decision.allowed,
            "audited request"
        );
    }
    if decision.allowed {
        return Authorized::Allowed;
    }
    let deciding = match decision.reason {
        AuthzReason::Denied(name) | AuthzReason::Allowed(name) => Some(name),
        AuthzReason::NoAllowMatched | AuthzReason::NoAllowPolicies => None,
    };
    tracing::debug!(
        policy = deciding.as_deref().unwrap_or("-"),
        principal = peer.principal().unwrap_or("-"),
        source_ip = ?request.source_ip,
        method = request.method,
        path = request.path,
        "request denied by authorization policy"
    );
    Authorized::Denied(deciding)
}

/// The answer of a port whose xDS inbound listener is not serving (not received yet, removed,
/// or does not exist): gRPC `UNAVAILABLE` / HTTP 503, never the handler. gRFC A36 closes such
/// connections instead; answering each request keeps the server stack independent of the
/// listener, and no request reaches the handler under a policy the control plane did not give.
pub(crate) fn not_serving_response(is_grpc: bool) -> Response<ResponseBody> {
    Failure::unflagged(
        GrpcCode::Unavailable,
        StatusCode::SERVICE_UNAVAILABLE,
        "xDS inbound listener not serving",
    )
    .into_response(is_grpc)
}

/// The response to a denied request. It carries no response flag: Envoy's RBAC filter sets
/// none (`response_flags="-"`).
pub(crate) fn denied_response(is_grpc: bool) -> Response<ResponseBody> {
    Failure::unflagged(
        GrpcCode::PermissionDenied,
        StatusCode::FORBIDDEN,
        DENIED_MESSAGE,
    )
    .into_response(is_grpc)
}
