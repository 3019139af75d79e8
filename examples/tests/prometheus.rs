//! A real Prometheus scrapes the demo's admin endpoints, and the PromQL of Istio's Grafana
//! dashboards (mesh, service, workload) and of Kiali's graph gives back the traffic the test
//! sent: requests per destination version, the success rate with the failures it injected,
//! and a p99 inside the histogram bucket of the slowest call it saw. Prometheus negotiates
//! OpenMetrics; `promtool check metrics` accepts the Prometheus text format every endpoint
//! serves to a scraper that does not ask for OpenMetrics.
//!
//! Needs `prometheus` and `promtool` on the `PATH` (`scripts/prometheus-env` installs Debian's
//! package; `scripts/test` runs it before the tests). Everything listens on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::panic)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::{StreamExt, stream};
use mesh_examples::{
    bookinfo::REVIEWS,
    demo::{AdminEndpoint, Demo, Pace, Policy, xds},
    proto::bookinfo::{ReviewsRequest, reviews_client::ReviewsClient},
};
use mesh_tower::Mesh;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const HOST: &str = "reviews.default.svc.cluster.local";

/// The share of calls v2 gets, in percent.
const CANARY: u32 = 20;
/// The share of calls the client's fault filter aborts with UNAVAILABLE, in percent.
const ABORTED: u32 = 10;
/// The share of calls reviews v1 fails with INTERNAL, in percent (spread evenly).
const V1_FAILS: u32 = 25;
/// How long reviews v2 takes: its calls make the tail of the latency histogram.
const V2_DELAY: Duration = Duration::from_millis(30);
/// Calls measured (after the warm-up).
const CALLS: u32 = 400;

