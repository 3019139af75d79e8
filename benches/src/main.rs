//! `mesh-bench`: the load comparison of the proxyless mesh against plain tonic and nginx
//! sidecar hops, instruction counts under callgrind, and configuration scale.
//!
//! ```text
//! mesh-bench compare --rounds 5 --secs 5 --json target/bench/load.json   # interleaved variants
//! mesh-bench serve --stack plain --listen 127.0.0.1:0                    # (internal) a server
//! mesh-bench client --variant b --port 4000 --shape c16 --secs 5 ...     # (internal) one cell
//! ```
//!
//! `benches/run` runs every part and writes `benches/RESULTS.md`.

#![forbid(unsafe_code)]

use std::{alloc::System, fs, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use mesh_benches::{
    cell::{self, Shape, Watched},
    compare::{self, CompareSpec},
    instr,
    instr::Allocations,
    report, scale,
    variant::{self, ServerStack, Variant},
};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

/// The load comparison of the proxyless mesh.
#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Runs the variants interleaved (a b c1 c2 a b c1 c2 …) and writes a JSON report.
    Compare {
        /// Rounds of every (shape, variant) cell.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Measured seconds per cell.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Variants, comma-separated (a, a-hdr, b, e, c1, c2, d-tls, d-mtls).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "a,a-hdr,b,e,c1,c2,d-tls,d-mtls"
        )]
        variants: Vec<Variant>,
        /// Load shapes, comma-separated: c16 is a closed loop with 16 calls in flight, open2000 an
        /// open loop at 2000 calls per second.
        #[arg(long, value_delimiter = ',', default_value = "c1,c16,c64,open2000")]
        shapes: Vec<Shape>,
        /// Where nginx configurations and histograms go.
        #[arg(long, default_value = "target/bench/work")]
        work_dir: PathBuf,
        /// Where to write the JSON report.
        #[arg(long)]
        json: PathBuf,
    },
    /// Counts instructions and allocations per call under callgrind and writes a JSON report.
    Instr {
        /// Calls measured per variant.
        #[arg(long, default_value_t = 2000)]
        requests: u64,
        /// Variants, comma-separated (those without TLS or nginx: a, a-hdr, b, e).
        #[arg(long, value_delimiter = ',', default_value = "a,a-hdr,b,e")]
        variants: Vec<Variant>,
        /// Where callgrind's output files go.
        #[arg(long, default_value = "target/bench/work")]
        work_dir: PathBuf,
        /// Where to write the JSON report.
        #[arg(long)]
        json: PathBuf,
    },
    /// Times loading and applying a large configuration and route lookups; writes JSON.
    Scale {
        /// Clusters.
        #[arg(long, default_value_t = 1000)]
        clusters: usize,
        /// Endpoints per cluster.
        #[arg(long, default_value_t = 10)]
        endpoints_per_cluster: usize,
        /// Repetitions of each timing (the median is reported).
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// Where to write the JSON report.
        #[arg(long)]
        json: PathBuf,
    },
    /// Writes RESULTS.md (and the SVG chart) from the JSON reports that exist.
    Report {
        /// The JSON of `compare`.
        #[arg(long)]
        load: Option<PathBuf>,
        /// The JSON of `instr`.
        #[arg(long)]
        instr: Option<PathBuf>,
        /// The JSON of `scale`.
        #[arg(long)]
        scale: Option<PathBuf>,
        /// Hand-written notes to append (skipped when the file does not exist).
        #[arg(long)]
        notes: Option<PathBuf>,
        /// Marks the report as a smoke run, with this reason.
        #[arg(long)]
        smoke: Option<String>,
        /// Where to write the markdown.
        #[arg(long)]
        out: PathBuf,
        /// Where to write the chart (SVG); linked from the markdown by file name.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// (internal) Server and client in one process, run under callgrind by `instr`.
    InstrWorker {
        /// The variant (a, a-hdr, b or e).
        #[arg(long)]
        variant: Variant,
        /// Calls measured.
        #[arg(long)]
        requests: u64,
        /// Calls before measuring.
        #[arg(long, default_value_t = 200)]
        warmup: u64,
    },
    /// (internal) Serves the echo service and prints `listening on <address>`.
    Serve {
        /// `plain`, `plain-hdr`, `mesh`, `mesh-mtls` or `tls`.
        #[arg(long, value_parser = parse_stack)]
        stack: ServerStack,
        /// Where to listen (port 0: any free port).
        #[arg(long)]
        listen: SocketAddr,
        /// The certificate and key for `tls`, the workload certificate for `mesh-mtls` (written
        /// by `compare`).
        #[arg(long, default_value = "")]
        tls_dir: PathBuf,
    },
    /// (internal) Runs one cell and prints its result as JSON.
    Client {
        /// The variant.
        #[arg(long)]
        variant: Variant,
        /// The loopback port to send to.
        #[arg(long)]
        port: u16,
        /// The load shape.
        #[arg(long)]
        shape: Shape,
        /// Measured seconds.
        #[arg(long)]
        secs: f64,
        /// Processes to measure, `role=pid[,pid…]` (repeatable).
        #[arg(long)]
        watch: Vec<Watched>,
        /// Where to write the latency histogram (HdrHistogram V2).
        #[arg(long)]
        histogram_out: PathBuf,
        /// The certificate to trust for d-tls, the workload certificate for d-mtls (written by
        /// `compare`).
        #[arg(long, default_value = "")]
        tls_dir: PathBuf,
    },
}

