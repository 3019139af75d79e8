//! The admin endpoint against a mesh that has served real traffic on 127.0.0.1: `/clusters`
//! shows an endpoint ejected by outlier detection, `/metrics` is OpenMetrics text (for a
//! Prometheus server) or the Prometheus text format (for anything else) with the request counts
//! and the ejection, `/config_dump` shows the configuration and extensions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::{Router, routing::get};
use mesh_test_support::echo as support;
use mesh_test_support::metrics::{samples, sum};
use mesh_test_support::server as server_support;
use mesh_tower::{
    Discovery, Mesh, MeshMetrics, UnreadyTarget, Workload,
    admin::{self, Admin, ConfigDumpExtension},
};
use prometheus_client::registry::Registry;
use server_support::{http_call, http_client};
use support::*;

#[derive(Debug)]
struct XdsStatus;

impl ConfigDumpExtension for XdsStatus {
    fn name(&self) -> &str {
        "xds"
    }
    fn dump(&self) -> serde_json::Value {
        serde_json::json!({ "clusters": { "version": "7", "status": "ACKED" } })
    }
}

const CLUSTER: &str = "outbound|50051||echo.default.svc.cluster.local";

#[tokio::test]
async fn the_admin_endpoint_shows_an_ejected_endpoint_metrics_and_the_config() {
    let good = spawn_echo("good", Behavior::default()).await;
    let bad = spawn_echo(
        "bad",
        Behavior {
            fail: Some((1, 1)),
            ..Behavior::default()
        },
    )
    .await;
    let yaml = services_yaml(&[("good", good.addr), ("bad", bad.addr)]).replace(
        "  subsets:\n",
        "  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 3, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  subsets:\n",
    );
    let no_retries = no_retries();
    let mesh = Mesh::new(config(&format!("{yaml}---\n{no_retries}")));
    let mut registry = Registry::default();
    let workload = Workload::new("default", "frontend.default.svc.cluster.local", 8080);
    MeshMetrics::install(&mesh, &mut registry, &workload).unwrap();
    let registry = Arc::new(registry);

    let mut client = EchoClient::new(mesh.channel(TARGET));
    let mut failures = 0;
    for _ in 0..20 {
        failures += usize::from(client.say(request("hi")).await.is_err());
    }
    assert_eq!(failures, 3, "ejected after three consecutive failures");

    // On a side port.
    let side = admin::serve(
        "127.0.0.1:0".parse().unwrap(),
        Admin::new(&mesh, registry.clone())
            .with_extension(Arc::new(XdsStatus))
            .router(),
    )
    .await
    .unwrap();
    let http = http_client();
    let (status, body) = http_call(&http, side.local_addr(), "GET", "/clusters", &[]).await;
    assert_eq!(status, 200);
    let clusters: serde_json::Value = serde_json::from_str(&body).unwrap();
    let echo = clusters["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == CLUSTER)
        .expect("the echo cluster");
    let endpoint = |addr: std::net::SocketAddr| {
        echo["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["address"] == addr.to_string())
            .cloned()
            .unwrap()
    };
    assert_eq!(endpoint(bad.addr)["ejected"], true, "{echo}");
    assert_eq!(endpoint(good.addr)["ejected"], false, "{echo}");
    assert_eq!(endpoint(good.addr)["health"], "UNKNOWN");
    assert_eq!(endpoint(good.addr)["active_requests"], 0);
    assert_eq!(echo["ejections"], 1);
    assert_eq!(echo["overflows"], 0);

    // What a Prometheus server asks for.
    let openmetrics = "application/openmetrics-text;version=1.0.0,\
        application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (content_type, text) = get_metrics(&http, side.local_addr(), Some(openmetrics)).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"));
    samples(&text); // every line is well-formed
    let cluster = [("cluster_name", CLUSTER)];
    assert_eq!(
        sum(
            &text,
            "mesh_cluster_outlier_detection_ejections_total",
            &cluster
        ),
        1.0
    );
    assert_eq!(
        sum(
            &text,
            "mesh_cluster_outlier_detection_ejections_active",
            &cluster
        ),
        1.0
    );
    assert_eq!(sum(&text, "mesh_cluster_endpoints", &cluster), 2.0);
    assert_eq!(sum(&text, "istio_requests_total", &[]), 20.0);
    assert_eq!(
        sum(
            &text,
            "istio_requests_total",
            &[("grpc_response_status", "14")]
        ),
        3.0
    );

    // An independent OpenMetrics parser (Python's prometheus_client) accepts it and counts
    // the same.
    let parsed = python_openmetrics(&text);
    assert_eq!(parsed["istio_requests"], 20.0, "{parsed}");
    assert_eq!(
        parsed["mesh_cluster_outlier_detection_ejections"], 1.0,
        "{parsed}"
    );

    // Without an `Accept` header (promtool, curl): the Prometheus text format, which Python's
    // text-format parser reads with the same counts.
    let (content_type, text) = get_metrics(&http, side.local_addr(), None).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE istio_requests_total counter\n"),
        "{text}"
    );
    let parsed = python_text_format(&text);
    assert_eq!(parsed["istio_requests"], 20.0, "{parsed}");
    assert_eq!(
        parsed["mesh_cluster_outlier_detection_ejections"], 1.0,
        "{parsed}"
    );

    let (status, body) = http_call(&http, side.local_addr(), "GET", "/config_dump", &[]).await;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["extensions"]["xds"]["clusters"]["status"], "ACKED");
    // Off by default, and shown: callers can neither inject faults nor change timeouts.
    assert_eq!(
        dump["request_controls"],
        serde_json::json!({"header_faults": null, "trust_override_headers": false})
    );
    let names: Vec<_> = dump["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&CLUSTER.to_owned()), "{names:?}");
    assert!(
        dump["listeners"][0]["target"]
            .as_str()
            .unwrap()
            .starts_with(HOST),
        "{dump}"
    );

    // Mounted in an application's router.
    let app: Router = Router::new()
        .route("/", get(|| async { "app" }))
        .merge(admin::router(&mesh, registry));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    assert_eq!(
        http_call(&http, addr, "GET", "/", &[]).await,
        (200, "app".into())
    );
    let (status, body) = http_call(&http, addr, "GET", "/clusters", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains(CLUSTER));
}