/// Envoy's (Istio's) default histogram bucket bounds, in milliseconds.
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_istio_dashboards_read_the_demo_traffic() {
    let prometheus_bin = tool("prometheus");
    let promtool = tool("promtool");
    let demo = Demo::start(Pace::Quick).await.expect("the demo starts");
    let topology = demo.topology();
    assert_eq!(topology.admin.len(), 7, "{:?}", topology.admin);

    // Canary 80/20 with a client-side fault abort, no retries; v1 fails a known share with a
    // status no retry policy retries, v2 is slow.
    demo.apply(&Policy {
        reviews_http: format!(
            "  - route:\n    \
             - {{destination: {{host: {HOST}, subset: v1}}, weight: {}}}\n    \
             - {{destination: {{host: {HOST}, subset: v2}}, weight: {CANARY}}}\n    \
             retries: {{attempts: 0}}\n    \
             fault: {{abort: {{percentage: {{value: {ABORTED}}}, grpcStatus: UNAVAILABLE}}}}\n",
            100 - CANARY
        ),
        ..Policy::default()
    })
    .await
    .expect("the canary converges");
    topology
        .reviews("v1")
        .unwrap()
        .knobs
        .fail(V1_FAILS, Code::Internal);
    topology.reviews("v2").unwrap().knobs.delay(V2_DELAY);

    // Warm-up: every series the measured traffic touches exists before Prometheus first scrapes
    // it, so `rate` sees all of the measured calls (a series' first sample is its baseline).
    let client_admin = admin(&topology.admin, "demo-client");
    let mut warmup = Tally::default();
    for _ in 0..40 {
        warmup.add(calls(&topology.client, 50).await);
        let series = client_series(&get(client_admin, "/metrics", "").await.1);
        // Answered, failed by v1, aborted on the way to either version (2 % of the calls).
        let wanted = [
            ("v1", "0"),
            ("v1", "13"),
            ("v1", "14"),
            ("v2", "0"),
            ("v2", "14"),
        ];
        if wanted
            .iter()
            .all(|(v, s)| series.contains(&(v.to_string(), s.to_string())))
        {
            break;
        }
    }

    // promtool checks what each endpoint serves to a scraper that does not ask for
    // OpenMetrics: the Prometheus text format. A Prometheus server asks for OpenMetrics (and
    // scrapes it below).
    for endpoint in &topology.admin {
        let (content_type, text) = get(endpoint.address, "/metrics", "").await;
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        promtool_check(&promtool, &endpoint.workload, &text);
        let (content_type, text) =
            get_accepting(endpoint.address, "/metrics", "", PROMETHEUS_ACCEPT).await;
        assert_eq!(
            content_type,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    let prometheus = Prometheus::start(&prometheus_bin, &topology.admin);
    prometheus.wait_until_up(topology.admin.len()).await;
    let client = "reporter=\"source\",source_workload=\"demo-client\"";
    let to_reviews = format!("{client},destination_service=\"{HOST}\"");
    let total = |selector: &str| format!("sum(istio_requests_total{{{selector}}})");
    // Queries are evaluated at the client's scrapes: `start` holds the warm-up, `end` the
    // measured calls too. A rate over exactly [start, end] needs no extrapolation, so the
    // ratios the dashboards compute are exact.
    let scraped_at = format!("max(timestamp(istio_requests_total{{{to_reviews}}}))");
    let reached = prometheus
        .wait_for_value(&total(&to_reviews), f64::from(warmup.total()))
        .await;
    let start = scalar(&prometheus.query_at(&scraped_at, reached).await);
    let series_before = prometheus
        .query_at(
            &format!("count(istio_requests_total{{{to_reviews}}})"),
            start,
        )
        .await;

    let measured = calls(&topology.client, CALLS).await;
    let reached = prometheus
        .wait_for_value(
            &total(&to_reviews),
            f64::from(warmup.total() + measured.total()),
        )
        .await;
    let end = scalar(&prometheus.query_at(&scraped_at, reached).await);
    let series_after = prometheus
        .query_at(&format!("count(istio_requests_total{{{to_reviews}}})"), end)
        .await;
    assert_eq!(
        scalar(&series_before),
        scalar(&series_after),
        "no series appeared during the measured traffic"
    );
    let window = format!("{}ms", ((end - start) * 1000.0).round() as u64);

    // Exact counts: the raw counters at the end minus at the start.
    let delta = |by: &'static str, selector: String| {
        let prometheus = &prometheus;
        async move {
            let query = format!("sum by ({by}) (istio_requests_total{{{selector}}})");
            let after = by_label(&prometheus.query_at(&query, end).await, by);
            let before = by_label(&prometheus.query_at(&query, start).await, by);
            after
                .into_iter()
                .map(|(k, v)| (k.clone(), v - before.get(&k).copied().unwrap_or(0.0)))
                .filter(|(_, v)| *v > 0.0)
                .collect::<BTreeMap<String, f64>>()
        }
    };
    let by_status = delta("grpc_response_status", to_reviews.clone()).await;
    let expected_status: BTreeMap<String, f64> = [
        ("0", measured.ok()),
        ("13", measured.failed(Code::Internal)),
        ("14", measured.failed(Code::Unavailable)),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| (k.to_owned(), f64::from(n)))
    .collect();
    assert_eq!(by_status, expected_status, "{measured:?}");
    let ok_by_version = delta(
        "destination_version",
        format!("{to_reviews},grpc_response_status=\"0\""),
    )
    .await;
    let expected_versions: BTreeMap<String, f64> = measured
        .answered_by
        .iter()
        .map(|(k, v)| (k.clone(), f64::from(*v)))
        .collect();
    assert_eq!(ok_by_version, expected_versions);
    // What reviews saw, reported by its own meshes (scraped on their own schedule): every
    // call but the aborted ones, which never left the client.
    let reached_reviews = |t: &Tally| t.total() - t.failed(Code::Unavailable);
    let served_at = prometheus
        .wait_for_value(
            &format!(
                "sum(istio_requests_total{{reporter=\"destination\",destination_service=\"{HOST}\"}})"
            ),
            f64::from(reached_reviews(&warmup) + reached_reviews(&measured)),
        )
        .await;

    // The workload dashboard's outbound request rate by destination version (Kiali groups the
    // same series by destination_canonical_revision): the configured split.
    let by_version = by_label(
        &prometheus
            .query_at(
                &format!(
                    "sum by (destination_version) (rate(istio_requests_total{{{to_reviews}}}[{window}]))"
                ),
                end,
            )
            .await,
        "destination_version",
    );
    let all: f64 = by_version.values().sum();
    let v2_share = by_version.get("v2").copied().unwrap_or(0.0) * 100.0 / all;
    assert!(
        (v2_share - f64::from(CANARY)).abs() <= 8.0,
        "v2 got {v2_share:.1} % of the requests: {by_version:?}"
    );

    // Istio's dashboards count non-5xx responses as successes. A gRPC failure is an HTTP 200
    // (its status is in the trailers), as with Envoy: the success rate stays 1.
    // (Reviews' meshes are scraped on their own schedule: their window reaches back a second
    // before the client's first scrape.)
    let served_window = format!("{}ms", ((served_at - start + 1.0) * 1000.0).round() as u64);
    let service_success = prometheus
        .query_at(
            &format!(
                "sum(rate(istio_requests_total{{reporter=\"destination\",destination_service=\"{HOST}\",response_code!~\"5.*\"}}[{served_window}])) / (sum(rate(istio_requests_total{{reporter=\"destination\",destination_service=\"{HOST}\"}}[{served_window}])) or on () vector(1))"
            ),
            served_at,
        )
        .await;
    assert_eq!(scalar(&service_success), 1.0);
    let mesh_success = prometheus
        .query_at(
            &format!(
                "sum (rate(istio_requests_total{{reporter=~\"source|waypoint\",response_code!~\"5..\"}}[{window}])) / sum (rate(istio_requests_total{{reporter=~\"source|waypoint\"}}[{window}]))"
            ),
            end,
        )
        .await;
    assert_eq!(scalar(&mesh_success), 1.0);

    // Kiali's graph (outgoing traffic of the namespace) judges gRPC by grpc_response_status:
    // its error rate is the failures the client saw, exactly. (Kiali writes its range in
    // whole seconds; the window here is the exact span between two scrapes.)
    let kiali = prometheus
        .query_at(
            &format!(
                "sum(rate(istio_requests_total{{reporter=\"source\",source_workload_namespace=\"default\"}} [{window}])) by (source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,request_protocol,response_code,grpc_response_status,response_flags) > 0"
            ),
            end,
        )
        .await;
    let (mut rate, mut errors) = (0.0, 0.0);
    for edge in kiali["data"]["result"].as_array().unwrap() {
        let m = &edge["metric"];
        if m["source_workload"] != "demo-client" || m["destination_service"] != HOST {
            continue;
        }
        assert_eq!(m["request_protocol"], "grpc", "{m}");
        let value = sample(&edge["value"]);
        rate += value;
        if m["grpc_response_status"] != "0" {
            errors += value;
        }
    }
    let failed = f64::from(measured.failures()) / f64::from(measured.total());
    assert!(
        (errors / rate - failed).abs() < 1e-6,
        "Kiali's error rate {} against {failed} observed",
        errors / rate
    );
    let injected = 1.0
        - (1.0 - f64::from(ABORTED) / 100.0)
            * (1.0 - f64::from(100 - CANARY) / 100.0 * f64::from(V1_FAILS) / 100.0);
    assert!(
        (failed - injected).abs() <= 0.08,
        "{failed} failed against {injected} injected"
    );

    // The service dashboard's client-side p99: v2's 30 ms calls are the slowest 1 %, so it lies
    // in their bucket or above, and never above the bucket of the slowest call seen.
    let p99 = scalar(
        &prometheus
            .query_at(
                &format!(
                    "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{to_reviews}}}[{window}])) by (le))"
                ),
                end,
            )
            .await,
    );
    let slowest = measured.slowest().as_secs_f64() * 1000.0;
    let bound = BUCKETS
        .iter()
        .copied()
        .find(|b| *b >= slowest)
        .unwrap_or(f64::INFINITY);
    let floor = BUCKETS
        .iter()
        .copied()
        .filter(|b| *b < V2_DELAY.as_secs_f64() * 1000.0)
        .fold(0.0, f64::max);
    assert!(
        p99.is_finite() && p99 >= floor && p99 <= bound,
        "p99 {p99} ms: not within [{floor}, {bound}] (slowest call {slowest:.1} ms)"
    );
    drop(prometheus);
}

/// The path of `name` on the `PATH`; missing is a failure, not a skip.
fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on the PATH: run `scripts/prometheus-env` (it installs Debian's \
                 prometheus package; `scripts/test` runs it before the tests)"
            )
        })
}

