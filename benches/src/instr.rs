//! Instructions and allocations per request under valgrind's callgrind: the stable figures on a
//! noisy machine.
//!
//! For each variant (`a`: plain tonic, `a-hdr`: plain tonic with the mesh's trace headers, `b`:
//! the mesh, `e`: tonic with tower's own policy layers) one process runs the echo server and the
//! client in-process on a current-thread runtime over loopback, warms up, then sends `N` calls
//! one after another inside [`measured_requests`]. Callgrind collects only inside that function
//! (`--collect-atstart=no --toggle-collect=*measured_requests*`), so start-up, connection setup
//! and warm-up are not counted; because the runtime is current-thread, every task the calls
//! wake — client, connection drivers, server — runs inside it. `b − a-hdr` per call is what the
//! mesh layers add (client and server side) over the same headers on the wire.
//!
//! Allocations are counted by the worker's own global allocator (`stats_alloc` in `main.rs`)
//! around the same calls, and printed as JSON on its standard output. Counting costs a few
//! instructions per allocation (two atomic additions), included in the instruction counts of
//! every variant alike.

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    process::{Command, Stdio},
};

use mesh_examples::{
    load::Transport,
    proto::echo::{EchoRequest, echo_client::EchoClient},
};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

use crate::variant::{self, Client, SetupError, Variant};

/// What callgrind counted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstrReport {
    /// Calls measured per variant.
    pub requests: u64,
    /// Instructions per call (client and server in one process), per variant key.
    pub per_request: BTreeMap<String, f64>,
    /// Heap allocations per call (`alloc` and `alloc_zeroed`; reallocations apart), per variant
    /// key.
    #[serde(default)]
    pub allocations_per_request: BTreeMap<String, f64>,
    /// Reallocations per call, per variant key.
    #[serde(default)]
    pub reallocations_per_request: BTreeMap<String, f64>,
    /// Bytes allocated per call, per variant key.
    #[serde(default)]
    pub bytes_per_request: BTreeMap<String, f64>,
    /// `b` minus `a`: what the mesh layers and its trace headers add per call.
    pub added_per_request: f64,
    /// Whether `b` includes the mesh server stack (see
    /// [`MESH_SERVER_STACK`](crate::variant::MESH_SERVER_STACK)).
    pub includes_server_stack: bool,
    /// `valgrind --version`.
    pub valgrind: String,
}

/// Allocation counts of the worker process so far (what its global allocator counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocations {
    /// `alloc` and `alloc_zeroed` calls.
    pub allocations: u64,
    /// `realloc` calls.
    pub reallocations: u64,
    /// Bytes allocated (including growth by `realloc`).
    pub bytes: u64,
}

impl Allocations {
    fn since(self, before: Allocations) -> Allocations {
        Allocations {
            allocations: self.allocations.saturating_sub(before.allocations),
            reallocations: self.reallocations.saturating_sub(before.reallocations),
            bytes: self.bytes.saturating_sub(before.bytes),
        }
    }
}

// === impl InstrReport ===

impl InstrReport {
    /// Instructions per call of `variant`, when measured.
    pub fn instructions(&self, variant: Variant) -> Option<f64> {
        self.per_request.get(variant.key()).copied()
    }

    /// Allocations per call of `variant`, when measured.
    pub fn allocations(&self, variant: Variant) -> Option<f64> {
        self.allocations_per_request.get(variant.key()).copied()
    }

    /// `b − a-hdr`: instructions the mesh adds over plain tonic sending the same headers.
    pub fn added_over_headers(&self) -> Option<f64> {
        Some(self.instructions(Variant::Mesh)? - self.instructions(Variant::PlainHeaders)?)
    }

    /// `b − a-hdr` in allocations per call.
    pub fn allocations_added_over_headers(&self) -> Option<f64> {
        Some(self.allocations(Variant::Mesh)? - self.allocations(Variant::PlainHeaders)?)
    }
}

