//! Istio's `Sidecar` for the local workload, through a mesh channel against real tonic servers
//! on 127.0.0.1: `egress[].hosts` decide which services (and VirtualServices) it sees, and
//! `outboundTrafficPolicy` what a call to any other host gets.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_test_support::echo as support;
use mesh_tower::{Mesh, mesh_core::Labels};
use support::*;
use tonic::Code;

/// The echo service (subsets v1, v2) routed to v2 by its VirtualService; `localhost` on
/// `direct_port` as a second service of the namespace, whose VirtualService sends it to echo's
/// v1; and a Sidecar for `app: web` that imports only echo, with `mode`.
fn yaml(v1: &Running, v2: &Running, direct_port: u16, mode: &str) -> String {
    format!(
        "{}---
{}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: direct}}
spec:
  hosts: [localhost.default.svc.cluster.local]
  resolution: DNS
  ports:
  - {{number: {direct_port}, name: grpc, protocol: GRPC}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: direct}}
spec:
  hosts: [localhost]
  http:
  - route: [{{destination: {{host: {HOST}, subset: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: web}}
spec:
  workloadSelector: {{labels: {{app: web}}}}
  egress:
  - hosts: [./{HOST}]
  outboundTrafficPolicy: {{mode: {mode}}}
",
        services_yaml(&[("v1", v1.addr), ("v2", v2.addr)]),
        virtual_service(&format!(
            "  - route: [{{destination: {{host: {HOST}, subset: v2}}}}]\n"
        ))
    )
}

fn web() -> Labels {
    Labels::new([("app", "web")]).unwrap()
}

async fn served_by(mesh: &Mesh, target: &str) -> Result<String, tonic::Status> {
    let mut client = EchoClient::new(mesh.channel(target));
    Ok(client.say(request("hi")).await?.into_inner().served_by)
}

#[tokio::test]
async fn registry_only_routes_imported_hosts_and_refuses_the_rest_naming_the_sidecar() {
    let (v1, v2) = (
        spawn_echo("v1", Behavior::default()).await,
        spawn_echo("v2", Behavior::default()).await,
    );
    let direct = spawn_echo("direct", Behavior::default()).await;
    let port = direct.addr.port();
    let mesh = Mesh::new(config(&yaml(&v1, &v2, port, "REGISTRY_ONLY")));
    let localhost = format!("localhost:{port}");

    // Before the workload's labels are known, the Sidecar selects nothing: every service and
    // VirtualService applies.
    assert_eq!(served_by(&mesh, &localhost).await.unwrap(), "v1");

    assert!(mesh.set_local_labels(web()).is_ok());
    // The imported host, with its VirtualService.
    for _ in 0..4 {
        assert_eq!(served_by(&mesh, TARGET).await.unwrap(), "v2");
    }
    // The host it does not import, refused without a connection.
    let status = served_by(&mesh, &localhost).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains(&format!(
            "target `{localhost}` (localhost.default.svc.cluster.local:{port}) is not imported"
        )) && status
            .message()
            .contains("REGISTRY_ONLY of Sidecar default/web"),
        "{status:?}"
    );
    // A host in no registry at all.
    let status = served_by(&mesh, "nowhere.example.com:50051")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("is not in the mesh registry"),
        "{status:?}"
    );
    // A plain HTTP caller gets Envoy's `block_all` answer: 502.
    let req = http::Request::get(format!("http://{localhost}/anything"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = tower::ServiceExt::oneshot(mesh.channel(localhost.as_str()), req)
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::BAD_GATEWAY);
    assert_eq!(
        direct
            .behavior
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn allow_any_passes_a_host_it_does_not_import_through_by_dns_without_its_routes() {
    let (v1, v2) = (
        spawn_echo("v1", Behavior::default()).await,
        spawn_echo("v2", Behavior::default()).await,
    );
    let direct = spawn_echo("direct", Behavior::default()).await;
    let port = direct.addr.port();
    let mesh = Mesh::new(config(&yaml(&v1, &v2, port, "ALLOW_ANY")));
    assert!(mesh.set_local_labels(web()).is_ok());

    // `localhost` is passed through to what DNS says, not sent to echo's v1 by the
    // VirtualService the workload does not import.
    assert_eq!(
        served_by(&mesh, &format!("localhost:{port}"))
            .await
            .unwrap(),
        "direct"
    );
    assert_eq!(served_by(&mesh, TARGET).await.unwrap(), "v2");
}
