//! The one-command demo: the development control plane and bookinfo on loopback, and scenarios
//! that each push a configuration change over xDS and check what callers observe.
//!
//! Every scenario states its expected outcome before it runs and is judged on numbers the
//! callers saw (replies per version, statuses, latencies), never on what the configuration
//! says. The demo passes only when every scenario behaved as expected.

mod report;
mod topology;
mod traffic;
mod view;

use std::time::Duration;

use mesh_core::MeshConfig;
use tonic::Code;

pub use self::{
    report::svg as report_svg,
    topology::{AdminEndpoint, Instance, PRODUCTPAGE, Policy, Topology, TopologyError, xds},
    traffic::{Call, Tally},
    view::{Line, Row, Verdict, View},
};

/// How much traffic each scenario sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Enough requests for tight tolerances (the default).
    Full,
    /// Fewer requests and shorter waits, with wider tolerances: for CI.
    Quick,
}

/// How long a pushed configuration may go without reaching one more service. The wait adapts
/// to the machine: as long as services keep converging it goes on (up to
/// [`CONVERGENCE_LIMIT`]), so a busy 2-core machine is slow, not failed.
const CONVERGENCE_STALL: Duration = Duration::from_secs(15);

/// The longest a pushed configuration may take to reach every service, progress or not.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(120);

/// The longest any one scenario may take before it counts as failed.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(40);

/// A demo run.
#[derive(Debug)]
pub struct Demo {
    topology: Topology,
    pace: Pace,
    // The Istio YAML the running scenario applied, in order, for the summary.
    applied: std::sync::Mutex<Vec<String>>,
    // Every call the running scenario made, for the report's pictures.
    calls: std::sync::Mutex<Vec<traffic::Call>>,
}

/// The demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Starting or configuring the services failed.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// A pushed configuration did not reach every service in time.
    #[error(
        "configuration version {version} did not reach {lagging} service(s): no progress for {CONVERGENCE_STALL:?} ({waited:?} in all)"
    )]
    NotConverged {
        /// The control plane's version.
        version: String,
        /// How many meshes still served something else.
        lagging: usize,
        /// How long the demo waited.
        waited: Duration,
    },
}

// === impl Demo ===

impl Demo {
    /// Starts the control plane and bookinfo with every request going to reviews v1.
    pub async fn start(pace: Pace) -> Result<Self, DemoError> {
        let topology = Topology::start().await?;
        let demo = Self {
            topology,
            pace,
            applied: Default::default(),
            calls: Default::default(),
        };
        demo.apply(&Policy::default()).await?;
        demo.take_applied();
        Ok(demo)
    }

