//! The load comparison: starts every variant's servers (and nginx hops) as processes of their
//! own, then runs the cells *interleaved* — for each round, for each load shape, every variant
//! in turn (a b c1 c2 a b c1 c2 …) — so drift of a shared machine hits every variant alike.
//! Each cell is a fresh client process; its histograms are merged per variant and shape.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use hdrhistogram::{
    Histogram,
    serialization::{Deserializer, Serializer, V2Serializer},
};
use serde::{Deserialize, Serialize};

use crate::{
    cell::{CellResult, Shape, Watched},
    nginx::Nginx,
    variant::Variant,
};

/// What to run.
#[derive(Clone, Debug)]
pub struct CompareSpec {
    /// Rounds of every (shape, variant) cell.
    pub rounds: usize,
    /// Measured seconds per cell.
    pub secs: f64,
    /// Load shapes.
    pub shapes: Vec<Shape>,
    /// Variants, in the order each round runs them.
    pub variants: Vec<Variant>,
    /// Where nginx configurations and histograms go.
    pub work_dir: PathBuf,
}

/// Latency percentiles, microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest call.
    pub max: u64,
}

/// One variant under one shape, over all rounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Variant key (`a`, `b`, …).
    pub variant: String,
    /// What the variant is.
    pub description: String,
    /// The load shape.
    pub shape: Shape,
    /// Why the variant was not measured, when it was not.
    pub unavailable: Option<String>,
    /// Calls measured over all rounds.
    pub requests: u64,
    /// Calls that did not end with `OK`.
    pub failures: u64,
    /// Calls per second (all calls over all measured time).
    pub throughput: f64,
    /// Calls per second of each round, to judge the spread.
    pub throughput_per_round: Vec<f64>,
    /// Percentiles of the merged histogram.
    pub latency_us: Latency,
    /// CPU microseconds per call, per process role.
    pub cpu_us_per_request: BTreeMap<String, f64>,
    /// Largest resident memory seen at the end of a cell, KiB, per process role.
    pub rss_kib: BTreeMap<String, u64>,
}

/// Everything the comparison measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Rounds run.
    pub rounds: usize,
    /// Measured seconds per cell.
    pub secs_per_cell: f64,
    /// The nginx version used for `c`, if any.
    pub nginx: Option<String>,
    /// One entry per (variant, shape), variants in run order within each shape.
    pub results: Vec<Aggregate>,
}

/// An error of the comparison.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// Starting a process, or talking to it, failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// A client process failed.
    #[error("cell {variant} {shape} (round {round}): {message}")]
    Cell {
        /// The variant.
        variant: Variant,
        /// The shape.
        shape: Shape,
        /// The round.
        round: usize,
        /// What went wrong.
        message: String,
    },
}

/// An echo server process (`mesh-bench serve`), killed when dropped.
#[derive(Debug)]
struct ServerProcess {
    child: Child,
    port: u16,
}