/// An error counting instructions.
#[derive(Debug, thiserror::Error)]
pub enum InstrError {
    /// valgrind is not installed.
    #[error("valgrind is not installed: apt-get install -y valgrind")]
    NoValgrind,
    /// The run under valgrind failed.
    #[error("variant {variant} under callgrind: {message}")]
    Run {
        /// The variant.
        variant: Variant,
        /// What went wrong.
        message: String,
    },
    /// Setting up the in-process server and client failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A call failed.
    #[error("call failed: {0}")]
    Call(#[from] tonic::Status),
    /// A variant that needs TLS material or nginx was asked for.
    #[error("variant {0} is not counted under callgrind (a, a-hdr, b and e are)")]
    Unsupported(Variant),
}

/// The variants `instr` can count: in-process, without TLS material or nginx.
pub const VARIANTS: [Variant; 4] = [
    Variant::Plain,
    Variant::PlainHeaders,
    Variant::Mesh,
    Variant::HandMade,
];

/// Runs `exe instr-worker` under callgrind for each of `variants`, `requests` calls each.
pub fn run(
    exe: &Path,
    work_dir: &Path,
    variants: &[Variant],
    requests: u64,
) -> Result<InstrReport, InstrError> {
    if let Some(v) = variants.iter().find(|v| !VARIANTS.contains(v)) {
        return Err(InstrError::Unsupported(*v));
    }
    let valgrind = Command::new("valgrind")
        .arg("--version")
        .output()
        .map_err(|_| InstrError::NoValgrind)?;
    let valgrind = String::from_utf8_lossy(&valgrind.stdout).trim().to_owned();
    let mut per_request = BTreeMap::new();
    let mut allocations_per_request = BTreeMap::new();
    let mut reallocations_per_request = BTreeMap::new();
    let mut bytes_per_request = BTreeMap::new();
    for &variant in variants {
        let fail = |message: String| InstrError::Run { variant, message };
        fs::create_dir_all(work_dir).map_err(|e| fail(e.to_string()))?;
        let out_file = work_dir.join(format!("callgrind.{variant}.out"));
        eprintln!("callgrind: variant {variant}, {requests} calls");
        let output = Command::new("valgrind")
            .args([
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=*measured_requests*",
            ])
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg(exe)
            .args(["instr-worker", "--variant", variant.key()])
            .args(["--requests", &requests.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| fail(e.to_string()))?;
        if !output.status.success() {
            return Err(fail(format!("exited with {}", output.status)));
        }
        let counted: Allocations = String::from_utf8_lossy(&output.stdout)
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str(line).ok())
            .ok_or_else(|| fail("no allocation counts on standard output".into()))?;
        let text = fs::read_to_string(&out_file).map_err(|e| fail(e.to_string()))?;
        let total = summary_instructions(&text)
            .ok_or_else(|| fail(format!("no `summary:` line in {}", out_file.display())))?;
        if total == 0 {
            return Err(fail(
                "callgrind counted nothing: measured_requests was not found (inlined or renamed?)"
                    .into(),
            ));
        }
        let n = requests as f64;
        let key = variant.key().to_owned();
        per_request.insert(key.clone(), total as f64 / n);
        allocations_per_request.insert(key.clone(), counted.allocations as f64 / n);
        reallocations_per_request.insert(key.clone(), counted.reallocations as f64 / n);
        bytes_per_request.insert(key, counted.bytes as f64 / n);
    }
    let get = |v: Variant| per_request.get(v.key()).copied().unwrap_or_default();
    Ok(InstrReport {
        requests,
        added_per_request: get(Variant::Mesh) - get(Variant::Plain),
        per_request,
        allocations_per_request,
        reallocations_per_request,
        bytes_per_request,
        includes_server_stack: variant::MESH_SERVER_STACK,
        valgrind,
    })
}

/// The `summary:` (total Ir) of a callgrind output file.
pub fn summary_instructions(callgrind_out: &str) -> Option<u64> {
    callgrind_out
        .lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The worker: server and client of `variant` in this process, `warmup` calls, then
/// `requests` calls inside [`measured_requests`]; prints what `allocations` (this process's
/// allocation counter) counted during them as one JSON line.
pub fn worker(
    variant: Variant,
    requests: u64,
    warmup: u64,
    allocations: fn() -> Allocations,
) -> Result<(), InstrError> {
    if !VARIANTS.contains(&variant) {
        return Err(InstrError::Unsupported(variant));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SetupError::Io)?;
    let client = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(SetupError::Io)?;
        let port = listener.local_addr().map_err(SetupError::Io)?.port();
        // None of the counted variants uses TLS material.
        let no_tls = Path::new("");
        tokio::spawn(variant::serve(
            variant.server_stack(),
            listener,
            no_tls,
            std::future::pending(),
        ));
        let client = variant::client(variant, port, no_tls).await?;
        sequential_calls(&client, warmup).await?;
        Ok::<_, InstrError>(client)
    })?;
    let before = allocations();
    measured_requests(&rt, &client, requests)?;
    let counted = allocations().since(before);
    // The orchestrator reads this line (serde_json of a plain struct cannot fail).
    println!("{}", serde_json::to_string(&counted).unwrap_or_default());
    Ok(())
}

/// The calls callgrind counts; never inlined, so `--toggle-collect` finds it by name.
#[inline(never)]
pub fn measured_requests(rt: &Runtime, client: &Client, requests: u64) -> Result<(), InstrError> {
    rt.block_on(sequential_calls(client, requests))
}

async fn sequential_calls(client: &Client, n: u64) -> Result<(), InstrError> {
    match client {
        Client::Tonic(c) => calls(EchoClient::new(c.clone()), n).await,
        Client::Headers(c) => calls(EchoClient::new(c.clone()), n).await,
        Client::HandMade(c) => calls(EchoClient::new(c.clone()), n).await,
        Client::Mesh(c, _) => calls(EchoClient::new(c.clone()), n).await,
    }
}

async fn calls<C: Transport>(mut client: EchoClient<C>, n: u64) -> Result<(), InstrError> {
    for _ in 0..n {
        client
            .say(EchoRequest {
                message: "hello".into(),
            })
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary_line() {
        let out =
            "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 123456\ntotals: 123456\n";
        assert_eq!(summary_instructions(out), Some(123_456));
        assert_eq!(summary_instructions("events: Ir\n"), None);
    }
}
