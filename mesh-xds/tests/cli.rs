//! The `mesh-xds` binary: `check` (exit codes, diagnostics with paths, `--explain`) and
//! `serve` (serves over ADS, pushes edits, keeps the last good config on a bad edit).

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::StreamExt;
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

const BIN: &str = env!("CARGO_BIN_EXE_mesh-xds");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mesh-core/tests/fixtures")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-xds-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn check_accepts_valid_files() {
    let services = fixture("bookinfo-services.yaml");
    let canary = fixture("canary.yaml");
    let o = run(&[
        "check",
        services.to_str().unwrap(),
        canary.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).contains("ok: 2 listener(s), 7 cluster(s), 0 warning(s)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn check_reports_errors_with_their_path_and_fails() {
    let dir = temp_dir("bad");
    let bad = dir.join("bad.yaml");
    let text = std::fs::read_to_string(fixture("canary.yaml")).unwrap();
    std::fs::write(&bad, text.replace("weight: 10", "weigth: 10")).unwrap();
    let services = fixture("bookinfo-services.yaml");
    let o = run(&["check", services.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = stdout(&o);
    assert!(
        out.contains("bad.yaml: document 1 (VirtualService reviews): spec.http[0].route[1].weigth: unknown field `weigth` (did you mean `weight`?)"),
        "{out}"
    );
    assert!(out.contains("1 error(s)"), "{out}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_prints_warnings_and_still_succeeds() {
    // A field a proxyless mesh cannot act on is kept and reported.
    let dir = temp_dir("warnings");
    let rule = dir.join("rule.yaml");
    let text = std::fs::read_to_string(fixture("destination-policies.yaml")).unwrap();
    let upgraded = text.replace(
        "        maxRetries: 5\n",
        "        maxRetries: 5\n        h2UpgradePolicy: UPGRADE\n",
    );
    assert_ne!(upgraded, text);
    std::fs::write(&rule, upgraded).unwrap();
    let o = run(&["check", rule.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(
        out.contains("warning: ") && out.contains("h2UpgradePolicy"),
        "{out}"
    );
    assert!(
        !out.contains("maxConnections"),
        "enforced, not reported: {out}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn explain_shows_route_clusters_weights_and_policies() {
    let services = fixture("bookinfo-services.yaml");
    let routing = fixture("header-routing.yaml");
    let explain = |headers: &str| {
        run(&[
            "check",
            services.to_str().unwrap(),
            routing.to_str().unwrap(),
            "--explain",
            &format!("GET http://reviews.default.svc.cluster.local:9080/reviews/1{headers}"),
        ])
    };
    let jason = explain(" -H end-user:jason");
    assert!(jason.status.success(), "{jason:?}");
    let out = stdout(&jason);
    assert!(out.contains("route:        #0"), "{out}");
    assert!(
        out.contains(
            "cluster outbound|9080|v2|reviews.default.svc.cluster.local weight 100 (100.0 %)"
        ),
        "{out}"
    );
    for policy in [
        "timeout:",
        "retries:",
        "fault:",
        "lb:",
        "breaker:",
        "outlier detection:",
    ] {
        assert!(out.contains(policy), "{policy} missing: {out}");
    }
    let other = stdout(&explain(" -H end-user:mary"));
    assert!(other.contains("route:        #1"), "{other}");
    assert!(other.contains("|v1|reviews"), "{other}");
}

#[test]
fn explain_prints_the_ejection_cap_for_the_clusters_current_size() {
    let dir = temp_dir("ejection-cap");
    let services = dir.join("services.yaml");
    let text = std::fs::read_to_string(fixture("bookinfo-services.yaml")).unwrap();
    let with_outlier = text.replace(
        "  host: reviews\n  subsets:\n",
        "  host: reviews\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 5}\n  subsets:\n",
    );
    assert_ne!(with_outlier, text);
    std::fs::write(&services, with_outlier).unwrap();
    let o = run(&[
        "check",
        services.to_str().unwrap(),
        "--explain",
        "GET http://reviews.default.svc.cluster.local:9080/reviews/1",
    ]);
    assert!(o.status.success(), "{o:?}");
    // Istio's default 10 % of three endpoints rounds to zero; Envoy ejects one anyway.
    let out = stdout(&o);
    assert!(
        out.contains("max ejection 10% (Envoy's rule: at least one): at most 1 of 3 endpoints"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn explain_says_what_istiod_would_send_a_grpc_client_and_what_it_would_drop() {
    let dir = temp_dir("explain-grpc");
    let yaml = dir.join("httpbin.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin.default.svc.cluster.local]
  ports: [{number: 8000, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.2.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: default}
spec:
  host: httpbin.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool:
      tcp: {maxConnections: 100, tcpKeepalive: {time: 600s, probes: 3}}
      http: {http2MaxRequests: 1000, maxRetries: 5, maxRequestsPerConnection: 10}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5m}
",
    )
    .unwrap();
    let out = run(&[
        "check",
        yaml.to_str().unwrap(),
        "--explain",
        "GET http://httpbin.default.svc.cluster.local:8000/get",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = stdout(&out);
    for line in [
        "sent to a gRPC client (as istiod sends it):",
        "circuit breaker: max requests 1000 (http2MaxRequests)",
        "load balancer: least request of 2, as load_balancing_policy",
        "dropped for a gRPC client (sent only with `serve --mesh-extensions`):",
        "connection-pool limits other than http2MaxRequests: maxConnections 100, maxRetries 5, \
         maxRequestsPerConnection 10, tcpKeepalive",
        "outlierDetection",
        // What the mesh itself enforces on the cluster's connections.
        "breaker: max connections 100,",
        "connections: 10 requests each, idle timeout 3600s, tcp keepalive time 600s, \
         interval system default, probes 3",
    ] {
        assert!(out.contains(line), "{line} missing: {out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn explain_of_an_unknown_target_says_what_the_workloads_sidecar_does_with_it() {
    let services = fixture("bookinfo-services.yaml");
    let explain = |extra: &[&str]| {
        let mut args = vec![
            "check",
            services.to_str().unwrap(),
            "--explain",
            "GET http://nowhere:1/",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    // No Sidecar: Istio's default, ALLOW_ANY, passes it through.
    let o = explain(&[]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        stdout(&o).contains(
            "sidecar:      none: every service is visible (outboundTrafficPolicy ALLOW_ANY)"
        ) && stdout(&o).contains("pass through to nowhere:1 by DNS (ALLOW_ANY)"),
        "{}",
        stdout(&o)
    );

    // A Sidecar for `app: web` in `default` importing nothing of `default`, REGISTRY_ONLY.
    let dir = temp_dir("explain-sidecar");
    let sidecar = dir.join("sidecar.yaml");
    std::fs::write(
        &sidecar,
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: web}
spec:
  workloadSelector: {labels: {app: web}}
  egress:
  - hosts: [istio-system/*]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
",
    )
    .unwrap();
    let refused = run(&[
        "check",
        services.to_str().unwrap(),
        sidecar.to_str().unwrap(),
        "--label",
        "app=web",
        "--explain",
        "GET http://reviews:9080/",
    ]);
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    let out = stdout(&refused);
    assert!(
        out.contains("sidecar:      default/web (outboundTrafficPolicy REGISTRY_ONLY)")
            && out.contains("not visible:  ")
            && out.contains("target `reviews:9080` is not imported by its egress hosts or not exported to namespace `default`: refused by outboundTrafficPolicy REGISTRY_ONLY of Sidecar default/web"),
        "{out}"
    );
    // Another workload of the namespace is not selected.
    let other = run(&[
        "check",
        services.to_str().unwrap(),
        sidecar.to_str().unwrap(),
        "--label",
        "app=api",
        "--explain",
        "GET http://reviews.default.svc.cluster.local:9080/",
    ]);
    assert_eq!(other.status.code(), Some(0), "{other:?}");

    let bad = run(&["check", services.to_str().unwrap(), "--explain", "nonsense"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}

/// A child process killed when dropped, with its stdout lines on a channel.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    /// The next line containing `needle`; 20 s bound a hang, they are not a wait.
    fn expect(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no line containing `{needle}`"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number of listeners an ADS wildcard LDS request to `addr` returns.
fn listeners_served(addr: &str) -> usize {
    first_response(addr, mesh_xds::encode::LISTENER_TYPE)
        .resources
        .len()
}

/// The first response to an ADS wildcard request of `type_url` to `addr`.
fn first_response(
    addr: &str,
    type_url: &str,
) -> envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse {
    use envoy_types::pb::envoy::service::discovery::v3::{
        DiscoveryRequest, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let request = DiscoveryRequest {
            type_url: type_url.into(),
            ..DiscoveryRequest::default()
        };
        // The request stream stays open (pending) so the server does not end the stream.
        let requests = futures::stream::iter([request]).chain(futures::stream::pending());
        let mut responses = client
            .stream_aggregated_resources(requests)
            .await
            .unwrap()
            .into_inner();
        let r = tokio::time::timeout(Duration::from_secs(20), responses.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.version_info, "1");
        r
    })
}

/// Starts `mesh-xds serve` with `args` on a free port; returns it and its address.
fn serve(args: &[&str]) -> (Server, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let server = Server { child, lines };
    let first = server.expect("serving ADS on 127.0.0.1:");
    let addr = first
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    (server, addr)
}

#[test]
fn serve_sends_istiods_shapes_and_the_extensions_only_when_asked() {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use prost::Message;
    let dir = temp_dir("serve-shapes");
    let yaml = dir.join("httpbin.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin.default.svc.cluster.local]
  ports: [{number: 8000, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.2.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: default}
spec:
  host: httpbin.default.svc.cluster.local
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 7, interval: 5m}
",
    )
    .unwrap();
    let outlier = |args: &[&str]| {
        let (server, addr) = serve(args);
        let r = first_response(&addr, mesh_xds::encode::CLUSTER_TYPE);
        drop(server);
        let clusters: Vec<Cluster> = r
            .resources
            .iter()
            .map(|a| Cluster::decode(a.value.as_slice()).unwrap())
            .collect();
        assert_eq!(clusters.len(), 1);
        clusters[0].outlier_detection.is_some()
    };
    let config = yaml.to_str().unwrap();
    assert!(!outlier(&["--config", config]), "istiod does not send it");
    assert!(outlier(&["--config", config, "--mesh-extensions"]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn serve_pushes_edits_and_keeps_the_last_good_config_on_a_bad_one() {
    let dir = temp_dir("serve");
    let services = fixture("bookinfo-services.yaml");
    let split = dir.join("split.yaml");
    let canary = std::fs::read_to_string(fixture("canary.yaml")).unwrap();
    std::fs::write(&split, &canary).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--config",
            services.to_str().unwrap(),
            "--config",
            split.to_str().unwrap(),
            "--port",
            "0",
            "--poll-ms",
            "50",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let server = Server { child, lines };
    let first = server.expect("serving ADS on 127.0.0.1:");
    assert!(
        first.contains("version 1, 2 listener(s), 7 cluster(s)"),
        "{first}"
    );
    let addr = first
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    assert_eq!(listeners_served(&addr), 2);

    std::fs::write(&split, canary.replace("weight: 10", "weigth: 10")).unwrap();
    server.expect("rejected edit, still serving the last good configuration");
    let why = server.expect("unknown field `weigth`");
    assert!(why.contains("spec.http[0].route[1].weigth"), "{why}");

    std::fs::write(
        &split,
        canary
            .replace("weight: 90", "weight: 50")
            .replace("weight: 10", "weight: 50"),
    )
    .unwrap();
    let pushed = server.expect("pushed version");
    assert!(pushed.contains("pushed version 2"), "{pushed}");
    drop(server);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn serve_refuses_to_start_on_a_bad_file_and_says_why() {
    let dir = temp_dir("serve-bad");
    let bad = dir.join("bad.yaml");
    let text = std::fs::read_to_string(fixture("canary.yaml")).unwrap();
    std::fs::write(&bad, text.replace("weight: 10", "weigth: 10")).unwrap();
    let services = fixture("bookinfo-services.yaml");
    let o = run(&[
        "serve",
        "--config",
        services.to_str().unwrap(),
        "--config",
        bad.to_str().unwrap(),
        "--port",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml: document 1 (VirtualService reviews)"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn explain_names_the_virtual_service_and_destination_rule_istiod_picks_for_the_namespace() {
    let dir = temp_dir("explain-precedence");
    let yaml = dir.join("billing.yaml");
    let mut text = String::from(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: billing, namespace: finance}
spec:
  hosts: [billing.finance.svc.cluster.local]
  ports: [{number: 9080, name: grpc}]
  resolution: STATIC
  endpoints: [{address: 10.0.2.1}]
",
    );
    for ns in ["finance", "prod"] {
        text.push_str(&format!(
            "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: billing, namespace: {ns}}}
spec:
  host: billing.finance.svc.cluster.local
  exportTo: [.]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: billing, namespace: {ns}}}
spec:
  hosts: [billing.finance.svc.cluster.local]
  exportTo: [.]
  http: [{{route: [{{destination: {{host: billing.finance.svc.cluster.local}}}}]}}]
"
        ));
    }
    std::fs::write(&yaml, text).unwrap();
    let explain = |namespace: &str| {
        let out = run(&[
            "check",
            yaml.to_str().unwrap(),
            "--namespace",
            namespace,
            "--explain",
            "GET http://billing.finance.svc.cluster.local:9080/",
        ]);
        assert!(out.status.success(), "{out:?}");
        stdout(&out)
    };
    let prod = explain("prod");
    assert!(
        prod.contains(
            "routed by:    billing.finance.svc.cluster.local:9080: VirtualService prod/billing"
        ),
        "{prod}"
    );
    assert!(
        prod.contains("DestinationRule for namespace prod: prod/billing"),
        "{prod}"
    );
    let web = explain("web");
    assert!(web.contains("VirtualService none (default route)"), "{web}");
    assert!(
        web.contains("DestinationRule for namespace web: none applies"),
        "{web}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
