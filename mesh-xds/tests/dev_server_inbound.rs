//! The development control plane serves xDS-driven servers: a server subscribing to its
//! inbound listener (`xds.istio.io/grpc/lds/inbound/<ip>:<port>`, as an istio-agent bootstrap
//! names it) gets the listener istiod would build from the Istio YAML's PeerAuthentication
//! and AuthorizationPolicy for its workload (the node metadata's `NAMESPACE` and `LABELS`).
//! End to end on 127.0.0.1 with real mTLS: STRICT refuses a plaintext caller, the DENY policy
//! refuses `productpage` with `PERMISSION_DENIED`, `reviews` gets through, and a policy change
//! served by the control plane reaches the server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use mesh_test_support as support;
use mesh_test_support::pki as certs;
use mesh_tower::{
    Mesh, Workload,
    mesh_core::{InboundState, Labels, MeshConfig, MtlsMode},
    tls::MeshListener,
};
use mesh_xds::{
    bootstrap::{Bootstrap, CertificateProvider, FileWatcherConfig},
    client::XdsClient,
    server::ControlPlane,
};
use support::echo::{Behavior, EchoClient, HOST, TARGET, echo_service, request};
use tonic::Code;

type Client = EchoClient<mesh_tower::Channel>;

struct Pki {
    ca: certs::Ca,
    dir: certs::Dir,
}

impl Pki {
    fn provider(&self, sa: &str) -> CertificateProvider {
        self.dir.identity(sa, &self.ca.workload(sa), &self.ca);
        CertificateProvider::FileWatcher(FileWatcherConfig {
            certificate_file: Some(self.dir.path(&format!("{sa}.crt"))),
            private_key_file: Some(self.dir.path(&format!("{sa}.key"))),
            ca_certificate_file: Some(self.dir.path(&format!("{sa}-ca.crt"))),
            refresh_interval: Duration::from_secs(600),
        })
    }
}

/// istio-agent's bootstrap for service account `sa` with pod label `app: <sa>`.
fn bootstrap(cp: SocketAddr, pki: &Pki, sa: &str) -> Bootstrap {
    let mut b = Bootstrap::insecure(cp.to_string(), format!("sidecar~127.0.0.1~{sa}.default"));
    b.node.metadata.insert("NAMESPACE".into(), "default".into());
    b.node
        .metadata
        .insert("LABELS".into(), serde_json::json!({"app": sa}));
    b.certificate_providers = BTreeMap::from([("default".to_string(), pki.provider(sa))]);
    b.server_listener_resource_name_template = Some("xds.istio.io/grpc/lds/inbound/%s".into());
    b
}