fn admin(endpoints: &[AdminEndpoint], workload: &str) -> std::net::SocketAddr {
    endpoints
        .iter()
        .find(|e| e.workload == workload)
        .unwrap_or_else(|| panic!("no admin endpoint for {workload}: {endpoints:?}"))
        .address
}

/// `promtool check metrics` on `text`: it must parse, and its lint must find nothing but the
/// one thing Istio decided: `istio_request_duration_milliseconds` is Istio's name, which its
/// dashboards query (and the PromQL below), so promtool's "base unit seconds" advice cannot be
/// followed. Envoy's own `/stats/prometheus` draws the same lint.
fn promtool_check(promtool: &Path, workload: &str, text: &str) {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // 0: clean; 3: lint problems (checked below); anything else: it did not parse.
    assert!(
        matches!(output.status.code(), Some(0 | 3)),
        "promtool check metrics cannot read {workload}'s /metrics ({}):\n{report}\n{text}",
        output.status
    );
    let explained = |problem: &str| {
        problem
            == "istio_request_duration_milliseconds use base unit \"seconds\" instead of \"milliseconds\""
    };
    let unexplained: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty() && !explained(l))
        .collect();
    assert!(
        unexplained.is_empty(),
        "promtool check metrics finds problems in {workload}'s /metrics:\n{}\n\n{text}",
        unexplained.join("\n")
    );
}

