//! Authorization: Istio `AuthorizationPolicy` for one incoming request, or the RBAC filters of
//! the port's xDS inbound listener when an xDS client serves it.
//!
//! The decision is `mesh-core`'s pure [`authorize`](mesh_core::authorize) or
//! [`authorize_rbac`](mesh_core::authorize_rbac); this module only
//! gathers its inputs from the request (principal and address from the [`Peer`], the workload's
//! namespace, labels and port) and answers a denial as Envoy's RBAC filter does: HTTP 403
//! `RBAC: access denied`, or a trailers-only `PERMISSION_DENIED` for gRPC callers. Dry-run
//! policies that would have denied are logged here and counted by the metrics recorder, and
//! the RBAC decisions to audit (gRFC A59) are written as JSON events on [`AUDIT_TARGET`].

use std::{
    fmt,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use http::{Request, Response, StatusCode, header};
use mesh_core::{AuthzReason, AuthzRequest, GrpcCode, RbacAudit, RbacFilter, ServerPolicy};

use super::Workload;
use crate::{Peer, body::ResponseBody, metrics::ServerRecorder, synthesize::Failure};

/// Envoy's RBAC denial message.
const DENIED_MESSAGE: &str = "RBAC: access denied";

/// The `tracing` target of audit events (gRFC A59's stdout logger): one INFO event per audited
/// RBAC decision, its message the JSON object A59 prints, so a subscriber can route them to
/// their own sink (`mesh_tower::audit=info`).
pub const AUDIT_TARGET: &str = "mesh_tower::audit";

/// A59's audit log entry: `{"grpc_audit_log":{"timestamp":..,"rpc_method":..,"principal":..,
/// "policy_name":..,"matched_rule":..,"authorized":..}}`. The principal is the peer's
/// certificate URI SAN (`spiffe://...`), empty without one; the policy name is empty, as A59
/// says for xDS; the matched rule is the RBAC policy's name, empty when none matched.
fn audit_event(audit: &RbacAudit, peer: &Peer, path: &str, now: SystemTime) -> serde_json::Value {
    let principal = peer
        .principal()
        .map(|p| format!("spiffe://{p}"))
        .unwrap_or_default();
    serde_json::json!({
        "grpc_audit_log": {
            "timestamp": Rfc3339Nanos(now).to_string(),
            "rpc_method": path,
            "principal": principal,
            "policy_name": "",
            "matched_rule": audit.matched_rule.as_deref().unwrap_or(""),
            "authorized": audit.authorized,
        }
    })
}

/// A UTC time in RFC 3339 with nanoseconds, as A59's entries carry it.
struct Rfc3339Nanos(SystemTime);

impl fmt::Display for Rfc3339Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let days = i64::try_from(secs / 86_400).unwrap_or(0);
        let of_day = secs % 86_400;
        let (year, month, day) = crate::access_log::civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60,
            since.subsec_nanos()
        )
    }
}

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
    for audit in &decision.rbac_audits {
        let event = audit_event(audit, peer, request.path, SystemTime::now());
        tracing::info!(target: AUDIT_TARGET, filter = %audit.filter, "{event}");
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
/// or does not exist), or to a connection no filter chain takes any more: gRPC `UNAVAILABLE` /
/// HTTP 503, never the handler. The TLS acceptor closes new connections of such a port
/// (A36) and drains open ones; this answers the requests those open connections still send,
/// and servers not behind a `MeshListener`, so no request reaches the handler under a policy
/// the control plane did not give.
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::peer::PeerIdentity;

    #[test]
    fn audit_events_are_a59_entries() {
        let peer = Peer {
            address: None,
            local_address: None,
            identity: Some(PeerIdentity {
                principal: Some("cluster.local/ns/default/sa/reviews".into()),
                principals: Arc::from([Arc::from("cluster.local/ns/default/sa/reviews")]),
                dns_names: Arc::from([]),
            }),
        };
        let audit = RbacAudit {
            filter: "envoy.filters.http.rbac".into(),
            matched_rule: Some("default-allow-0".into()),
            authorized: true,
        };
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(
            audit_event(&audit, &peer, "/echo.Echo/Say", at).to_string(),
            r#"{"grpc_audit_log":{"authorized":true,"matched_rule":"default-allow-0","policy_name":"","principal":"spiffe://cluster.local/ns/default/sa/reviews","rpc_method":"/echo.Echo/Say","timestamp":"2023-11-14T22:13:20.123456789Z"}}"#
        );
        let unmatched = RbacAudit {
            matched_rule: None,
            authorized: false,
            ..audit
        };
        let entry = audit_event(&unmatched, &Peer::default(), "/x", at);
        assert_eq!(entry["grpc_audit_log"]["matched_rule"], "");
        assert_eq!(entry["grpc_audit_log"]["principal"], "");
    }
}
