//! Our ADS client against our development control plane: the same Istio YAML, served over
//! xDS, routes a tonic client to real echo servers with the weighted split it says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, time::Duration};

use mesh_test_support as support;
use mesh_tower::{
    Mesh,
    mesh_core::{MeshConfig, istio},
};
use mesh_xds::{
    bootstrap::Bootstrap,
    client::{ResourceStatus, XdsClient},
    server::ControlPlane,
};
use support::echo::{Behavior, EchoClient, request, spawn_echo};

const TARGET: &str = "echo.default.svc.cluster.local:50051";

fn yaml(v1: std::net::SocketAddr, v2: std::net::SocketAddr, w1: u32, w2: u32) -> MeshConfig {
    let text = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 50051, name: grpc, protocol: GRPC}}
  endpoints:
  - {{address: {}, ports: {{grpc: {}}}, labels: {{version: v1}}}}
  - {{address: {}, ports: {{grpc: {}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo}}
spec:
  host: echo.default.svc.cluster.local
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [echo.default.svc.cluster.local]
  http:
  - route:
    - destination: {{host: echo.default.svc.cluster.local, subset: v1}}
      weight: {w1}
    - destination: {{host: echo.default.svc.cluster.local, subset: v2}}
      weight: {w2}
",
        v1.ip(),
        v1.port(),
        v2.ip(),
        v2.port()
    );
    match istio::load_str("mesh.yaml", &text) {
        Ok(l) => l.config,
        Err(e) => panic!("{e}"),
    }
}

async fn count(client: &mut EchoClient<mesh_tower::Channel>, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let mut req = request("hi");
        req.set_timeout(Duration::from_secs(20));
        let r = tokio::time::timeout(Duration::from_secs(25), client.say(req))
            .await
            .expect("hung")
            .expect("rpc ok");
        *counts.entry(r.into_inner().served_by).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn our_client_follows_our_control_plane() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let v2 = spawn_echo("v2", Behavior::default()).await;
    let cp = ControlPlane::new(yaml(v1.addr, v2.addr, 90, 10));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn({
        let cp = cp.clone();
        async move { cp.serve(listener).await }
    });
    let mesh = Mesh::new(MeshConfig::empty());
    let xds = XdsClient::start(Bootstrap::insecure(addr.to_string(), "n"), mesh.clone()).unwrap();
    let mut client = EchoClient::new(mesh.channel(format!("xds:///{TARGET}")));
    let c = count(&mut client, 1000).await;
    let share = c.get("v2").copied().unwrap_or(0) as f64 / 1000.0;
    assert!((share - 0.1).abs() < 0.03, "{c:?}");
    let dump = xds.config_dump();
    assert!(
        dump.resources
            .iter()
            .all(|r| r.status == ResourceStatus::Acked),
        "{dump:#?}"
    );
    println!("{dump:#?}");
    assert!(cp.nacks().is_empty(), "{:?}", cp.nacks());
    cp.set_config(yaml(v1.addr, v2.addr, 0, 100));
    for _ in 0..200 {
        if count(&mut client, 1).await.contains_key("v2")
            && count(&mut client, 20).await.get("v2") == Some(&20)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the push never applied");
}
