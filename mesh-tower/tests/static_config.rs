//! Istio YAML files as the mesh's configuration, end to end: `Mesh::from_istio_yaml` and
//! `mesh.channel` against real tonic servers on 127.0.0.1.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use mesh_test_support::echo as support;
use mesh_tower::Mesh;
use support::*;

/// A fresh directory for one test's files.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-e2e-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes then renames, as editors and ConfigMap updates do.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// About 3 MiB of valid YAML that is not policy: slow to parse, within the loader's limits.
fn filler() -> String {
    let mut text =
        String::from("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: filler}\ndata:\n");
    for i in 0..60_000 {
        text.push_str(&format!("  k{i}: [a, b, {{c: d}}, e, f]\n"));
    }
    text
}

/// On a current-thread runtime, the watcher parses a large edit while requests keep being
/// answered: parsing runs on the blocking pool, not on the runtime.
#[tokio::test]
async fn requests_are_served_promptly_while_a_large_edit_is_parsed() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let dir = temp_dir("large-edit");
    let path = dir.join("mesh.yaml");
    let services = services_yaml(&[("v1", v1.addr)]);
    write(&path, &services);
    let (mesh, watch) = Mesh::from_istio_yaml(&[&path], Duration::from_millis(20)).unwrap();
    let mut client = EchoClient::new(mesh.channel(TARGET));
    client.say(request("warm up")).await.unwrap();

    let parse_started = Instant::now();
    let parsed = mesh_tower::mesh_core::istio::load_str("x", &format!("{services}{}", filler()));
    let parse_takes = parse_started.elapsed();
    assert!(parsed.is_ok());

    write(&path, &format!("{services}{}", filler()));
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut calls = 0;
    while watch.status().reloads == 0 && started.elapsed() < Duration::from_secs(60) {
        let call = Instant::now();
        client.say(request("during the parse")).await.unwrap();
        slowest = slowest.max(call.elapsed());
        calls += 1;
    }
    assert_eq!(watch.status().reloads, 1, "{:?}", watch.status());
    eprintln!("parse takes {parse_takes:?}; {calls} calls, slowest {slowest:?}");
    assert!(
        calls >= 5,
        "only {calls} calls during a {parse_takes:?} parse"
    );
    assert!(
        slowest < parse_takes / 4,
        "a call waited {slowest:?} during a {parse_takes:?} parse"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sends `n` calls and counts them by the server that answered.
async fn count_by_server(
    client: &mut EchoClient<mesh_tower::Channel>,
    n: usize,
) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for i in 0..n {
        let reply = client.say(request(&i.to_string())).await.unwrap();
        *counts.entry(reply.into_inner().served_by).or_default() += 1;
    }
    counts
}

/// Loads `yaml` through a file, as an operator would.
fn mesh_from_file(test: &str, yaml: &str) -> (Mesh, mesh_tower::ConfigWatch, PathBuf) {
    let dir = temp_dir(test);
    let path = dir.join("mesh.yaml");
    write(&path, yaml);
    let (mesh, watch) = Mesh::from_istio_yaml(&[&path], Duration::from_secs(3600))
        .unwrap_or_else(|e| panic!("{e}"));
    (mesh, watch, dir)
}

/// Weights are relative: 3 and 1 split three to one.
#[tokio::test]
async fn weights_that_do_not_sum_to_100_split_proportionally() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let v2 = spawn_echo("v2", Behavior::default()).await;
    let yaml = format!(
        "{}---\n{}",
        services_yaml(&[("v1", v1.addr), ("v2", v2.addr)]),
        virtual_service(&format!(
            "  - route:
    - destination: {{host: {HOST}, subset: v1}}
      weight: 3
    - destination: {{host: {HOST}, subset: v2}}
      weight: 1
"
        ))
    );
    let (mesh, _watch, dir) = mesh_from_file("relative-weights", &yaml);
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let counts = count_by_server(&mut client, 2_000).await;
    let share_v1 = counts.get("v1").copied().unwrap_or(0) as f64 / 2_000.0;
    assert!(
        (share_v1 - 0.75).abs() <= 0.04,
        "v1 got {share_v1}: {counts:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `withoutHeaders: {x-canary: {}}` routes requests without the header; the others fall
/// through to the next route.
#[tokio::test]
async fn without_headers_with_an_empty_match_selects_requests_lacking_the_header() {
    let v1 = spawn_echo("v1", Behavior::default()).await;
    let v2 = spawn_echo("v2", Behavior::default()).await;
    let yaml = format!(
        "{}---\n{}",
        services_yaml(&[("v1", v1.addr), ("v2", v2.addr)]),
        virtual_service(&format!(
            "  - match:
    - withoutHeaders:
        x-canary: {{}}
    route:
    - destination: {{host: {HOST}, subset: v1}}
  - route:
    - destination: {{host: {HOST}, subset: v2}}
"
        ))
    );
    let (mesh, _watch, dir) = mesh_from_file("without-headers", &yaml);
    let mut client = EchoClient::new(mesh.channel(TARGET));
    let plain = client.say(request("plain")).await.unwrap().into_inner();
    assert_eq!(plain.served_by, "v1");
    let mut canary = request("canary");
    canary
        .metadata_mut()
        .insert("x-canary", "yes".parse().unwrap());
    let canary = client.say(canary).await.unwrap().into_inner();
    assert_eq!(canary.served_by, "v2");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A Kubernetes Service and EndpointSlice for `name` whose one endpoint is `addr`.
fn kube_service(name: &str, namespace: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: grpc, port: 50051, targetPort: grpc, appProtocol: grpc}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-x1
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: grpc, port: {port}, protocol: TCP}}]
endpoints:
- addresses: [\"{ip}\"]
  conditions: {{ready: true}}
",
        port = addr.port(),
        ip = addr.ip()
    )
}