/// What a batch of calls to reviews observed.
#[derive(Debug, Default)]
struct Tally {
    answered_by: BTreeMap<String, u32>,
    /// Failures by gRPC status code.
    failed: BTreeMap<i32, u32>,
    latencies: Vec<Duration>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        for (k, v) in other.answered_by {
            *self.answered_by.entry(k).or_default() += v;
        }
        for (k, v) in other.failed {
            *self.failed.entry(k).or_default() += v;
        }
        self.latencies.extend(other.latencies);
    }
    fn ok(&self) -> u32 {
        self.answered_by.values().sum()
    }
    fn failed(&self, code: Code) -> u32 {
        self.failed.get(&i32::from(code)).copied().unwrap_or(0)
    }
    fn failures(&self) -> u32 {
        self.failed.values().sum()
    }
    fn total(&self) -> u32 {
        self.ok() + self.failures()
    }
    fn slowest(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }
}

/// Calls reviews `n` times through the demo client's mesh, eight at a time.
async fn calls(mesh: &Mesh, n: u32) -> Tally {
    let client = ReviewsClient::new(mesh.channel(xds(REVIEWS)));
    let mut results = stream::iter(0..n)
        .map(|_| {
            let mut client = client.clone();
            async move {
                let started = Instant::now();
                let result = client
                    .get_reviews(ReviewsRequest { product_id: 1 })
                    .await
                    .map(|r| r.into_inner().version);
                (started.elapsed(), result)
            }
        })
        .buffer_unordered(8);
    let mut tally = Tally::default();
    while let Some((latency, result)) = results.next().await {
        tally.latencies.push(latency);
        match result {
            Ok(version) => *tally.answered_by.entry(version).or_default() += 1,
            Err(status) => *tally.failed.entry(i32::from(status.code())).or_default() += 1,
        }
    }
    tally
}

/// The (destination_version, grpc_response_status) pairs of the client's requests to reviews
/// in a `/metrics` text (either format: the sample lines are the same).
fn client_series(text: &str) -> BTreeSet<(String, String)> {
    let label = |line: &str, name: &str| {
        let key = format!("{name}=\"");
        let start = line.find(&key)? + key.len();
        let end = line[start..].find('"')? + start;
        Some(line[start..end].to_owned())
    };
    text.lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"source\"")
                && l.contains(&format!("destination_service=\"{HOST}\""))
        })
        .filter_map(|l| {
            Some((
                label(l, "destination_version")?,
                label(l, "grpc_response_status")?,
            ))
        })
        .collect()
}

/// The `Accept` header Prometheus (2.x) scrapes with.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A GET over HTTP/1.0 (so the reply is neither chunked nor kept alive) without an `Accept`
/// header: its content type and body. Panics on anything but 200.
async fn get(address: std::net::SocketAddr, path: &str, query: &str) -> (String, String) {
    request(address, path, query, None).await
}

