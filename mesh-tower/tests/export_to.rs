//! `exportTo` of services, VirtualServices and DestinationRules, and routes to services a
//! workload cannot see, through a mesh channel against real tonic servers on 127.0.0.1.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;

use mesh_test_support::echo as support;
use mesh_tower::{Mesh, mesh_core::Labels};
use support::*;
use tonic::Code;

/// What each resource of [`yaml`] is exported to.
struct Exports {
    service_entry: &'static str,
    virtual_service: &'static str,
    destination_rule: &'static str,
}

const EVERYWHERE: &str = "['*']";
const OWN: &str = "[.]";

/// In namespace `default`: the echo service (subsets v1, v2, by a DestinationRule), and
/// `localhost` (a ServiceEntry for 127.0.0.1 on `direct_port`) whose VirtualService sends it
/// to echo's v1; then `extra` documents.
fn yaml(v1: &Running, v2: &Running, direct_port: u16, exports: &Exports, extra: &str) -> String {
    let services = services_yaml(&[("v1", v1.addr), ("v2", v2.addr)]).replace(
        &format!("spec:\n  host: {HOST}\n"),
        &format!(
            "spec:\n  host: {HOST}\n  exportTo: {}\n",
            exports.destination_rule
        ),
    );
    format!(
        "{services}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: direct}}
spec:
  hosts: [localhost.default.svc.cluster.local]
  exportTo: {}
  resolution: STATIC
  ports:
  - {{number: {direct_port}, name: grpc, protocol: GRPC}}
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: direct}}
spec:
  hosts: [localhost]
  exportTo: {}
  http:
  - route: [{{destination: {{host: {HOST}, subset: v1}}}}]
---
{extra}",
        exports.service_entry, exports.virtual_service
    )
}

async fn served_by(mesh: &Mesh, target: &str) -> Result<String, tonic::Status> {
    let mut client = EchoClient::new(mesh.channel(target));
    Ok(client.say(request("hi")).await?.into_inner().served_by)
}

/// A mesh for a workload in `namespace`.
fn mesh_in(yaml: &str, namespace: &str) -> Mesh {
    let mesh = Mesh::new(config(yaml));
    if namespace != "default" {
        assert!(mesh.set_local_namespace(namespace).is_ok());
    }
    mesh
}

#[tokio::test]
async fn resources_apply_only_to_the_namespaces_they_are_exported_to() {
    let (v1, v2) = (
        spawn_echo("v1", Behavior::default()).await,
        spawn_echo("v2", Behavior::default()).await,
    );
    let direct = spawn_echo("direct", Behavior::default()).await;
    let port = direct.addr.port();
    // The name every namespace can use (a short name resolves in the caller's namespace).
    let localhost = format!("localhost.default.svc.cluster.local:{port}");
    // REGISTRY_ONLY everywhere, so that a host a workload cannot see is refused rather than
    // passed through to DNS.
    let registry_only = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress:
  - hosts: ['*/*']
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";
    let private = |service_entry, virtual_service, destination_rule| {
        yaml(
            &v1,
            &v2,
            port,
            &Exports {
                service_entry,
                virtual_service,
                destination_rule,
            },
            registry_only,
        )
    };

    // Everything exported: the VirtualService sends `localhost` to echo's v1 everywhere.
    let public = private(EVERYWHERE, EVERYWHERE, EVERYWHERE);
    for namespace in ["default", "prod"] {
        let mesh = mesh_in(&public, namespace);
        assert_eq!(served_by(&mesh, &localhost).await.unwrap(), "v1");
    }

    // A private ServiceEntry: in `prod` the host is unknown.
    let yaml = private(OWN, EVERYWHERE, EVERYWHERE);
    assert_eq!(
        served_by(&mesh_in(&yaml, "default"), &localhost)
            .await
            .unwrap(),
        "v1"
    );
    let status = served_by(&mesh_in(&yaml, "prod"), &localhost)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("not exported to namespace `prod`"),
        "{status:?}"
    );

    // A private VirtualService: in `prod` the service has Istio's default route, to itself.
    let yaml = private(EVERYWHERE, OWN, EVERYWHERE);
    assert_eq!(
        served_by(&mesh_in(&yaml, "default"), &localhost)
            .await
            .unwrap(),
        "v1"
    );
    assert_eq!(
        served_by(&mesh_in(&yaml, "prod"), &localhost)
            .await
            .unwrap(),
        "direct"
    );

    // A private DestinationRule: in `prod` subset v1 does not exist, so the route to it
    // answers as a missing cluster; echo itself is still served, without the rule.
    let yaml = private(EVERYWHERE, EVERYWHERE, OWN);
    let prod = mesh_in(&yaml, "prod");
    let v1_calls = v1.behavior.calls.load(Ordering::SeqCst);
    let status = served_by(&prod, &localhost).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("is not configured"), "{status:?}");
    assert_eq!(v1.behavior.calls.load(Ordering::SeqCst), v1_calls);
    assert!(["v1", "v2"].contains(&served_by(&prod, TARGET).await.unwrap().as_str()));
}

#[tokio::test]
async fn a_visible_route_to_a_service_the_sidecar_hides_answers_no_cluster() {
    let (v1, v2) = (
        spawn_echo("v1", Behavior::default()).await,
        spawn_echo("v2", Behavior::default()).await,
    );
    let direct = spawn_echo("direct", Behavior::default()).await;
    let port = direct.addr.port();
    let localhost = format!("localhost:{port}");
    let sidecar = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: web}
spec:
  workloadSelector: {labels: {app: web}}
  egress:
  - hosts: [./localhost.default.svc.cluster.local]
";
    let exports = Exports {
        service_entry: EVERYWHERE,
        virtual_service: EVERYWHERE,
        destination_rule: EVERYWHERE,
    };
    let mesh = Mesh::new(config(&yaml(&v1, &v2, port, &exports, sidecar)));
    assert_eq!(served_by(&mesh, &localhost).await.unwrap(), "v1");

    assert!(
        mesh.set_local_labels(Labels::new([("app", "web")]).unwrap())
            .is_ok()
    );
    // `localhost` and its VirtualService are imported; echo, where it routes, is not: Envoy
    // has no cluster for it and answers 503 with flag NC.
    let status = served_by(&mesh, &localhost).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains(&format!(
            "cluster `outbound|50051|v1|{HOST}` is not configured"
        )),
        "{status:?}"
    );
    let req = http::Request::get(format!("http://{localhost}/anything"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = tower::ServiceExt::oneshot(mesh.channel(localhost.as_str()), req)
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        v1.behavior.calls.load(Ordering::SeqCst),
        1,
        "only the call before the Sidecar applied"
    );
}