/// Istio's documentation routes between Kubernetes Services: a VirtualService on `greeter`
/// sends beta users to the `greeter-beta` Service, everyone else to `greeter`.
#[tokio::test]
async fn kubernetes_services_and_endpoint_slices_are_the_registry() {
    let stable = spawn_echo("stable", Behavior::default()).await;
    let beta = spawn_echo("beta", Behavior::default()).await;
    let yaml = format!(
        "{}---\n{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter}}
spec:
  hosts: [greeter]
  http:
  - match:
    - headers: {{x-beta: {{exact: \"1\"}}}}
    route:
    - destination: {{host: greeter-beta}}
  - route:
    - destination: {{host: greeter}}
",
        kube_service("greeter", "default", stable.addr),
        kube_service("greeter-beta", "default", beta.addr),
    );
    let (mesh, _watch, dir) = mesh_from_file("kubernetes", &yaml);
    let mut client = EchoClient::new(mesh.channel("greeter.default.svc.cluster.local:50051"));
    let plain = client.say(request("plain")).await.unwrap().into_inner();
    assert_eq!(plain.served_by, "stable");
    let mut beta_user = request("beta");
    beta_user
        .metadata_mut()
        .insert("x-beta", "1".parse().unwrap());
    let reply = client.say(beta_user).await.unwrap().into_inner();
    assert_eq!(reply.served_by, "beta");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Short and namespace-qualified names resolve as Kubernetes DNS search would for a workload
/// in the channel's namespace (`default` unless set).
#[tokio::test]
async fn short_and_namespace_qualified_targets_resolve_like_kubernetes_dns() {
    let default_ns = spawn_echo("default", Behavior::default()).await;
    let prod_ns = spawn_echo("prod", Behavior::default()).await;
    let yaml = format!(
        "{}---\n{}",
        kube_service("greeter", "default", default_ns.addr),
        kube_service("greeter", "prod", prod_ns.addr),
    );
    let (mesh, _watch, dir) = mesh_from_file("short-names", &yaml);
    for (target, served_by) in [
        ("greeter:50051", "default"),
        ("greeter.default:50051", "default"),
        ("greeter.prod:50051", "prod"),
        ("greeter.prod.svc:50051", "prod"),
        ("greeter.prod.svc.cluster.local:50051", "prod"),
    ] {
        let mut client = EchoClient::new(mesh.channel(target));
        let reply = client
            .say(request(target))
            .await
            .unwrap_or_else(|e| panic!("{target}: {e}"))
            .into_inner();
        assert_eq!(reply.served_by, served_by, "{target}");
    }
    std::fs::remove_dir_all(&dir).unwrap();

    // A workload in `prod` reaches its own namespace's service by its short name.
    let (mesh, _watch, dir) = mesh_from_file("short-names-prod", &yaml);
    assert!(mesh.set_local_namespace("prod").is_ok());
    let mut client = EchoClient::new(mesh.channel("greeter:50051"));
    let reply = client.say(request("short")).await.unwrap().into_inner();
    assert_eq!(reply.served_by, "prod");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A VirtualService alone: its host has no registry entry, so it is resolved through DNS on
/// the port its destination names, as a plain gRPC channel would; the file loads with a
/// warning.
#[tokio::test]
async fn a_virtual_service_alone_resolves_its_host_through_dns() {
    let server = spawn_echo("dns", Behavior::default()).await;
    let port = server.addr.port();
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: local}}
spec:
  hosts: [\"127.0.0.1\"]
  http:
  - route:
    - destination:
        host: \"127.0.0.1\"
        port: {{number: {port}}}
"
    );
    let (mesh, watch, dir) = mesh_from_file("dns-fallback", &yaml);
    let warnings = watch.status().warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("resolved through DNS on port")),
        "{warnings:?}"
    );
    let mut client = EchoClient::new(mesh.channel(format!("127.0.0.1:{port}")));
    let reply = client.say(request("hello")).await.unwrap().into_inner();
    assert_eq!(reply.served_by, "dns");
    std::fs::remove_dir_all(&dir).unwrap();
}
