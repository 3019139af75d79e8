//! gRFC A59 audit logging on an xDS-served port: each RBAC decision its audit condition asks
//! for is one JSON entry on the `mesh_tower::audit` target, through the server stack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod log_support;

use std::{convert::Infallible, sync::Arc};

use http::{Request, Response, StatusCode};
use mesh_tower::{
    Mesh, Peer, Workload,
    mesh_core::{
        AuditCondition, InboundChain, InboundListener, InboundListeners, InboundState, MeshConfig,
        MtlsMode, Permission, Principal, Rbac, RbacAction, RbacFilter, RbacPolicy,
        matcher::{PathMatch, PathMatcher},
    },
    server::authz::AUDIT_TARGET,
};
use tower::{Layer, ServiceExt, service_fn};

fn rbac(
    name: &str,
    action: RbacAction,
    policy: &str,
    path: &str,
    audit: AuditCondition,
) -> RbacFilter {
    RbacFilter {
        name: name.into(),
        rules: Some(Rbac {
            action,
            policies: Arc::from([RbacPolicy {
                name: policy.into(),
                permissions: Arc::from([Permission::UrlPath(PathMatcher::new(
                    PathMatch::Exact(path.into()),
                    false,
                ))]),
                principals: Arc::from([Principal::Any]),
            }]),
            audit,
        }),
        shadow_rules: None,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn audited_rbac_decisions_are_a59_json_entries() {
    let capture = log_support::capture();
    let mesh = Mesh::new(MeshConfig::empty());
    // A59's "on deny and allow": the DENY RBAC audits denials, the ALLOW RBAC both.
    let chain = InboundChain {
        name: "inbound-plaintext".into(),
        mtls: MtlsMode::Disable,
        rbac: Arc::from([
            rbac(
                "deny",
                RbacAction::Deny,
                "no-delete",
                "/echo.Echo/Delete",
                AuditCondition::OnDeny,
            ),
            rbac(
                "allow",
                RbacAction::Allow,
                "say",
                "/echo.Echo/Say",
                AuditCondition::OnDenyAndAllow,
            ),
        ]),
    };
    let listener = InboundListener::single("xds.istio.io/grpc/lds/inbound/127.0.0.1:9080", chain);
    mesh.publish_inbound(Arc::new(InboundListeners::new(
        [(9080, InboundState::Serving(Arc::new(listener)))]
            .into_iter()
            .collect(),
    )));
    let layer = mesh.server_layer(Workload::new("default", "ratings", 9080));
    let call = |path: &'static str| {
        let svc = layer.layer(service_fn(|_: Request<axum::body::Body>| async {
            Ok::<_, Infallible>(Response::new(axum::body::Body::empty()))
        }));
        async move {
            let mut req = Request::post(path).body(axum::body::Body::empty()).unwrap();
            req.extensions_mut().insert(Peer {
                address: Some("127.0.0.1:5000".parse().unwrap()),
                local_address: Some("127.0.0.1:9080".parse().unwrap()),
                identity: None,
            });
            svc.oneshot(req).await.unwrap().status()
        }
    };
    assert_eq!(call("/echo.Echo/Say").await, StatusCode::OK);
    assert_eq!(call("/echo.Echo/Delete").await, StatusCode::FORBIDDEN);
    assert_eq!(call("/echo.Echo/Other").await, StatusCode::FORBIDDEN);

    let entries: Vec<serde_json::Value> = capture
        .with_target(AUDIT_TARGET)
        .iter()
        .map(|e| serde_json::from_str(e.message()).unwrap())
        .collect();
    let summary: Vec<(String, String, bool)> = entries
        .iter()
        .map(|e| {
            let log = &e["grpc_audit_log"];
            (
                log["rpc_method"].as_str().unwrap().to_owned(),
                log["matched_rule"].as_str().unwrap().to_owned(),
                log["authorized"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("/echo.Echo/Say".to_owned(), "say".to_owned(), true),
            (
                "/echo.Echo/Delete".to_owned(),
                "no-delete".to_owned(),
                false
            ),
            ("/echo.Echo/Other".to_owned(), String::new(), false),
        ],
        "one entry per request, by the RBAC that decided it: {entries:#?}"
    );
    let timestamp = entries[0]["grpc_audit_log"]["timestamp"].as_str().unwrap();
    assert!(
        timestamp.ends_with('Z') && timestamp.len() == 30,
        "{timestamp}"
    );
}
