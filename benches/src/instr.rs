//! Instructions per request under valgrind's callgrind: the stable figure on a noisy machine.
//!
//! For each variant (`a`: plain tonic, `b`: the mesh) one process runs the echo server and the
//! client in-process on a current-thread runtime over loopback, warms up, then sends `N` calls
//! one after another inside [`measured_requests`]. Callgrind collects only inside that function
//! (`--collect-atstart=no --toggle-collect=*measured_requests*`), so start-up, connection setup
//! and warm-up are not counted; because the runtime is current-thread, every task the calls
//! wake — client, connection drivers, server — runs inside it. The difference between the two
//! variants per call is what the mesh layers add (client and, once it lands, server side).

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
    /// `b` minus `a`: what the mesh layers add per call.
    pub added_per_request: f64,
    /// Whether `b` includes the mesh server stack (see
    /// [`MESH_SERVER_STACK`](crate::variant::MESH_SERVER_STACK)).
    pub includes_server_stack: bool,
    /// `valgrind --version`.
    pub valgrind: String,
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
}

/// Runs `exe instr-worker` under callgrind for `a` and `b`, `requests` calls each.
pub fn run(exe: &Path, work_dir: &Path, requests: u64) -> Result<InstrReport, InstrError> {
    let valgrind = Command::new("valgrind")
        .arg("--version")
        .output()
        .map_err(|_| InstrError::NoValgrind)?;
    let valgrind = String::from_utf8_lossy(&valgrind.stdout).trim().to_owned();
    let mut per_request = BTreeMap::new();
    for variant in [Variant::Plain, Variant::Mesh] {
        let fail = |message: String| InstrError::Run { variant, message };
        fs::create_dir_all(work_dir).map_err(|e| fail(e.to_string()))?;
        let out_file = work_dir.join(format!("callgrind.{variant}.out"));
        eprintln!("callgrind: variant {variant}, {requests} calls");
        let status = Command::new("valgrind")
            .args([
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=*measured_requests*",
            ])
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg(exe)
            .args(["instr-worker", "--variant", variant.key()])
            .args(["--requests", &requests.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| fail(e.to_string()))?;
        if !status.success() {
            return Err(fail(format!("exited with {status}")));
        }
        let text = fs::read_to_string(&out_file).map_err(|e| fail(e.to_string()))?;
        let total = summary_instructions(&text)
            .ok_or_else(|| fail(format!("no `summary:` line in {}", out_file.display())))?;
        if total == 0 {
            return Err(fail(
                "callgrind counted nothing: measured_requests was not found (inlined or renamed?)"
                    .into(),
            ));
        }
        per_request.insert(variant.key().to_owned(), total as f64 / requests as f64);
    }
    let get = |v: Variant| per_request.get(v.key()).copied().unwrap_or_default();
    Ok(InstrReport {
        requests,
        added_per_request: get(Variant::Mesh) - get(Variant::Plain),
        per_request,
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
/// `requests` calls inside [`measured_requests`].
pub fn worker(variant: Variant, requests: u64, warmup: u64) -> Result<(), InstrError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SetupError::Io)?;
    let client = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(SetupError::Io)?;
        let port = listener.local_addr().map_err(SetupError::Io)?.port();
        // Only a and b are counted; neither uses TLS material.
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
    measured_requests(&rt, &client, requests)
}

/// The calls callgrind counts; never inlined, so `--toggle-collect` finds it by name.
#[inline(never)]
pub fn measured_requests(rt: &Runtime, client: &Client, requests: u64) -> Result<(), InstrError> {
    rt.block_on(sequential_calls(client, requests))
}

async fn sequential_calls(client: &Client, n: u64) -> Result<(), InstrError> {
    match client {
        Client::Tonic(c) => calls(EchoClient::new(c.clone()), n).await,
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
