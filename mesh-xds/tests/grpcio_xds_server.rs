//! gRPC C-core's own xDS-enabled *server* (Python grpcio, `grpc.server(..., xds=True)` with
//! xDS server credentials) takes the inbound Listeners istiod sends (the conformance fixture,
//! built from istio's `grpcgen/lds.go`, the shapes this mesh's decoder serves) for STRICT,
//! PERMISSIVE and DISABLE and with RBAC: it ACKs each one, and this mesh's clients calling it
//! are let in or refused as the Listener says. The independent-peer check that the inbound
//! shapes the mesh accepts are the ones gRPC accepts. A second test has the development
//! control plane (`mesh_xds::server::ControlPlane`) build the inbound listeners from Istio
//! YAML for the server's node (namespace and labels from its metadata): grpcio ACKs and
//! enforces them too.
//!
//! Needs the virtualenv `scripts/python-env` creates in `target/py`. Without it the test fails
//! and says so; it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use mesh_test_support as support;
use mesh_test_support::pki as certs;
use support::{
    ads::{AdsServer, Snapshot},
    echo::{EchoClient, istio_mutual_client as client, request},
    interop::python,
    istiod::{self, AuthzRule, PeerAuthn, TlsShape},
    resources::LDS,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::Code;

/// Starts grpcio's xDS server (`tests/interop/grpcio_server.py`) as node `node`, fed by the
/// management server at `xds`, its `default` certificate provider reading the `ratings`
/// identity as istio-agent writes it; returns the process and its address once it is up. C-core
/// xDS servers do not serve ephemeral ports (A36): a free port is picked first.
async fn start_grpcio_server(
    xds: SocketAddr,
    node: serde_json::Value,
    dir: &certs::Dir,
    ca: &certs::Ca,
) -> (tokio::process::Child, SocketAddr) {
    let ratings = ca.workload("ratings");
    let (cert, key, bundle) = (
        dir.write("server.crt", &ratings.cert_pem),
        dir.write("server.key", &ratings.key_pem),
        dir.write("server-ca.crt", &ca.pem()),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let bootstrap = serde_json::json!({
        "xds_servers": [{
            "server_uri": xds.to_string(),
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": node,
        "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
        "certificate_providers": {
            "default": {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": cert,
                    "private_key_file": key,
                    "ca_certificate_file": bundle,
                    "refresh_interval": "900s",
                },
            },
        },
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/grpcio_server.py");
    let mut server = tokio::process::Command::new(python())
        .arg(&script)
        .args(["--port", &port.to_string()])
        .env("GRPC_XDS_BOOTSTRAP_CONFIG", bootstrap.to_string())
        .env_remove("GRPC_XDS_BOOTSTRAP")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let started = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    assert!(
        matches!(&started, Ok(Ok(Some(line))) if line == "started"),
        "grpcio_server.py did not start: {started:?}"
    );
    (server, addr)
}

async fn call(client: &mut EchoClient<mesh_tower::Channel>, shout: bool) -> Code {
    let mut req = request("hi");
    req.set_timeout(Duration::from_secs(5));
    let reply = if shout {
        tokio::time::timeout(Duration::from_secs(10), client.shout(req)).await
    } else {
        tokio::time::timeout(Duration::from_secs(10), client.say(req)).await
    };
    match reply.expect("rpc hung") {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Calls until one call gives `want` (the server may still be applying the Listener), at most
/// 10 s; returns the last code.
async fn settles_on(client: &mut EchoClient<mesh_tower::Channel>, shout: bool, want: Code) -> Code {
    let mut last = Code::Unknown;
    for _ in 0..50 {
        last = call(client, shout).await;
        if last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

/// Waits for grpcio's ACK of LDS `version` and checks it never NACKed.
async fn acked(ads: &AdsServer, version: &str) {
    let ack = ads
        .wait_request(&format!("ACK of LDS {version}"), |r| {
            r.type_url == LDS && (r.version_info == version || r.error_detail.is_some())
        })
        .await;
    assert!(
        ack.error_detail.is_none(),
        "grpcio NACKed the inbound listener: {:?}",
        ack.error_detail
    );
}

#[tokio::test]
async fn grpc_c_core_servers_ack_and_enforce_istiods_inbound_listeners() {
    let (ca, dir) = (certs::Ca::new("mesh"), certs::Dir::new());
    let identity = |sa: &str| dir.identity(sa, &ca.workload(sa), &ca);

    let ads = AdsServer::start().await;
    istiod::behave_like_istiod(&ads);
    let (mut server, addr) = start_grpcio_server(
        ads.addr,
        serde_json::json!({"id": "sidecar~127.0.0.1~ratings.default~default.svc.cluster.local"}
        ),
        &dir,
        &ca,
    )
    .await;

    let mut reviews = client(addr, Some(identity("reviews")));
    let mut productpage = client(addr, Some(identity("productpage")));
    let mut plaintext = client(addr, None);
    let reviewer = |paths: Option<&str>, sa: &str| AuthzRule {
        principals: vec![certs::spiffe(sa)],
        paths: paths.map(|p| vec![p.to_string()]),
    };

    // STRICT, with DENY productpage on Shout and ALLOW reviews and productpage.
    let push = |version: &str, mode, deny: &[AuthzRule], allow: &[AuthzRule]| {
        let (name, listener) =
            istiod::inbound_listener_in(addr, TlsShape::Istio1_29, mode, deny, allow);
        ads.set_snapshot(Snapshot::new(version).with(LDS, &name, listener));
    };
    push(
        "1",
        PeerAuthn::Strict,
        &[reviewer(Some("/echo.Echo/Shout"), "productpage")],
        &[reviewer(None, "reviews"), reviewer(None, "productpage")],
    );
    acked(&ads, "1").await;
    assert_eq!(settles_on(&mut reviews, false, Code::Ok).await, Code::Ok);
    assert_eq!(call(&mut reviews, true).await, Code::Ok);
    assert_eq!(call(&mut productpage, false).await, Code::Ok);
    assert_eq!(call(&mut productpage, true).await, Code::PermissionDenied);
    assert_ne!(
        call(&mut plaintext, false).await,
        Code::Ok,
        "plaintext under STRICT"
    );

    // PERMISSIVE without the tlsMode label: istiod's plaintext chain.
    push(
        "2",
        PeerAuthn::Permissive {
            tls_mode_label: false,
        },
        &[],
        &[],
    );
    acked(&ads, "2").await;
    assert_eq!(settles_on(&mut plaintext, false, Code::Ok).await, Code::Ok);

    // PERMISSIVE on a pod labelled for Istio mTLS: the mTLS chain.
    push(
        "3",
        PeerAuthn::Permissive {
            tls_mode_label: true,
        },
        &[],
        &[reviewer(None, "reviews")],
    );
    acked(&ads, "3").await;
    assert_eq!(
        settles_on(&mut productpage, false, Code::PermissionDenied).await,
        Code::PermissionDenied
    );
    assert_eq!(call(&mut reviews, false).await, Code::Ok);

    // DISABLE: plaintext, with a DENY on Shout for everyone.
    push(
        "4",
        PeerAuthn::Disable,
        &[AuthzRule {
            principals: vec![],
            paths: Some(vec!["/echo.Echo/Shout".into()]),
        }],
        &[],
    );
    acked(&ads, "4").await;
    assert_eq!(
        settles_on(&mut plaintext, true, Code::PermissionDenied).await,
        Code::PermissionDenied
    );
    assert_eq!(call(&mut plaintext, false).await, Code::Ok);

    server.kill().await.unwrap();
}

/// PeerAuthentication `mode` for namespace `default` and the given AuthorizationPolicies (YAML
/// documents), as the development control plane loads them.
fn policy_yaml(mode: &str, policies: &str) -> mesh_tower::mesh_core::MeshConfig {
    support::echo::config(&format!(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec:
  mtls: {{mode: {mode}}}
{policies}"
    ))
}

/// An AuthorizationPolicy on `app: ratings`: `action` for `principals` (Istio syntax, none:
/// any source) on `paths` (none: any path).
fn authz(name: &str, action: &str, principals: &[&str], paths: &[&str]) -> String {
    let mut fields = Vec::new();
    if !principals.is_empty() {
        fields.push(format!(
            "from: [{{source: {{principals: [{}]}}}}]",
            principals.join(", ")
        ));
    }
    if !paths.is_empty() {
        fields.push(format!(
            "to: [{{operation: {{paths: [\"{}\"]}}}}]",
            paths.join("\", \"")
        ));
    }
    let rule = if fields.is_empty() {
        "{}".to_string()
    } else {
        fields.join("\n    ")
    };
    format!(
        "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: ratings}}}}
  action: {action}
  rules:
  - {rule}
"
    )
}

/// Waits for an ACK of LDS `version` from the grpcio server and checks nothing was NACKed.
async fn dev_acked(cp: &mesh_xds::server::ControlPlane, version: &str) {
    let mut log = cp.log();
    let seen = tokio::time::timeout(
        Duration::from_secs(20),
        log.wait_for(|l| {
            !l.nacks.is_empty()
                || l.acks
                    .iter()
                    .any(|a| a.type_url == mesh_xds::encode::LISTENER_TYPE && a.version == version)
        }),
    )
    .await;
    assert!(seen.is_ok(), "no ACK of LDS {version}");
    assert!(cp.nacks().is_empty(), "grpcio NACKed: {:?}", cp.nacks());
}

#[tokio::test]
async fn grpc_c_core_servers_ack_and_enforce_the_dev_control_planes_inbound_listeners() {
    let (ca, dir) = (certs::Ca::new("mesh"), certs::Dir::new());
    let identity = |sa: &str| dir.identity(sa, &ca.workload(sa), &ca);
    let shout = "/echo.Echo/Shout";
    let reviews_sa = "cluster.local/ns/default/sa/reviews";
    let productpage_sa = "cluster.local/ns/default/sa/productpage";

    // STRICT, with DENY productpage on Shout and ALLOW reviews and productpage.
    let cp = mesh_xds::server::ControlPlane::new(policy_yaml(
        "STRICT",
        &format!(
            "{}{}",
            authz("deny-shout", "DENY", &[productpage_sa], &[shout]),
            authz("allow", "ALLOW", &[reviews_sa, productpage_sa], &[])
        ),
    ));
    let cp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_addr = cp_listener.local_addr().unwrap();
    tokio::spawn({
        let cp = cp.clone();
        async move { cp.serve(cp_listener).await }
    });
    // The pod is labelled for Istio mTLS, as istio-agent reports it.
    let (mut server, addr) = start_grpcio_server(
        cp_addr,
        serde_json::json!({
            "id": "sidecar~127.0.0.1~ratings.default~default.svc.cluster.local",
            "metadata": {
                "NAMESPACE": "default",
                "LABELS": {"app": "ratings", "security.istio.io/tlsMode": "istio"},
            },
        }
        ),
        &dir,
        &ca,
    )
    .await;

    let mut reviews = client(addr, Some(identity("reviews")));
    let mut productpage = client(addr, Some(identity("productpage")));
    let mut plaintext = client(addr, None);

    dev_acked(&cp, "1").await;
    assert_eq!(settles_on(&mut reviews, false, Code::Ok).await, Code::Ok);
    assert_eq!(call(&mut reviews, true).await, Code::Ok);
    assert_eq!(call(&mut productpage, false).await, Code::Ok);
    assert_eq!(call(&mut productpage, true).await, Code::PermissionDenied);
    assert_ne!(
        call(&mut plaintext, false).await,
        Code::Ok,
        "plaintext under STRICT"
    );

    // PERMISSIVE on a pod labelled for Istio mTLS: the mTLS chain, ALLOW reviews only.
    let v = cp.set_config(policy_yaml(
        "PERMISSIVE",
        &authz("allow", "ALLOW", &[reviews_sa], &[]),
    ));
    dev_acked(&cp, &v).await;
    assert_eq!(
        settles_on(&mut productpage, false, Code::PermissionDenied).await,
        Code::PermissionDenied
    );
    assert_eq!(call(&mut reviews, false).await, Code::Ok);
    assert_ne!(call(&mut plaintext, false).await, Code::Ok);

    // DISABLE: plaintext, with a DENY on Shout for everyone.
    let v = cp.set_config(policy_yaml(
        "DISABLE",
        &authz("deny-shout", "DENY", &[], &[shout]),
    ));
    dev_acked(&cp, &v).await;
    assert_eq!(
        settles_on(&mut plaintext, true, Code::PermissionDenied).await,
        Code::PermissionDenied
    );
    assert_eq!(call(&mut plaintext, false).await, Code::Ok);

    server.kill().await.unwrap();
}
