//! gRPC's Node.js xDS client (grpc-js with grpc-js-xds) against this control plane: it must
//! ACK everything served in the default (istiod) shape for every configuration of the demo
//! (reaching the echo servers behind them on 127.0.0.1) and the repository's Istio examples
//! (`examples/config/echo.yaml`, `examples/k8s/scenarios`).
//!
//! Needs node and the packages `scripts/node-env` installs in `target/node` (`scripts/test`
//! runs it first). Without them the test fails and says so; it never skips.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use mesh_core::MeshConfig;
use mesh_test_support as support;
use mesh_xds::{encode, server::ControlPlane};
use support::{
    demo,
    echo::{Behavior, spawn_echo},
    interop::{client_bootstrap, node_modules, repo_root},
};

/// What grpcjs_client.js observed.
#[derive(Debug, serde::Deserialize)]
struct Observed {
    by_status: HashMap<String, u32>,
    #[allow(dead_code)] // Printed with the rest when an assertion fails.
    errors: HashMap<String, String>,
}

/// Runs one call to each of `targets` in turn through grpc-js-xds, as node `node`, each
/// bounded by `timeout_secs` (the first waits for xDS).
async fn grpcjs_targets(
    control_plane: SocketAddr,
    node: &str,
    targets: &[&str],
    timeout_secs: u32,
) -> Observed {
    let bootstrap = client_bootstrap(control_plane, node);
    let script = repo_root().join("mesh-xds/tests/interop/grpcjs_client.js");
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .args(targets.iter().map(|t| format!("xds:///{t}")))
        .args(["--calls", "1", "--timeout", &timeout_secs.to_string()])
        .env("NODE_PATH", node_modules())
        .env("GRPC_XDS_BOOTSTRAP_CONFIG", bootstrap.to_string())
        .env_remove("GRPC_XDS_BOOTSTRAP")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("grpcjs_client.js did not finish within 120 s")
        .unwrap_or_else(|e| panic!("running node (Node 18 or newer must be installed): {e}"));
    assert!(
        output.status.success(),
        "grpcjs_client.js failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "grpcjs_client.js printed no result ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Echo servers where the demo's instances would be.
async fn demo_addresses() -> demo::Addresses {
    let echo = |name: &'static str| async move { spawn_echo(name, Behavior::default()).await.addr };
    demo::Addresses {
        reviews: [echo("v1").await, echo("v2").await, echo("v3").await],
        ratings: [echo("v1").await, echo("v1").await],
        productpage: echo("v1").await,
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

async fn serve(cp: &ControlPlane) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = cp.clone();
    tokio::spawn(async move { server.serve(listener).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_acks_everything_served_for_the_demo_configurations() {
    node_modules(); // Fail first, and clearly, when the packages are missing.
    let at = demo_addresses().await;
    let cp = ControlPlane::new(MeshConfig::empty());
    let addr = serve(&cp).await;

    for (name, scenario) in demo::scenarios() {
        let version = cp.set_config(demo::config(&at, &scenario));
        let node = format!("grpcjs-demo-{version}");
        let observed = grpcjs_targets(addr, &node, &demo::TARGETS, 10).await;
        assert_acked_everything(&cp, &node, &version, &name);
        // Every target resolved and reached an echo server (a fault may fail the call).
        assert!(
            !observed.by_status.contains_key("DEADLINE_EXCEEDED"),
            "{name}: {observed:?}"
        );
    }

    let (config, target) = demo::echo_example();
    let version = cp.set_config(config);
    let node = "grpcjs-echo-example";
    grpcjs_targets(addr, node, &[target], 3).await;
    assert_acked_everything(&cp, node, &version, "examples/config/echo.yaml");

    // The Kubernetes scenarios (placeholder endpoints: the calls fail, quickly).
    for (name, config) in demo::k8s_scenarios() {
        let version = cp.set_config(config);
        let node = format!("grpcjs-k8s-{version}");
        grpcjs_targets(addr, &node, &demo::TARGETS[..2], 1).await;
        assert_acked_everything(&cp, &node, &version, &name);
    }
}
