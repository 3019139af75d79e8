//! `mesh-load`: a `grpcurl`-plus-load tool for mesh targets. Sends Echo calls through a mesh
//! channel and prints replies per version, statuses and latency percentiles.
//!
//! ```text
//! mesh-load echo.default.svc.cluster.local:50051 --config mesh.yaml -n 1000 -c 16
//! mesh-load echo.default.svc.cluster.local:50051 --config mesh.yaml --rate 200 --duration-secs 5 --json
//! ```

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use http::{HeaderName, HeaderValue};
use mesh_examples::load::{self, LoadSpec, Shape};
use mesh_tower::Mesh;

/// Sends Echo calls to a mesh target and summarizes what came back.
#[derive(Debug, Parser)]
struct Args {
    /// The target, `host:port` (static config) or `xds:///host:port`.
    target: String,
    /// Istio YAML files to route by (repeatable).
    #[arg(long = "config", required = true)]
    configs: Vec<PathBuf>,
    /// Calls in total (closed loop).
    #[arg(short = 'n', long, default_value_t = 100)]
    requests: u64,
    /// Calls in flight at a time (closed loop).
    #[arg(short = 'c', long, default_value_t = 1)]
    concurrency: usize,
    /// Calls per second (open loop; with --duration-secs).
    #[arg(long)]
    rate: Option<f64>,
    /// How long to send at --rate.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// A header to send, `name=value` (repeatable).
    #[arg(short = 'H', long = "header", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Each call's deadline in milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected name=value"))?;
    let name = HeaderName::try_from(name.trim()).map_err(|e| format!("`{name}`: {e}"))?;
    let value = HeaderValue::try_from(value.trim()).map_err(|e| format!("`{value}`: {e}"))?;
    Ok((name, value))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let shape = match args.rate {
        Some(rate) if rate > 0.0 && args.duration_secs > 0.0 => Shape::Open {
            rate,
            duration: Duration::from_secs_f64(args.duration_secs),
        },
        Some(_) => {
            eprintln!("--rate and --duration-secs must be positive");
            return ExitCode::from(2);
        }
        None => Shape::Closed {
            requests: args.requests,
            concurrency: args.concurrency,
        },
    };
    let (mesh, _watch) = match Mesh::from_istio_yaml(&args.configs, Duration::from_secs(1)) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let spec = LoadSpec {
        shape,
        headers: args.headers,
        timeout: args.timeout_ms.map(Duration::from_millis),
    };
    let summary = load::run(mesh.channel(args.target.as_str()), &spec).await;
    if args.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("cannot encode the summary: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        println!("{summary}");
    }
    if summary.status_count(tonic::Code::Ok) == summary.total {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
