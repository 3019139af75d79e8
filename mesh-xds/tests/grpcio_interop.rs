//! gRPC C-core's own xDS client (Python grpcio) against this control plane: it must accept
//! every resource (no NACK) and route as the YAML says, to real tonic echo servers on
//! 127.0.0.1 — a 90/10 weighted split, then a 50 % fault abort with a configured status — and
//! ACK everything served, in the default (istiod) shape, for every configuration of the demo
//! and the repository's Istio example.
//!
//! Needs the virtualenv `scripts/python-env` creates in `target/py` (`scripts/test` runs it
//! first). Without it the test fails and says so; it never skips.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use mesh_core::{MeshConfig, istio::load_str};
use mesh_test_support as support;
use mesh_xds::{encode, server::ControlPlane};
use support::{
    demo,
    echo::{Behavior, EchoReply, EchoRequest, spawn_echo},
    interop::{client_bootstrap, python, repo_root},
};

/// An echo server answering `echo` and its version label (fields 2 and 3, which
/// grpcio_client.py reads as `service/version`).
async fn echo_server(version: &'static str) -> u16 {
    spawn_echo(version, Behavior::default()).await.addr.port()
}

const TARGET: &str = "echo.default.svc.cluster.local:50051";

/// Echo `v1` and `v2` on their ports, split 90/10, with `fault` (Istio YAML) on the route.
fn config(v1: u16, v2: u16, fault: &str) -> MeshConfig {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.default.svc.cluster.local]
  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{grpc: {v1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{grpc: {v2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: echo.default.svc.cluster.local
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.default.svc.cluster.local]
  http:
  - route:
    - destination: {{host: echo.default.svc.cluster.local, subset: v1}}
      weight: 90
    - destination: {{host: echo.default.svc.cluster.local, subset: v2}}
      weight: 10
{fault}"
    );
    load_str("interop.yaml", &yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

/// What grpcio_client.py observed.
#[derive(Debug, serde::Deserialize)]
struct Observed {
    by_version: HashMap<String, u32>,
    by_status: HashMap<String, u32>,
    errors: HashMap<String, String>,
}

/// Runs gRPC C-core's xDS client for `calls` calls to the target through `control_plane`.
async fn grpcio_calls(control_plane: SocketAddr, calls: u32) -> Observed {
    grpcio_run(control_plane, calls, 20).await
}

/// Runs `calls` calls, each bounded by `timeout_secs` (the first waits for xDS).
async fn grpcio_run(control_plane: SocketAddr, calls: u32, timeout_secs: u32) -> Observed {
    grpcio_targets(
        control_plane,
        "grpcio-interop",
        &[TARGET],
        calls,
        timeout_secs,
    )
    .await
}

/// Runs `calls` calls to each of `targets` in turn, as node `node`. The bootstrap has the
/// `default` certificate provider istio-agent writes, which ISTIO_MUTUAL clusters name.
async fn grpcio_targets(
    control_plane: SocketAddr,
    node: &str,
    targets: &[&str],
    calls: u32,
    timeout_secs: u32,
) -> Observed {
    let bootstrap = client_bootstrap(control_plane, node);
    let script = repo_root().join("mesh-xds/tests/interop/grpcio_client.py");
    let output = tokio::process::Command::new(python())
        .arg(&script)
        .args(targets.iter().map(|t| format!("xds:///{t}")))
        .args([
            "--calls",
            &calls.to_string(),
            "--timeout",
            &timeout_secs.to_string(),
        ])
        .env("GRPC_XDS_BOOTSTRAP_CONFIG", bootstrap.to_string())
        .env_remove("GRPC_XDS_BOOTSTRAP")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("grpcio_client.py did not finish within 120 s")
        .unwrap();
    assert!(
        output.status.success(),
        "grpcio_client.py failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "grpcio_client.py printed no result ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// What this mesh's own client observes over `calls` calls with `config`: replies per version
/// and calls per status, counted like grpcio_client.py counts them.
async fn mesh_calls(config: MeshConfig, calls: u32) -> Observed {
    let mesh = mesh_tower::Mesh::new(config);
    let mut grpc = tonic::client::Grpc::new(mesh.channel(TARGET));
    let mut observed = Observed {
        by_version: HashMap::new(),
        by_status: HashMap::new(),
        errors: HashMap::new(),
    };
    for _ in 0..calls {
        grpc.ready().await.unwrap();
        let reply = grpc
            .unary(
                tonic::Request::new(EchoRequest {
                    message: "hello".into(),
                }),
                http::uri::PathAndQuery::from_static("/echo.Echo/Say"),
                tonic_prost::ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await;
        let status = match reply {
            Ok(r) => {
                let r = r.into_inner();
                *observed
                    .by_version
                    .entry(format!("{}/{}", r.service, r.served_by))
                    .or_default() += 1;
                "OK".to_string()
            }
            Err(status) => {
                let name = mesh_core::GrpcCode::from_i32(status.code() as i32)
                    .map_or("UNKNOWN", |c| c.name())
                    .to_string();
                observed
                    .errors
                    .entry(name.clone())
                    .or_insert_with(|| status.message().to_string());
                name
            }
        };
        *observed.by_status.entry(status).or_default() += 1;
    }
    observed
}

/// Echo servers `v1` and `v2`, and the control plane serving their 90/10 split.
async fn start() -> (ControlPlane, SocketAddr, (u16, u16)) {
    let (v1, v2) = (echo_server("v1").await, echo_server("v2").await);
    let cp = ControlPlane::new(config(v1, v2, ""));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = cp.clone();
    tokio::spawn(async move { server.serve(listener).await });
    (cp, addr, (v1, v2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_c_core_accepts_the_resources_and_routes_as_configured() {
    let python = python(); // Fail first, and clearly, when the virtualenv is missing.
    assert!(python.exists());
    let (cp, addr, (v1, v2)) = start().await;

    // The weighted split. 1000 calls at 10 %: v2 ~ Binomial(1000, 0.1), mean 100, sd 9.5;
    // [60, 140] misses a correct split with probability below 1e-4, and catches a client that
    // ignores weights (0 or 500).
    let calls = 1000;
    let split = grpcio_calls(addr, calls).await;
    assert_eq!(split.by_status.get("OK"), Some(&calls), "{split:?}");
    let v2_replies = split.by_version.get("echo/v2").copied().unwrap_or(0);
    let v1_replies = split.by_version.get("echo/v1").copied().unwrap_or(0);
    assert_eq!(v1_replies + v2_replies, calls, "{split:?}");
    assert!(
        (60..=140).contains(&v2_replies),
        "v2 got {v2_replies} of {calls}: {split:?}"
    );

    // This mesh's own client, with the same YAML, observes the same split.
    let ours = mesh_calls((*cp.snapshot().config).clone(), calls).await;
    assert_eq!(ours.by_status.get("OK"), Some(&calls), "{ours:?}");
    let ours_v2 = ours.by_version.get("echo/v2").copied().unwrap_or(0);
    assert!(
        (60..=140).contains(&ours_v2),
        "ours: v2 got {ours_v2} of {calls}: {ours:?}"
    );

    // C-core ACKed every type and NACKed nothing.
    let log = cp.log().borrow().clone();
    assert!(log.nacks.is_empty(), "gRPC NACKed: {:#?}", log.nacks);
    for type_url in encode::TYPE_URLS {
        assert!(
            log.acks
                .iter()
                .any(|a| a.type_url == type_url && a.version == "1" && a.node == "grpcio-interop"),
            "no ACK of {type_url}: {:#?}",
            log.acks
        );
    }

    // A fault abort of half the calls with a configured gRPC status.
    let fault = "    fault:
      abort:
        percentage: {value: 50}
        grpcStatus: RESOURCE_EXHAUSTED
";
    assert_eq!(cp.set_config(config(v1, v2, fault)), "2");
    let faulted = grpcio_calls(addr, calls).await;
    let aborted = faulted
        .by_status
        .get("RESOURCE_EXHAUSTED")
        .copied()
        .unwrap_or(0);
    let ok = faulted.by_status.get("OK").copied().unwrap_or(0);
    assert_eq!(aborted + ok, calls, "{faulted:?}");
    // Binomial(1000, 0.5): sd 15.8; [420, 580] is ±5 sd.
    assert!(
        (420..=580).contains(&aborted),
        "{aborted} of {calls} aborted: {faulted:?}"
    );
    let message = &faulted.errors["RESOURCE_EXHAUSTED"];
    assert!(message.contains("Fault injected"), "{message}");
    let ours = mesh_calls((*cp.snapshot().config).clone(), calls).await;
    let ours_aborted = ours
        .by_status
        .get("RESOURCE_EXHAUSTED")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        ours_aborted + ours.by_status.get("OK").copied().unwrap_or(0),
        calls,
        "{ours:?}"
    );
    assert!(
        (420..=580).contains(&ours_aborted),
        "ours: {ours_aborted} of {calls} aborted: {ours:?}"
    );
    let log = cp.log().borrow().clone();
    assert!(log.nacks.is_empty(), "gRPC NACKed: {:#?}", log.nacks);
    assert!(
        log.acks
            .iter()
            .any(|a| a.type_url == encode::ROUTE_TYPE && a.version == "2"),
        "no ACK of the routes with the fault: {:#?}",
        log.acks
    );
}

/// Serves `resources` (from `cp`'s config, edited) and returns what gRPC made of it.
async fn with_resources(
    cp: &ControlPlane,
    addr: SocketAddr,
    edit: impl FnOnce(&mut encode::Resources),
) -> (String, Observed) {
    let mut resources = encode::encode(&cp.snapshot().config);
    edit(&mut resources);
    let version = cp.set_resources(&resources);
    let observed = grpcio_run(addr, 2, 3).await;
    (version, observed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_grpc_c_core_requires_of_the_resources() {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use prost::Message;

    python();
    let (cp, addr, (v1, v2)) = start().await;

    // Without the router filter, C-core NACKs the listener, with a detail naming it, and
    // the NACK is recorded.
    let (version, observed) = with_resources(&cp, addr, |r| {
        for l in &mut r.listeners {
            let any = l
                .api_listener
                .as_mut()
                .unwrap()
                .api_listener
                .as_mut()
                .unwrap();
            let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
            hcm.http_filters.clear();
            any.value = hcm.encode_to_vec();
        }
    })
    .await;
    assert_eq!(observed.by_status.get("OK"), None, "{observed:?}");
    let nacks = cp.nacks();
    let nack = nacks
        .iter()
        .find(|n| n.type_url == encode::LISTENER_TYPE)
        .unwrap_or_else(|| panic!("no NACK of the listener without a router: {nacks:#?}"));
    assert!(
        nack.error.contains(TARGET),
        "the detail names the listener: {}",
        nack.error
    );
    assert_eq!(nack.node, "grpcio-interop");
    assert!(!version.is_empty());

    // Without locality weights, C-core ignores the endpoints: every call fails UNAVAILABLE,
    // though nothing is NACKed.
    let nacks_before = cp.nacks().len();
    let (_, observed) = with_resources(&cp, addr, |r| {
        for cla in &mut r.load_assignments {
            for group in &mut cla.endpoints {
                group.load_balancing_weight = None;
            }
        }
    })
    .await;
    assert_eq!(observed.by_status.get("OK"), None, "{observed:?}");
    assert!(
        observed.by_status.contains_key("UNAVAILABLE"),
        "{observed:?}"
    );
    assert_eq!(cp.nacks().len(), nacks_before, "{:#?}", cp.nacks());

    // The encoder's own resources work.
    cp.set_config(config(v1, v2, ""));
    let observed = grpcio_run(addr, 2, 10).await;
    assert_eq!(observed.by_status.get("OK"), Some(&2), "{observed:?}");
}

/// Echo servers where the demo's instances would be.
async fn demo_addresses() -> demo::Addresses {
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    demo::Addresses {
        reviews: [
            addr(echo_server("v1").await),
            addr(echo_server("v2").await),
            addr(echo_server("v3").await),
        ],
        ratings: [addr(echo_server("v1").await), addr(echo_server("v1").await)],
        productpage: addr(echo_server("v1").await),
    }
}

/// Asserts `node` ACKed every type at `version` and nothing was NACKed.
fn assert_acked_everything(cp: &ControlPlane, node: &str, version: &str, what: &str) {
    let log = cp.log().borrow().clone();
    assert!(log.nacks.is_empty(), "{what}: NACKed: {:#?}", log.nacks);
    for type_url in encode::TYPE_URLS {
        assert!(
            log.acks
                .iter()
                .any(|a| a.type_url == type_url && a.version == version && a.node == node),
            "{what}: no ACK of {type_url} at version {version}: {:#?}",
            log.acks
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_c_core_acks_everything_served_for_the_demo_configurations() {
    python();
    let at = demo_addresses().await;
    let cp = ControlPlane::new(MeshConfig::empty());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = cp.clone();
    tokio::spawn(async move { server.serve(listener).await });

    for (name, scenario) in demo::scenarios() {
        let version = cp.set_config(demo::config(&at, &scenario));
        let node = format!("grpcio-demo-{version}");
        let observed = grpcio_targets(addr, &node, &demo::TARGETS, 1, 10).await;
        assert_acked_everything(&cp, &node, &version, &name);
        // Every target resolved and reached an echo server (a fault may fail the call).
        assert!(
            !observed.by_status.contains_key("DEADLINE_EXCEEDED"),
            "{name}: {observed:?}"
        );
    }

    let (config, target) = demo::echo_example();
    let version = cp.set_config(config);
    let node = "grpcio-echo-example";
    grpcio_targets(addr, node, &[target], 1, 3).await;
    assert_acked_everything(&cp, node, &version, "examples/config/echo.yaml");

    // The Kubernetes scenarios (placeholder endpoints: the calls fail, quickly).
    for (name, config) in demo::k8s_scenarios() {
        let version = cp.set_config(config);
        let node = format!("grpcio-k8s-{version}");
        grpcio_targets(addr, &node, &demo::TARGETS[..2], 1, 1).await;
        assert_acked_everything(&cp, &node, &version, &name);
    }
}

/// istiod's persistent-session shapes (`support::istiod`): the stateful session filter
/// prepended to the listener's filters and the cluster's `override_host_status`. gRPC C-core
/// (gRFC A55) ACKs the cookie shape and routes; it NACKs the header shape ("unsupported
/// session state type": A55 specifies cookies only), which Envoy and this mesh
/// (`tests/stateful_session.rs`) accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_c_core_accepts_istiods_persistent_session_shapes() {
    use envoy_types::pb::envoy::{
        config::core::v3::{HealthStatus, HealthStatusSet},
        extensions::filters::network::http_connection_manager::v3::HttpConnectionManager,
    };
    use prost::Message;
    use support::istiod::{PersistentSession, stateful_session_filter};

    python();
    let (cp, addr, _) = start().await;
    for session in [
        PersistentSession::Cookie("sticky:/echo.Echo".into()),
        PersistentSession::Header("x-session".into()),
    ] {
        let (version, observed) = with_resources(&cp, addr, |r| {
            for l in &mut r.listeners {
                let any = l
                    .api_listener
                    .as_mut()
                    .unwrap()
                    .api_listener
                    .as_mut()
                    .unwrap();
                let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
                hcm.http_filters
                    .insert(0, stateful_session_filter(&session));
                any.value = hcm.encode_to_vec();
            }
            for c in &mut r.clusters {
                c.common_lb_config
                    .get_or_insert_with(Default::default)
                    .override_host_status = Some(HealthStatusSet {
                    statuses: vec![
                        HealthStatus::Healthy.into(),
                        HealthStatus::Draining.into(),
                        HealthStatus::Unknown.into(),
                        HealthStatus::Degraded.into(),
                    ],
                });
            }
        })
        .await;
        if let PersistentSession::Header(_) = session {
            assert_eq!(observed.by_status.get("OK"), None, "{observed:?}");
            assert!(
                cp.nacks()
                    .iter()
                    .any(|n| n.error.contains("unsupported session state type")),
                "{:#?}",
                cp.nacks()
            );
            continue;
        }
        assert_eq!(
            observed.by_status.get("OK"),
            Some(&2),
            "{session:?}: {observed:?}"
        );
        assert_acked_everything(&cp, "grpcio-interop", &version, &format!("{session:?}"));
    }
}