impl ServerProcess {
    fn start(exe: &Path, stack: &str, tls_dir: &Path) -> Result<Self, CompareError> {
        let io = |what: &str| {
            let what = format!("echo server ({stack}): {what}");
            move |source| CompareError::Io { what, source }
        };
        let mut child = Command::new(exe)
            .args(["serve", "--stack", stack, "--listen", "127.0.0.1:0"])
            .arg("--tls-dir")
            .arg(tls_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(io("spawn"))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out)
                .read_line(&mut line)
                .map_err(io("read"))?;
        }
        let port = line.trim().rsplit(':').next().and_then(|p| p.parse().ok());
        let mut server = ServerProcess { child, port: 0 };
        match port {
            Some(port) => {
                server.port = port;
                Ok(server)
            }
            None => {
                let _ = server.child.kill();
                Err(io("startup")(io::Error::other(format!(
                    "expected `listening on <address>`, got `{}`",
                    line.trim()
                ))))
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The running processes behind the variants.
#[derive(Debug, Default)]
struct Fleet {
    plain: Option<ServerProcess>,
    /// The server of `a-hdr` and `e` (reads the trace headers).
    plain_headers: Option<ServerProcess>,
    mesh: Option<ServerProcess>,
    tls: Option<ServerProcess>,
    mesh_mtls: Option<ServerProcess>,
    /// The echo server behind nginx.
    proxied: Option<ServerProcess>,
    nginx_server_side: Option<Nginx>,
    nginx_client_side: Option<Nginx>,
    nginx_error: Option<String>,
}

impl Fleet {
    fn start(exe: &Path, spec: &CompareSpec) -> Result<Self, CompareError> {
        let mut fleet = Fleet::default();
        let wants = |v: Variant| spec.variants.contains(&v);
        let tls_dir = tls_dir(spec);
        if wants(Variant::Plain) {
            fleet.plain = Some(ServerProcess::start(exe, "plain", &tls_dir)?);
        }
        if wants(Variant::PlainHeaders) || wants(Variant::HandMade) {
            fleet.plain_headers = Some(ServerProcess::start(exe, "plain-hdr", &tls_dir)?);
        }
        if wants(Variant::Mesh) {
            fleet.mesh = Some(ServerProcess::start(exe, "mesh", &tls_dir)?);
        }
        if wants(Variant::Tls) {
            crate::tls::write_material(&tls_dir).map_err(material_error("TLS certificate"))?;
            fleet.tls = Some(ServerProcess::start(exe, "tls", &tls_dir)?);
        }
        if wants(Variant::MeshMtls) {
            crate::tls::write_mesh_material(&tls_dir)
                .map_err(material_error("mesh workload certificates"))?;
            fleet.mesh_mtls = Some(ServerProcess::start(exe, "mesh-mtls", &tls_dir)?);
        }
        if wants(Variant::NginxOneHop) || wants(Variant::NginxTwoHop) {
            let proxied = ServerProcess::start(exe, "plain", &tls_dir)?;
            match Nginx::start("nginx-server-side", &spec.work_dir, proxied.port).and_then(
                |server_side| {
                    let client_side =
                        Nginx::start("nginx-client-side", &spec.work_dir, server_side.port)?;
                    Ok((server_side, client_side))
                },
            ) {
                Ok((server_side, client_side)) => {
                    fleet.nginx_server_side = Some(server_side);
                    fleet.nginx_client_side = Some(client_side);
                }
                Err(e) => fleet.nginx_error = Some(e.to_string()),
            }
            fleet.proxied = Some(proxied);
        }
        Ok(fleet)
    }

    /// The port a variant's client sends to and the processes its cell watches, or why the
    /// variant cannot run.
    fn target(&self, variant: Variant) -> Result<(u16, Vec<Watched>), String> {
        let server = |s: &Option<ServerProcess>| {
            s.as_ref()
                .map(|s| {
                    (
                        s.port,
                        Watched {
                            role: "server".into(),
                            pids: vec![s.pid()],
                        },
                    )
                })
                .ok_or_else(|| "server not started".to_owned())
        };
        let hop = |n: &Option<Nginx>| {
            n.as_ref()
                .map(|n| {
                    (
                        n.port,
                        Watched {
                            role: n.name().to_owned(),
                            pids: n.pids(),
                        },
                    )
                })
                .ok_or_else(|| {
                    self.nginx_error
                        .clone()
                        .unwrap_or_else(|| "nginx not started".into())
                })
        };
        match variant {
            Variant::Plain => server(&self.plain).map(|(p, w)| (p, vec![w])),
            Variant::PlainHeaders | Variant::HandMade => {
                server(&self.plain_headers).map(|(p, w)| (p, vec![w]))
            }
            Variant::Mesh => server(&self.mesh).map(|(p, w)| (p, vec![w])),
            Variant::NginxOneHop => {
                let (_, s) = server(&self.proxied)?;
                let (port, n) = hop(&self.nginx_server_side)?;
                Ok((port, vec![s, n]))
            }
            Variant::NginxTwoHop => {
                let (_, s) = server(&self.proxied)?;
                let (_, n2) = hop(&self.nginx_server_side)?;
                let (port, n1) = hop(&self.nginx_client_side)?;
                Ok((port, vec![s, n2, n1]))
            }
            Variant::Tls => server(&self.tls).map(|(p, w)| (p, vec![w])),
            Variant::MeshMtls => server(&self.mesh_mtls).map(|(p, w)| (p, vec![w])),
        }
    }
}

/// Per (variant, shape): what the rounds added up to.
#[derive(Debug)]
struct Accumulator {
    histogram: Option<Histogram<u64>>,
    requests: u64,
    failures: u64,
    elapsed: f64,
    per_round: Vec<f64>,
    cpu_us: BTreeMap<String, u64>,
    rss_kib: BTreeMap<String, u64>,
}

/// Runs the comparison with `exe` (this program) as server and client processes.
pub fn run(exe: &Path, spec: &CompareSpec) -> Result<LoadReport, CompareError> {
    fs::create_dir_all(&spec.work_dir).map_err(|source| CompareError::Io {
        what: format!("creating {}", spec.work_dir.display()),
        source,
    })?;
    let fleet = Fleet::start(exe, spec)?;
    let mut acc: BTreeMap<(usize, usize), Accumulator> = BTreeMap::new();
    for round in 0..spec.rounds {
        for (si, shape) in spec.shapes.iter().enumerate() {
            for (vi, variant) in spec.variants.iter().enumerate() {
                let Ok((port, watched)) = fleet.target(*variant) else {
                    continue;
                };
                eprintln!("round {}/{}: {shape} {variant}", round + 1, spec.rounds);
                let (cell, histogram) =
                    run_cell(exe, spec, *variant, *shape, round, port, &watched)?;
                let a = acc.entry((si, vi)).or_insert_with(|| Accumulator {
                    histogram: None,
                    requests: 0,
                    failures: 0,
                    elapsed: 0.0,
                    per_round: Vec::new(),
                    cpu_us: BTreeMap::new(),
                    rss_kib: BTreeMap::new(),
                });
                match &mut a.histogram {
                    Some(h) => {
                        let _ = h.add(&histogram);
                    }
                    None => a.histogram = Some(histogram),
                }
                a.requests += cell.requests;
                a.failures += cell.failures;
                a.elapsed += cell.elapsed_secs;
                a.per_round.push(cell.throughput);
                for u in cell.usage {
                    *a.cpu_us.entry(u.role.clone()).or_default() += u.cpu_us;
                    let rss = a.rss_kib.entry(u.role).or_default();
                    *rss = (*rss).max(u.memory.rss_kib);
                }
            }
        }
    }
    let mut results = Vec::new();
    for (si, shape) in spec.shapes.iter().enumerate() {
        for (vi, variant) in spec.variants.iter().enumerate() {
            let mut agg = Aggregate {
                variant: variant.key().to_owned(),
                description: variant.describe().to_owned(),
                shape: *shape,
                unavailable: fleet.target(*variant).err(),
                requests: 0,
                failures: 0,
                throughput: 0.0,
                throughput_per_round: Vec::new(),
                latency_us: Latency::default(),
                cpu_us_per_request: BTreeMap::new(),
                rss_kib: BTreeMap::new(),
            };
            if let Some(a) = acc.remove(&(si, vi)) {
                let n = a.requests.max(1) as f64;
                agg.requests = a.requests;
                agg.failures = a.failures;
                agg.throughput = if a.elapsed > 0.0 {
                    a.requests as f64 / a.elapsed
                } else {
                    0.0
                };
                agg.throughput_per_round = a.per_round;
                agg.latency_us = a.histogram.as_ref().map(latency).unwrap_or_default();
                agg.cpu_us_per_request = a
                    .cpu_us
                    .into_iter()
                    .map(|(role, us)| (role, us as f64 / n))
                    .collect();
                agg.rss_kib = a.rss_kib;
            }
            results.push(agg);
        }
    }
    Ok(LoadReport {
        rounds: spec.rounds,
        secs_per_cell: spec.secs,
        nginx: fleet
            .nginx_server_side
            .as_ref()
            .and_then(|_| nginx_version()),
        results,
    })
}

fn run_cell(
    exe: &Path,
    spec: &CompareSpec,
    variant: Variant,
    shape: Shape,
    round: usize,
    port: u16,
    watched: &[Watched],
) -> Result<(CellResult, Histogram<u64>), CompareError> {
    let fail = |message: String| CompareError::Cell {
        variant,
        shape,
        round,
        message,
    };
    let histogram_file = spec.work_dir.join(format!("{variant}-{shape}.hgrm"));
    let mut cmd = Command::new(exe);
    cmd.args(["client", "--variant", variant.key()])
        .args(["--port", &port.to_string()])
        .args(["--shape", &shape.to_string()])
        .args(["--secs", &spec.secs.to_string()])
        .arg("--histogram-out")
        .arg(&histogram_file)
        .arg("--tls-dir")
        .arg(tls_dir(spec));
    for w in watched {
        let pids: Vec<String> = w.pids.iter().map(u32::to_string).collect();
        cmd.arg("--watch")
            .arg(format!("{}={}", w.role, pids.join(",")));
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!("client exited with {}", out.status)));
    }
    let cell: CellResult =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("client output: {e}")))?;
    let bytes = fs::read(&histogram_file).map_err(|e| fail(format!("histogram: {e}")))?;
    let histogram = read_histogram(&bytes).map_err(fail)?;
    Ok((cell, histogram))
}