/// The mesh as Istio YAML: `echo` at `backend` called with ISTIO_MUTUAL, `mode` for the
/// namespace, and on `app: echo` a DENY for `productpage` (when `deny`) and an ALLOW for
/// `reviews` and `productpage`.
fn mesh_yaml(backend: SocketAddr, mode: &str, deny: bool) -> MeshConfig {
    let mut yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 50051, name: grpc, protocol: GRPC}}
  endpoints:
  - {{address: {ip}, ports: {{grpc: {port}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy:
    tls: {{mode: ISTIO_MUTUAL, subjectAltNames: [\"{san}\"]}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec:
  mtls: {{mode: {mode}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-callers, namespace: default}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  action: ALLOW
  rules:
  - from:
    - source: {{principals: [cluster.local/ns/default/sa/reviews, cluster.local/ns/default/sa/productpage]}}
",
        ip = backend.ip(),
        port = backend.port(),
        san = certs::spiffe("echo"),
    );
    if deny {
        yaml.push_str(
            "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-productpage, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  action: DENY
  rules:
  - from:
    - source: {principals: [cluster.local/ns/default/sa/productpage]}
",
        );
    }
    support::echo::config(&yaml)
}

struct Backend {
    addr: SocketAddr,
    behavior: Arc<Behavior>,
    mesh: Mesh,
    _xds: XdsClient,
}

/// A server whose port follows its inbound listener from the control plane at `cp`.
async fn backend(cp: SocketAddr, pki: &Pki, tcp: tokio::net::TcpListener) -> Backend {
    let mesh = Mesh::new(MeshConfig::empty());
    let xds = XdsClient::start(bootstrap(cp, pki, "echo"), mesh.clone()).unwrap();
    let addr = tcp.local_addr().unwrap();
    xds.serve(addr).unwrap();
    let labels = Labels::new([("app", "echo")]).unwrap();
    let tls = mesh
        .server_tls("default", labels.clone(), addr.port())
        .unwrap();
    let listener = MeshListener::new(tcp, tls).unwrap();
    let layer = mesh.server_layer(
        Workload::new("default", "echo.default.svc.cluster.local", addr.port()).with_labels(labels),
    );
    let behavior = Arc::new(Behavior::default());
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(echo_service("echo", behavior.clone()))
            .serve_with_incoming(listener),
    );
    Backend {
        addr,
        behavior,
        mesh,
        _xds: xds,
    }
}

fn caller(cp: SocketAddr, pki: &Pki, sa: &str) -> (XdsClient, Client) {
    let mesh = Mesh::new(MeshConfig::empty());
    let xds = XdsClient::start(bootstrap(cp, pki, sa), mesh.clone()).unwrap();
    (
        xds,
        EchoClient::new(mesh.channel(format!("xds:///{TARGET}"))),
    )
}

async fn call(client: &mut Client) -> Code {
    let mut req = request("hi");
    req.set_timeout(Duration::from_secs(10));
    match tokio::time::timeout(Duration::from_secs(15), client.say(req))
        .await
        .expect("rpc hung")
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// The inbound state of the backend's port, once it is serving.
async fn serving(backend: &Backend, mode: MtlsMode) {
    for _ in 0..1_000 {
        if let Some(InboundState::Serving(listener)) =
            backend.mesh.config().inbound().get(backend.addr.port())
            && listener.mtls_summary() == mode
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the inbound listener in {mode:?} was not served within 10 s");
}

#[tokio::test]
async fn a_server_follows_the_inbound_listener_the_dev_control_plane_builds() {
    let pki = Pki {
        ca: certs::Ca::new("mesh"),
        dir: certs::Dir::new(),
    };
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = tcp.local_addr().unwrap();
    let cp = ControlPlane::new(mesh_yaml(backend_addr, "STRICT", true));
    let cp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_addr = cp_listener.local_addr().unwrap();
    tokio::spawn({
        let cp = cp.clone();
        async move { cp.serve(cp_listener).await }
    });
    let echo = backend(cp_addr, &pki, tcp).await;
    serving(&echo, MtlsMode::Strict).await;

    let (_reviews_xds, mut reviews) = caller(cp_addr, &pki, "reviews");
    let (_productpage_xds, mut productpage) = caller(cp_addr, &pki, "productpage");
    assert_eq!(call(&mut reviews).await, Code::Ok, "reviews is allowed");
    assert_eq!(
        call(&mut productpage).await,
        Code::PermissionDenied,
        "the DENY policy refuses productpage"
    );

    // STRICT: a plaintext caller never reaches the handler.
    let served = echo
        .behavior
        .calls
        .load(std::sync::atomic::Ordering::SeqCst);
    let plaintext_mesh = Mesh::new(support::echo::config(&support::echo::services_yaml(&[(
        "v1", echo.addr,
    )])));
    let mut plaintext = EchoClient::new(plaintext_mesh.channel(TARGET));
    assert_ne!(
        call(&mut plaintext).await,
        Code::Ok,
        "plaintext under STRICT"
    );
    assert_eq!(
        echo.behavior
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        served
    );
    assert!(cp.nacks().is_empty(), "{:?}", cp.nacks());

    // The DENY policy removed: productpage gets through once the push is applied.
    cp.set_config(mesh_yaml(backend_addr, "STRICT", false));
    let mut allowed = false;
    for _ in 0..200 {
        if call(&mut productpage).await == Code::Ok {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(allowed, "the policy change reached the server");

    // DISABLE: the listener becomes plaintext; the plaintext caller's connection is accepted
    // and its call reaches RBAC, whose ALLOW policy names no plaintext peer.
    cp.set_config(mesh_yaml(backend_addr, "DISABLE", false));
    serving(&echo, MtlsMode::Disable).await;
    let mut reached_rbac = false;
    for _ in 0..200 {
        if call(&mut plaintext).await == Code::PermissionDenied {
            reached_rbac = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reached_rbac, "plaintext under DISABLE is judged by RBAC");
    assert!(cp.nacks().is_empty(), "{:?}", cp.nacks());
}