/// A discovery source whose unready targets the test sets.
#[derive(Clone, Debug, Default)]
struct Targets(Arc<Mutex<Vec<UnreadyTarget>>>);

impl Discovery for Targets {
    fn watch(&self, _: &str) {}
    fn is_pending(&self, _: &str) -> bool {
        false
    }
    fn unready_targets(&self) -> Vec<UnreadyTarget> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn ready_waits_for_every_watched_target_and_healthz_answers() {
    let http = http_client();
    // Without a discovery source the static configuration is all there is: ready.
    let mesh = Mesh::new(config(""));
    let side = admin::serve(
        "127.0.0.1:0".parse().unwrap(),
        admin::router(&mesh, Arc::new(Registry::default())),
    )
    .await
    .unwrap();
    assert_eq!(
        http_call(&http, side.local_addr(), "GET", "/ready", &[])
            .await
            .0,
        200
    );
    assert_eq!(
        http_call(&http, side.local_addr(), "GET", "/healthz", &[]).await,
        (200, "ok\n".into())
    );

    let targets = Targets::default();
    *targets.0.lock().unwrap() = vec![UnreadyTarget {
        target: TARGET.into(),
        reason: "waiting for Cluster outbound|50051||echo".into(),
    }];
    let mesh = Mesh::new(config(""));
    assert!(mesh.set_discovery(Arc::new(targets.clone())).is_ok());
    let side = admin::serve(
        "127.0.0.1:0".parse().unwrap(),
        admin::router(&mesh, Arc::new(Registry::default())),
    )
    .await
    .unwrap();
    let (status, body) = http_call(&http, side.local_addr(), "GET", "/ready", &[]).await;
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["waiting"][0]["target"], TARGET, "{body}");
    assert_eq!(
        body["waiting"][0]["reason"], "waiting for Cluster outbound|50051||echo",
        "{body}"
    );
    assert_eq!(
        http_call(&http, side.local_addr(), "GET", "/healthz", &[])
            .await
            .0,
        200
    );

    targets.0.lock().unwrap().clear();
    assert_eq!(
        http_call(&http, side.local_addr(), "GET", "/ready", &[])
            .await
            .0,
        200
    );
}

/// `GET /metrics` with `accept` as the `Accept` header: the content type and the body.
async fn get_metrics(
    http: &server_support::HttpClient,
    addr: std::net::SocketAddr,
    accept: Option<&str>,
) -> (String, String) {
    use http_body_util::BodyExt;
    let mut request = http::Request::get(format!("http://{addr}/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = http
        .request(
            request
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["vary"], "accept");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (content_type, String::from_utf8(body.to_vec()).unwrap())
}

/// Parses `text` with prometheus_client's strict OpenMetrics parser (from the virtualenv
/// `scripts/python-env` makes) and returns, per family, the sum of its `_total` samples.
fn python_openmetrics(text: &str) -> serde_json::Value {
    python_parse(text, "prometheus_client.openmetrics.parser")
}

/// Like [`python_openmetrics`], with prometheus_client's Prometheus text-format parser.
fn python_text_format(text: &str) -> serde_json::Value {
    python_parse(text, "prometheus_client.parser")
}

fn python_parse(text: &str, parser: &str) -> serde_json::Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("target/py/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `scripts/python-env` (it creates the virtualenv with \
         prometheus-client; `scripts/test` runs it before the tests)",
        python.display()
    );
    let script = format!(
        "import sys, json
from {parser} import text_string_to_metric_families
totals = {{}}
for family in text_string_to_metric_families(sys.stdin.read()):
    totals[family.name] = sum(s.value for s in family.samples if s.name.endswith('_total'))
print(json.dumps(totals))
"
    );
    let mut child = std::process::Command::new(python)
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{parser} rejected /metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
