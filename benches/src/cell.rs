//! One cell of the comparison: one variant under one load shape, run by a client process of
//! its own, which measures itself and the server-side processes it is told to watch.
//!
//! The cell first warms up (connections made, caches warm; not recorded) for a fifth of its
//! time (0.2 s to 1 s), then runs for its duration, and reads the CPU time of every watched
//! process right before and right after the measured run.

use std::{fmt, path::Path, str::FromStr, time::Duration};

use hdrhistogram::Histogram;
use mesh_examples::load::{self, LoadSpec};
use serde::{Deserialize, Serialize};

use crate::{
    process::{self, Memory, ProcError},
    variant::{self, Client, SetupError, Variant},
};

/// The shape of the load in a cell.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    /// A closed loop: this many calls in flight, each sent when the previous one returns.
    Closed(usize),
    /// An open loop at this many calls per second, latency measured from each call's scheduled
    /// send time (no coordinated omission).
    Open(u32),
}

/// Processes a cell measures, by role (`server`, `nginx-server-side`, …); a role may be
/// several processes (an nginx master and its workers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Watched {
    /// What the processes are.
    pub role: String,
    /// Their ids.
    pub pids: Vec<u32>,
}

/// What one process role used during a cell's measured run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// The role (`client`, `server`, `nginx-client-side`, `nginx-server-side`).
    pub role: String,
    /// CPU time (user + system) during the measured run, microseconds.
    pub cpu_us: u64,
    /// Resident memory at the end of the run.
    pub memory: Memory,
}

/// What a cell measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// The variant.
    pub variant: String,
    /// The load shape.
    pub shape: Shape,
    /// Calls measured.
    pub requests: u64,
    /// Calls that did not end with `OK`.
    pub failures: u64,
    /// Wall time of the measured run, seconds.
    pub elapsed_secs: f64,
    /// Calls per second.
    pub throughput: f64,
    /// Per process role.
    pub usage: Vec<Usage>,
}

/// An error running a cell.
#[derive(Debug, thiserror::Error)]
pub enum CellError {
    /// The client could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A watched process could not be read.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// The latency histogram could not be allocated.
    #[error("no latency histogram")]
    NoHistogram,
}

// === impl Shape ===

impl Shape {
    /// The shapes the full comparison runs: closed loops at 1, 16 and 64, and an open loop.
    pub fn standard(rate: u32) -> Vec<Shape> {
        vec![
            Shape::Closed(1),
            Shape::Closed(16),
            Shape::Closed(64),
            Shape::Open(rate),
        ]
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Closed(c) => write!(f, "c{c}"),
            Shape::Open(rate) => write!(f, "open{rate}"),
        }
    }
}

impl FromStr for Shape {
    type Err = String;

    /// `c16` (closed loop, 16 in flight) or `open2000` (open loop, 2000 calls/s).
    fn from_str(s: &str) -> Result<Self, String> {
        let number = |digits: &str| digits.parse::<u32>().ok().filter(|n| *n > 0);
        if let Some(n) = s.strip_prefix("open").and_then(number) {
            Ok(Shape::Open(n))
        } else if let Some(n) = s.strip_prefix('c').and_then(number) {
            Ok(Shape::Closed(n as usize))
        } else {
            Err(format!(
                "`{s}`: expected c<concurrency> (e.g. c16) or open<rate> (e.g. open2000)"
            ))
        }
    }
}

impl FromStr for Watched {
    type Err = String;

    /// `role=pid[,pid…]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (role, pids) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected role=pid[,pid…]"))?;
        let pids = pids
            .split(',')
            .map(|p| p.parse().map_err(|_| format!("`{s}`: `{p}` is not a pid")))
            .collect::<Result<_, _>>()?;
        Ok(Watched {
            role: role.to_owned(),
            pids,
        })
    }
}

/// Runs one cell in this process: `variant`'s client against `port` (trusting the certificate
/// in `tls_dir` for `d-tls`), `shape` for about `duration`, measuring this process (`client`)
/// and `watched`.
pub async fn run(
    variant: Variant,
    port: u16,
    tls_dir: &Path,
    shape: Shape,
    duration: Duration,
    watched: &[Watched],
) -> Result<(CellResult, Histogram<u64>), CellError> {
    let client = variant::client(variant, port, tls_dir).await?;
    let concurrency = match shape {
        Shape::Closed(c) => c.max(1),
        Shape::Open(_) => 1,
    };
    let warmup = LoadSpec {
        shape: load::Shape::ClosedFor {
            duration: (duration / 5).clamp(Duration::from_millis(200), Duration::from_secs(1)),
            concurrency,
        },
        headers: Vec::new(),
        timeout: None,
    };
    drive(&client, &warmup).await;
    let measured = LoadSpec {
        shape: match shape {
            Shape::Closed(c) => load::Shape::ClosedFor {
                duration,
                concurrency: c.max(1),
            },
            Shape::Open(rate) => load::Shape::Open {
                rate: f64::from(rate),
                duration,
            },
        },
        ..warmup
    };
    let me = Watched {
        role: "client".into(),
        pids: vec![std::process::id()],
    };
    let all: Vec<&Watched> = std::iter::once(&me).chain(watched).collect();
    let before = all
        .iter()
        .map(|w| process::cpu_time_sum(&w.pids))
        .collect::<Result<Vec<_>, _>>()?;
    let (summary, histogram) = drive(&client, &measured).await;
    let mut usage = Vec::with_capacity(all.len());
    for (w, before) in all.iter().zip(before) {
        let after = process::cpu_time_sum(&w.pids)?;
        usage.push(Usage {
            role: w.role.clone(),
            cpu_us: u64::try_from(after.saturating_sub(before).as_micros()).unwrap_or(u64::MAX),
            memory: process::memory_sum(&w.pids)?,
        });
    }
    let ok = summary.status_count(tonic::Code::Ok);
    let result = CellResult {
        variant: variant.key().to_owned(),
        shape,
        requests: summary.total,
        failures: summary.total - ok,
        elapsed_secs: summary.elapsed_ms as f64 / 1000.0,
        throughput: summary.throughput,
        usage,
    };
    Ok((result, histogram.ok_or(CellError::NoHistogram)?))
}

async fn drive(client: &Client, spec: &LoadSpec) -> (load::Summary, Option<Histogram<u64>>) {
    match client {
        Client::Tonic(channel) => load::run_recorded(channel.clone(), spec).await,
        Client::Headers(channel) => load::run_recorded(channel.clone(), spec).await,
        Client::HandMade(channel) => load::run_recorded(channel.clone(), spec).await,
        Client::Mesh(channel, _mesh) => load::run_recorded(channel.clone(), spec).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_watch_lists_parse_and_print_back() {
        for s in ["c1", "c64", "open2000"] {
            assert_eq!(s.parse::<Shape>().unwrap().to_string(), s);
        }
        for bad in ["c0", "open", "x5", "c-1", "open0"] {
            assert!(bad.parse::<Shape>().is_err(), "{bad}");
        }
        let w: Watched = "nginx-server-side=10,11".parse().unwrap();
        assert_eq!(w.role, "nginx-server-side");
        assert_eq!(w.pids, [10, 11]);
        assert!("server".parse::<Watched>().is_err());
        assert!("server=x".parse::<Watched>().is_err());
    }
}