/// Where the d-tls certificate and key and the d-mtls workload certificates go.
fn tls_dir(spec: &CompareSpec) -> PathBuf {
    spec.work_dir.join("tls")
}

/// Writing `what` (certificates for the servers and clients) failed.
fn material_error(what: &'static str) -> impl FnOnce(crate::tls::TlsError) -> CompareError {
    move |e| CompareError::Io {
        what: what.into(),
        source: io::Error::other(e),
    }
}

/// The percentiles of `h`.
pub fn latency(h: &Histogram<u64>) -> Latency {
    Latency {
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

/// `h` in HdrHistogram's V2 encoding (what the client hands to the orchestrator).
pub fn write_histogram(h: &Histogram<u64>) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| format!("encoding the histogram: {e:?}"))?;
    Ok(bytes)
}

/// The inverse of [`write_histogram`].
pub fn read_histogram(bytes: &[u8]) -> Result<Histogram<u64>, String> {
    Deserializer::new()
        .deserialize(&mut io::Cursor::new(bytes))
        .map_err(|e| format!("decoding the histogram: {e:?}"))
}

fn nginx_version() -> Option<String> {
    let bin = crate::nginx::binary()?;
    let out = Command::new(bin).arg("-v").output().ok()?;
    // `nginx -v` prints to stderr: "nginx version: nginx/1.22.1".
    let text = String::from_utf8_lossy(&out.stderr);
    text.trim()
        .strip_prefix("nginx version: ")
        .map(str::to_owned)
}

/// How long the comparison will take, roughly (for the progress line).
pub fn estimate(spec: &CompareSpec) -> Duration {
    let cells = spec.rounds * spec.shapes.len() * spec.variants.len();
    Duration::from_secs_f64(cells as f64 * (spec.secs + 1.0))
}