fn parse_stack(s: &str) -> Result<ServerStack, String> {
    match s {
        "plain" => Ok(ServerStack::Plain),
        "plain-hdr" => Ok(ServerStack::PlainHeaders),
        "mesh" => Ok(ServerStack::Mesh),
        "mesh-mtls" => Ok(ServerStack::MeshMtls),
        "tls" => Ok(ServerStack::Tls),
        _ => Err(format!(
            "`{s}`: expected plain, plain-hdr, mesh, mesh-mtls or tls"
        )),
    }
}

/// Counts every allocation of this process, for `instr-worker`'s allocations per call.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// What [`ALLOCATOR`] has counted so far.
fn allocations() -> Allocations {
    let stats = ALLOCATOR.stats();
    Allocations {
        allocations: stats.allocations as u64,
        reallocations: stats.reallocations as u64,
        bytes: stats.bytes_allocated as u64,
    }
}

fn main() -> ExitCode {
    match run(Args::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

fn run(cmd: Cmd) -> Result<(), String> {
    match cmd {
        Cmd::Compare {
            rounds,
            secs,
            variants,
            shapes,
            work_dir,
            json,
        } => {
            if secs.is_nan() || secs <= 0.0 || rounds == 0 {
                return Err("--secs and --rounds must be positive".into());
            }
            let spec = CompareSpec {
                rounds,
                secs,
                shapes,
                variants,
                work_dir,
            };
            let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
            eprintln!("mesh-bench: about {} s", compare::estimate(&spec).as_secs());
            let report = compare::run(&exe, &spec).map_err(|e| e.to_string())?;
            write_json(&json, &report)
        }
        Cmd::Instr {
            requests,
            variants,
            work_dir,
            json,
        } => {
            let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
            let report = instr::run(&exe, &work_dir, &variants, requests.max(1))
                .map_err(|e| e.to_string())?;
            write_json(&json, &report)
        }
        Cmd::Scale {
            clusters,
            endpoints_per_cluster,
            repeat,
            json,
        } => {
            let heap = || {
                // A reallocation's growth or shrinkage is already in these two.
                let s = ALLOCATOR.stats();
                u64::try_from(s.bytes_allocated.saturating_sub(s.bytes_deallocated)).unwrap_or(0)
            };
            let report = scale::run(clusters, endpoints_per_cluster, repeat, &heap)
                .map_err(|e| e.to_string())?;
            write_json(&json, &report)
        }
        Cmd::Report {
            load,
            instr,
            scale,
            notes,
            smoke,
            out,
            svg,
        } => {
            let mut inputs = report::Inputs {
                load: load.as_deref().map(read_json).transpose()?,
                instr: instr.as_deref().map(read_json).transpose()?,
                scale: scale.as_deref().map(read_json).transpose()?,
                smoke,
                notes: notes.and_then(|p| fs::read_to_string(p).ok()),
                chart: None,
            };
            if let (Some(svg), Some(load)) = (&svg, &inputs.load) {
                report::chart(load, svg)?;
                inputs.chart = svg.file_name().map(|n| n.to_string_lossy().into_owned());
            }
            if inputs.smoke.is_none() && cfg!(debug_assertions) {
                inputs.smoke = Some("a debug build".into());
            }
            fs::write(&out, report::markdown(&inputs))
                .map_err(|e| format!("writing {}: {e}", out.display()))?;
            eprintln!("mesh-bench: wrote {}", out.display());
            Ok(())
        }
        Cmd::InstrWorker {
            variant,
            requests,
            warmup,
        } => instr::worker(variant, requests, warmup, allocations).map_err(|e| e.to_string()),
        Cmd::Serve {
            stack,
            listen,
            tls_dir,
        } => runtime()?.block_on(async {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("binding {listen}: {e}"))?;
            let address = listener.local_addr().map_err(|e| e.to_string())?;
            // The orchestrator reads this line to learn the port.
            println!("listening on {address}");
            variant::serve(stack, listener, &tls_dir, std::future::pending())
                .await
                .map_err(|e| e.to_string())
        }),
        Cmd::Client {
            variant,
            port,
            shape,
            secs,
            watch,
            histogram_out,
            tls_dir,
        } => {
            let duration =
                Duration::try_from_secs_f64(secs).map_err(|e| format!("--secs {secs}: {e}"))?;
            let (result, histogram) = runtime()?
                .block_on(cell::run(variant, port, &tls_dir, shape, duration, &watch))
                .map_err(|e| e.to_string())?;
            let bytes = compare::write_histogram(&histogram)?;
            fs::write(&histogram_out, bytes)
                .map_err(|e| format!("writing {}: {e}", histogram_out.display()))?;
            let json = serde_json::to_string(&result).map_err(|e| e.to_string())?;
            println!("{json}");
            Ok(())
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_json(path: &PathBuf, value: &impl serde::Serialize) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    fs::write(path, json).map_err(|e| format!("writing {}: {e}", path.display()))?;
    eprintln!("mesh-bench: wrote {}", path.display());
    Ok(())
}
