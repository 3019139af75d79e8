//! `mesh-xds`: a development control plane serving Istio YAML over ADS, and an offline
//! checker.
//!
//! Exit codes: 0 success; 1 configuration errors (or the server failed); 2 usage errors;
//! 3 `--explain` found no listener or no route for the request, or the workload's Sidecar
//! refuses it.

#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use mesh_core::{Labels, Workload};
use mesh_xds::{
    check::{self, ExplainError},
    encode::Shape,
    server::ControlPlane,
};

/// Serve Istio YAML as Envoy xDS, or check it offline.
#[derive(Debug, Parser)]
#[command(name = "mesh-xds", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the files over ADS, pushing every change; a bad edit keeps the last good config.
    Serve {
        /// An Istio YAML file (repeatable).
        #[arg(long = "config", required = true)]
        config: Vec<PathBuf>,
        /// The port to listen on.
        #[arg(long, default_value_t = 18000)]
        port: u16,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        address: std::net::IpAddr,
        /// How often the files are checked for changes, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        poll_ms: u64,
        /// Also send what only this mesh's client reads (outlier detection, every
        /// circuit-breaker limit, timeouts, file-based TLS); gRPC's own clients may NACK it.
        /// Off by default: the resources are what istiod sends a proxyless gRPC client.
        #[arg(long)]
        mesh_extensions: bool,
    },
    /// Validate files offline; with --explain, show what a request would get.
    Check {
        /// Istio YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A request: `METHOD URL [-H name:value]...`.
        #[arg(long)]
        explain: Option<String>,
        /// The namespace of the workload the request is explained for (its Sidecar).
        #[arg(long, default_value = "default")]
        namespace: String,
        /// A label of that workload, `key=value`; repeat for more.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            files,
            explain,
            namespace,
            labels,
        } => run_check(&files, explain.as_deref(), &namespace, &labels),
        Command::Serve {
            config,
            port,
            address,
            poll_ms,
            mesh_extensions,
        } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: starting the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            runtime.block_on(serve(
                config,
                std::net::SocketAddr::new(address, port),
                Duration::from_millis(poll_ms.max(1)),
                if mesh_extensions {
                    Shape::MeshExtensions
                } else {
                    Shape::Istiod
                },
            ))
        }
    }
}

fn run_check(
    files: &[PathBuf],
    explain: Option<&str>,
    namespace: &str,
    labels: &[String],
) -> ExitCode {
    let pairs: Option<Vec<(&str, &str)>> = labels.iter().map(|l| l.split_once('=')).collect();
    let workload = match pairs.map(Labels::new) {
        Some(Ok(labels)) => Workload::new(namespace, labels),
        Some(Err(e)) => {
            eprintln!("error: --label: {e}");
            return ExitCode::from(2);
        }
        None => {
            eprintln!("error: --label takes `key=value`");
            return ExitCode::from(2);
        }
    };
    let mut texts = Vec::with_capacity(files.len());
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(t) => texts.push((f.display().to_string(), t)),
            Err(e) => {
                eprintln!("error: {}: {e}", f.display());
                return ExitCode::from(1);
            }
        }
    }
    let report = check::check(&texts);
    for w in &report.warnings {
        println!("warning: {w}");
    }
    for e in &report.errors {
        println!("error: {e}");
    }
    let Some(config) = report.config else {
        println!(
            "{} error(s), {} warning(s)",
            report.errors.len(),
            report.warnings.len()
        );
        return ExitCode::from(1);
    };
    println!(
        "ok: {} listener(s), {} cluster(s), {} warning(s)",
        config.listeners().len(),
        config.clusters().len(),
        report.warnings.len()
    );
    let Some(request) = explain else {
        return ExitCode::SUCCESS;
    };
    // As the workload's Sidecar narrows it, like the data plane serving that workload.
    let config = config.for_workload(&workload);
    match check::explain(&config, request) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e @ ExplainError::Syntax { .. }) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            println!("{e}");
            ExitCode::from(3)
        }
    }
}

async fn serve(
    files: Vec<PathBuf>,
    addr: std::net::SocketAddr,
    poll: Duration,
    shape: Shape,
) -> ExitCode {
    let (cp, watch) = match ControlPlane::from_istio_yaml_as(&files, poll, shape) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: listening on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    let snapshot = cp.snapshot();
    println!(
        "serving ADS on {local}: version {}, {} listener(s), {} cluster(s)",
        snapshot.version,
        snapshot.config.listeners().len(),
        snapshot.config.clusters().len()
    );
    for w in watch.status().warnings {
        println!("warning: {w}");
    }
    tokio::spawn(report(cp.clone(), watch, poll));
    match cp.serve(listener).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: serving: {e}");
            ExitCode::from(1)
        }
    }
}

/// Prints every push, every rejected edit with its reasons, and every NACK.
async fn report(cp: ControlPlane, watch: mesh_xds::server::FileWatch, poll: Duration) {
    let mut snapshots = cp.snapshots();
    let mut log = cp.log();
    let mut rejected = 0;
    let mut nacks = 0;
    let mut ticks = tokio::time::interval(poll);
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                let s = snapshots.borrow_and_update().clone();
                println!(
                    "pushed version {}: {} listener(s), {} cluster(s)",
                    s.version,
                    s.config.listeners().len(),
                    s.config.clusters().len()
                );
            }
            changed = log.changed() => {
                if changed.is_err() {
                    return;
                }
                let l = log.borrow_and_update().clone();
                for n in &l.nacks[nacks..] {
                    println!("NACK from {} for {} (nonce {}): {}", n.node, n.type_url, n.nonce, n.error);
                }
                nacks = l.nacks.len();
            }
            _ = ticks.tick() => {
                let status = watch.status();
                if status.rejected > rejected {
                    rejected = status.rejected;
                    if let Some(e) = status.last_error {
                        println!("rejected edit, still serving the last good configuration: {e}");
                    }
                }
            }
        }
    }
}