    /// The running services.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Pushes `policy` from the control plane and waits until every service's mesh serves it
    /// (what each one holds for the targets it calls equals what was pushed).
    pub async fn apply(&self, policy: &Policy) -> Result<(), DemoError> {
        self.record_applied(policy.traffic_yaml());
        let config = self.topology.config(policy)?;
        let expected = mesh_xds::encode::canonical(&config);
        let version = self.topology.control_plane.set_config(config);
        let started = tokio::time::Instant::now();
        let mut fewest_lagging = usize::MAX;
        let mut last_progress = started;
        loop {
            let lagging = self
                .topology
                .meshes
                .iter()
                .filter(|(mesh, targets)| !serves(&mesh.config(), targets, &expected))
                .count();
            if lagging == 0 {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if lagging < fewest_lagging {
                fewest_lagging = lagging;
                last_progress = now;
            }
            if now - last_progress >= CONVERGENCE_STALL || now - started >= CONVERGENCE_LIMIT {
                return Err(DemoError::NotConverged {
                    version,
                    lagging,
                    waited: now - started,
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs every scenario, drawing them on `view`; returns whether all passed.
    pub async fn run(&self, view: &mut View) -> bool {
        for scenario in SCENARIOS {
            let line = view.start(scenario.name);
            let expected = (scenario.expected)(self.pace);
            let verdict = match tokio::time::timeout(
                SCENARIO_DEADLINE,
                self.play(scenario.kind, &line),
            )
            .await
            {
                Ok(Ok(verdict)) => verdict,
                Ok(Err(e)) => Verdict {
                    observed: format!("could not run: {e}"),
                    passed: false,
                },
                Err(_) => Verdict {
                    observed: format!("did not finish within {SCENARIO_DEADLINE:?}"),
                    passed: false,
                },
            };
            self.topology.heal();
            let calls = self
                .calls
                .lock()
                .map(|mut calls| std::mem::take(&mut *calls))
                .unwrap_or_default();
            view.finish(
                line,
                scenario.name,
                expected,
                verdict,
                self.take_applied(),
                calls,
            );
        }
        view.rows().iter().all(|r| r.verdict.passed)
    }

    /// Remembers `yaml` as applied by the running scenario.
    fn record_applied(&self, yaml: String) {
        if let Ok(mut applied) = self.applied.lock() {
            applied.push(yaml);
        }
    }

    /// The YAML the scenario that just ended applied.
    fn take_applied(&self) -> Vec<String> {
        self.applied
            .lock()
            .map(|mut applied| std::mem::take(&mut *applied))
            .unwrap_or_default()
    }

    fn n(&self, full: u32, quick: u32) -> u32 {
        match self.pace {
            Pace::Full => full,
            Pace::Quick => quick,
        }
    }

    async fn play(&self, kind: Kind, line: &Line) -> Result<Verdict, DemoError> {
        let mut show = |t: &Tally| {
            line.update(t.summary());
            if let (Some(call), Ok(mut calls)) = (t.calls.last(), self.calls.lock()) {
                calls.push(call.clone());
            }
        };
        let client = &self.topology.client;
        Ok(match kind {
            Kind::Canary(v1, v2) => {
                self.apply(&canary(v1, v2)).await?;
                let t = traffic::reviews(client, self.n(2000, 400), 16, None, &mut show).await;
                let tolerance = tolerance(self.pace);
                let ok = (t.percent("v1") - f64::from(v1)).abs() <= tolerance
                    && (t.percent("v2") - f64::from(v2)).abs() <= tolerance
                    && t.failures() == 0;
                verdict(t.summary(), ok)
            }
            Kind::HeaderRouting => {
                self.apply(&Policy {
                    reviews_http: "  - match: [{headers: {end-user: {exact: jason}}}]\n    \
                                   route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]\n  \
                                   - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1}}]\n"
                        .into(),
                    ..Policy::default()
                }).await?;
                let n = self.n(200, 50);
                let beta = traffic::reviews(client, n, 8, Some("jason"), &mut show).await;
                let rest = traffic::reviews(client, n, 8, None, &mut show).await;
                let ok = beta.percent("v2") == 100.0 && rest.percent("v1") == 100.0;
                verdict(
                    format!(
                        "jason: v2 {:.0} %; others: v1 {:.0} %",
                        beta.percent("v2"),
                        rest.percent("v1")
                    ),
                    ok,
                )
            }
            Kind::FaultAbort => {
                self.apply(&Policy {
                    reviews_http: format!(
                        "{}    fault: {{abort: {{percentage: {{value: 50}}, grpcStatus: UNAVAILABLE}}}}\n",
                        route_to("v1")
                    ),
                    ..Policy::default()
                }).await?;
                let t = traffic::reviews(client, self.n(1000, 300), 16, None, &mut show).await;
                let aborted = t.failed_percent(Code::Unavailable);
                let message = t.messages.get("UNAVAILABLE").cloned().unwrap_or_default();
                let ok = (aborted - 50.0).abs() <= tolerance(self.pace) * 1.6
                    && message.contains("injected fault");
                verdict(format!("{aborted:.1} % UNAVAILABLE: \"{message}\""), ok)
            }
            Kind::FaultDelay => {
                self.apply(&Policy {
                    reviews_http: format!(
                        "{}    fault: {{delay: {{percentage: {{value: 100}}, fixedDelay: 300ms}}}}\n",
                        route_to("v1")
                    ),
                    ..Policy::default()
                }).await?;
                let t = traffic::reviews(client, self.n(40, 16), 8, None, &mut show).await;
                let min = t.min_latency();
                let ok = min >= Duration::from_millis(300) && t.failures() == 0;
                verdict(
                    format!("fastest of {} calls: {} ms", t.total(), min.as_millis()),
                    ok,
                )
            }
            Kind::Retries => {
                if let Some(v3) = self.topology.reviews("v3") {
                    v3.knobs.fail(50, Code::Unavailable);
                }
                // One call at a time: the flaky version fails every other call it sees, so the
                // outcome is exact rather than a probability.
                let n = self.n(200, 60);
                self.apply(&Policy {
                    reviews_http: format!("{}    retries: {{attempts: 0}}\n", route_to("v3")),
                    ..Policy::default()
                })
                .await?;
                let bare = traffic::reviews(client, n, 1, None, &mut show).await;
                self.apply(&Policy {
                    reviews_http: format!(
                        "{}    retries: {{attempts: 3, retryOn: unavailable}}\n",
                        route_to("v3")
                    ),
                    ..Policy::default()
                })
                .await?;
                let retried = traffic::reviews(client, n, 1, None, &mut show).await;
                let ok = bare.failed_percent(Code::Unavailable) >= 35.0 && retried.failures() == 0;
                verdict(
                    format!(
                        "without retries {:.0} % failed; with 3 attempts {:.0} %",
                        bare.failed_percent(Code::Unavailable),
                        retried.failed_percent(Code::Unavailable)
                    ),
                    ok,
                )
            }
            Kind::Breaker => {
                if let Some(v1) = self.topology.reviews("v1") {
                    v1.knobs.delay(Duration::from_millis(400));
                }
                self.apply(&Policy {
                    reviews_http: format!("{}    retries: {{attempts: 0}}\n", route_to("v1")),
                    reviews_traffic: "    connectionPool: {http: {http2MaxRequests: 3}}\n".into(),
                    ..Policy::default()
                })
                .await?;
                let t = traffic::reviews(client, 12, 12, None, &mut show).await;
                let rejected = t.failed.get("UNAVAILABLE").copied().unwrap_or(0);
                let ok = rejected == 9 && t.answered_by.get("v1") == Some(&3);
                verdict(
                    format!(
                        "12 concurrent, limit 3: {rejected} rejected, {} served",
                        t.total() - t.failures()
                    ),
                    ok,
                )
            }
            Kind::Outlier => self.outlier(&mut show).await?,
            Kind::Mtls => self.mtls(&mut show).await?,
            Kind::Trace => {
                self.apply(&Policy {
                    reviews_http: route_to("v2"),
                    ..Policy::default()
                })
                .await?;
                match traffic::product_page(client).await {
                    Ok(page) => {
                        let ids = &page.trace_ids;
                        let ok = ids.len() == 3
                            && ids.iter().all(|id| !id.is_empty() && *id == ids[0])
                            && page.error.is_empty();
                        let shown: Vec<&str> =
                            ids.iter().map(|id| id.get(..12).unwrap_or(id)).collect();
                        verdict(
                            format!("trace ids seen by each hop: {}", shown.join(" → ")),
                            ok,
                        )
                    }
                    Err(e) => verdict(e, false),
                }
            }
        })
    }

    async fn mtls(&self, show: &mut dyn FnMut(&Tally)) -> Result<Verdict, DemoError> {
        let client = &self.topology.client;
        self.apply(&Policy {
            reviews_http: route_to("v2"),
            ..Policy::default()
        })
        .await?;
        let before = traffic::ratings(client, 5, show).await;
        let seen: Vec<&str> = before.principals.keys().map(String::as_str).collect();
        let plaintext = traffic::plaintext_ratings(self.topology.ratings[0].address).await;
        self.record_applied(topology::ratings_server_yaml(true));
        // Only the server half: the ratings meshes' client half is not this YAML's.
        let reviews_only = topology::ratings_server_config(true)?;
        for mesh in &self.topology.ratings_meshes {
            mesh.publish_server(reviews_only.server().clone());
        }
        let after = traffic::ratings(client, 5, show).await;
        let page = traffic::product_page(client).await;
        let stars = page
            .as_ref()
            .map(|p| p.reviews.iter().map(|r| r.2).sum::<u32>())
            .unwrap_or(0);
        let denied = after.failed.get("PERMISSION_DENIED").copied().unwrap_or(0);
        let ok = seen == [crate::pki::principal("default", "demo-client")]
            && plaintext.is_err()
            && denied == after.total()
            && stars > 0;
        Ok(verdict(
            format!(
                "seen as {}; plaintext caller {}; after ALLOW reviews-only: client {denied}/{} PERMISSION_DENIED, productpage→reviews→ratings {}",
                seen.join(","),
                match &plaintext {
                    Ok(()) => "ACCEPTED".to_owned(),
                    Err(e) => format!("refused ({e})"),
                },
                after.total(),
                if stars > 0 {
                    "shows stars"
                } else {
                    "has no stars"
                }
            ),
            ok,
        ))
    }

    async fn outlier(&self, show: &mut dyn FnMut(&Tally)) -> Result<Verdict, DemoError> {
        let [a, b] = [&self.topology.ratings[0], &self.topology.ratings[1]];
        let ejection = match self.pace {
            Pace::Full => Duration::from_secs(3),
            Pace::Quick => Duration::from_secs(2),
        };
        self.apply(&Policy {
            ratings_traffic: format!(
                "    outlierDetection: {{consecutive5xxErrors: 3, interval: 500ms, \
                 baseEjectionTime: {}ms, maxEjectionPercent: 50}}\n",
                ejection.as_millis()
            ),
            ..Policy::default()
        })
        .await?;
        b.knobs.fail(100, Code::Internal);
        let client = &self.topology.client;
        let sick = traffic::ratings(client, self.n(60, 30), show).await;
        b.knobs.fail(0, Code::Ok);
        tokio::time::sleep(ejection + Duration::from_millis(700)).await;
        let healed = traffic::ratings(client, self.n(60, 30), show).await;
        let by = |t: &Tally, i: &Instance| {
            t.answered_by
                .get(&i.address.to_string())
                .copied()
                .unwrap_or(0)
        };
        let ok = sick.failures() <= 3
            && by(&sick, a) == sick.total() - sick.failures()
            && by(&healed, b) > 0
            && healed.failures() == 0;
        Ok(verdict(
            format!(
                "failing replica: {} errors then ejected ({} calls to the healthy one); after {} s it serves {} of {}",
                sick.failures(),
                by(&sick, a),
                ejection.as_secs(),
                by(&healed, b),
                healed.total()
            ),
            ok,
        ))
    }
}

/// One scenario: its name, what it expects, and what it does.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    name: &'static str,
    expected: fn(Pace) -> String,
    kind: Kind,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Canary(u32, u32),
    HeaderRouting,
    FaultAbort,
    FaultDelay,
    Retries,
    Breaker,
    Outlier,
    Trace,
    Mtls,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "canary 90/10",
        expected: |p| format!("v1 90 %, v2 10 % (± {} points)", tolerance(p)),
        kind: Kind::Canary(90, 10),
    },
    Scenario {
        name: "canary 50/50",
        expected: |p| format!("v1 50 %, v2 50 % (± {} points)", tolerance(p)),
        kind: Kind::Canary(50, 50),
    },
    Scenario {
        name: "canary 0/100",
        expected: |_| "v2 100 %".into(),
        kind: Kind::Canary(0, 100),
    },
    Scenario {
        name: "header routing (end-user: jason)",
        expected: |_| "jason → v2 always, others → v1".into(),
        kind: Kind::HeaderRouting,
    },
    Scenario {
        name: "fault abort 50 %",
        expected: |p| {
            format!(
                "≈ 50 % UNAVAILABLE (± {}), \"injected fault\"",
                tolerance(p) * 1.6
            )
        },
        kind: Kind::FaultAbort,
    },
    Scenario {
        name: "fault delay 300 ms",
        expected: |_| "every call ≥ 300 ms, none fails".into(),
        kind: Kind::FaultDelay,
    },
    Scenario {
        name: "retries hide a flaky v3",
        expected: |_| "half fail without retries, none with".into(),
        kind: Kind::Retries,
    },
    Scenario {
        name: "circuit breaker",
        expected: |_| "12 concurrent, limit 3: exactly 9 rejected".into(),
        kind: Kind::Breaker,
    },
    Scenario {
        name: "outlier ejection and return",
        expected: |_| "≤ 3 errors, then ejected; back after its ejection time".into(),
        kind: Kind::Outlier,
    },
    Scenario {
        name: "one trace through three services",
        expected: |_| "productpage → reviews → ratings share one trace id".into(),
        kind: Kind::Trace,
    },
    Scenario {
        name: "mTLS identities, authorization deny",
        expected: |_| {
            "ratings sees the caller's SPIFFE id; ALLOW reviews-only denies the client, not reviews"
                .into()
        },
        kind: Kind::Mtls,
    },
];

/// How far a measured split may be from the configured one, in percentage points.
fn tolerance(pace: Pace) -> f64 {
    match pace {
        // 2,000 calls: one standard deviation of a 50/50 split is 1.1 points.
        Pace::Full => 4.0,
        // 400 calls: 2.5 points.
        Pace::Quick => 8.0,
    }
}

fn verdict(observed: String, passed: bool) -> Verdict {
    Verdict { observed, passed }
}

/// A `reviews` VirtualService `http` entry routing everything to `subset`, open for more keys
/// at four spaces.
fn route_to(subset: &str) -> String {
    format!(
        "  - route: [{{destination: {{host: reviews.default.svc.cluster.local, subset: {subset}}}}}]\n"
    )
}

/// A split between v1 and v2.
fn canary(v1: u32, v2: u32) -> Policy {
    Policy {
        reviews_http: format!(
            "  - route:\n    \
             - {{destination: {{host: reviews.default.svc.cluster.local, subset: v1}}, weight: {v1}}}\n    \
             - {{destination: {{host: reviews.default.svc.cluster.local, subset: v2}}, weight: {v2}}}\n"
        ),
        ..Policy::default()
    }
}

/// Whether `served` holds, for each of `targets`, the routes of `expected` and, for every
/// cluster it holds, `expected`'s version of that cluster.
fn serves(served: &MeshConfig, targets: &[&str], expected: &MeshConfig) -> bool {
    targets
        .iter()
        .all(|t| served.listener(t).is_some() && served.listener(t) == expected.listener(t))
        && served
            .clusters()
            .iter()
            .all(|(name, cluster)| expected.cluster(name) == Some(cluster))
}