/// [`get`] with an `Accept` header.
async fn get_accepting(
    address: std::net::SocketAddr,
    path: &str,
    query: &str,
    accept: &str,
) -> (String, String) {
    request(address, path, query, Some(accept)).await
}

async fn request(
    address: std::net::SocketAddr,
    path: &str,
    query: &str,
    accept: Option<&str>,
) -> (String, String) {
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let target = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        stream
            .write_all(
                format!("GET {target} HTTP/1.0\r\nHost: {address}\r\n{accept}\r\n").as_bytes(),
            )
            .await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&reply).into_owned())
    };
    let reply = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("GET http://{address}{path} timed out"))
        .unwrap_or_else(|e| panic!("GET http://{address}{path}: {e}"));
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head from {address}: {reply}"));
    assert!(
        head.lines().next().is_some_and(|l| l.contains(" 200")),
        "GET http://{address}{path}?{query}: {head}\n{body}"
    );
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (content_type, body.to_owned())
}

/// A Prometheus scraping the admin endpoints every second, on a loopback port, with its data
/// in a directory of its own; dropping it kills it and removes the directory.
struct Prometheus {
    child: Child,
    address: std::net::SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    fn start(binary: &Path, targets: &[AdminEndpoint]) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("mesh-prometheus-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = String::from(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n\
             scrape_configs:\n- job_name: mesh-demo\n  metrics_path: /metrics\n  static_configs:\n",
        );
        for target in targets {
            config.push_str(&format!(
                "  - targets: ['{}']\n    labels: {{workload: '{}'}}\n",
                target.address, target.workload
            ));
        }
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        // An ephemeral port: the kernel picks a free one, Prometheus takes it over.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        Self {
            child,
            address,
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Waits (bounded) until `n` targets have been scraped successfully.
    async fn wait_until_up(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(up) = self.try_get("/api/v1/targets", "").await.map(|targets| {
                targets["data"]["activeTargets"]
                    .as_array()
                    .map(|ts| ts.iter().filter(|t| t["health"] == "up").count())
                    .unwrap_or(0)
            }) && up == n
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus did not report {n} targets up in time:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (bounded) until `query` evaluates to `value` now; returns the evaluation time
    /// (Unix seconds), when Prometheus holds a scrape with that value.
    async fn wait_for_value(&self, query: &str, value: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = unix_now();
            let answer = self.query_at(query, now).await;
            if answer["data"]["result"]
                .as_array()
                .is_some_and(|r| r.len() == 1)
                && scalar(&answer) == value
            {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "`{query}` never reached {value}; last answer {answer}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The answer of the instant query `query` at `time` (Unix seconds).
    async fn query_at(&self, query: &str, time: f64) -> Value {
        let parameters = format!("query={}&time={time:.3}", percent_encode(query));
        let answer = self
            .try_get("/api/v1/query", &parameters)
            .await
            .unwrap_or_else(|| panic!("Prometheus did not answer `{query}`:\n{}", self.log()));
        assert_eq!(answer["status"], "success", "`{query}`: {answer}");
        answer
    }

    async fn try_get(&self, path: &str, query: &str) -> Option<Value> {
        let address = self.address;
        let path = path.to_owned();
        let query = query.to_owned();
        // A refused connection (Prometheus still starting) is a `None`, not a panic.
        tokio::net::TcpStream::connect(address).await.ok()?;
        let (_, body) = tokio::spawn(async move { get(address, &path, &query).await })
            .await
            .ok()?;
        serde_json::from_str(&body).ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The one value of a query's answer (a one-sample vector or a scalar).
fn scalar(answer: &Value) -> f64 {
    let data = &answer["data"];
    match data["resultType"].as_str() {
        Some("scalar") => sample(&data["result"]),
        _ => {
            let result = data["result"].as_array().unwrap();
            assert_eq!(result.len(), 1, "one sample expected: {answer}");
            sample(&result[0]["value"])
        }
    }
}

/// A sample's value (`[time, "value"]`).
fn sample(value: &Value) -> f64 {
    value[1].as_str().unwrap().parse().unwrap()
}

/// A vector's values by the value of `label`.
fn by_label(answer: &Value, label: &str) -> BTreeMap<String, f64> {
    answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"][label].as_str().unwrap_or("").to_owned(),
                sample(&s["value"]),
            )
        })
        .collect()
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
