//! Fixtures shared by the mesh's tests (never published): each test crate depends on this one
//! instead of including another crate's test files.
//!
//! - [`echo`]: the echo service with behaviour knobs, its client, and Istio YAML for a mesh of
//!   echo servers; [`server`]: servers behind `mesh.server_layer(..)` and their clients.
//! - [`memnet`]: an in-memory network (a mesh connector over `tokio::io::duplex`) for tests
//!   under paused time.
//! - [`pki`]: certificate authorities and workload certificates; [`mtls`]: mesh clients of the
//!   echo service over mTLS.
//! - [`metrics`]: the `/metrics` text parsed for assertions; [`eventually`]: a bounded wait.
//! - [`interop`]: gRPC's own implementations (grpcio, grpc-js) as peers.
//! - [`ads`], [`resources`], [`istiod`], [`demo`]: a scripted ADS server, Envoy resources shaped
//!   as istiod sends them (built here and rebuilt from istio's source), the demo's configurations.

// Fixtures for tests: a failure to set one up is the test's failure, so they may panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

// Fixtures whose fields and helpers say what they are by name, as the tests that use them.
#[allow(missing_docs, missing_debug_implementations)]
pub mod ads;
#[allow(missing_docs, missing_debug_implementations)]
pub mod demo;
#[allow(missing_docs, missing_debug_implementations)]
pub mod echo;
pub mod interop;
#[allow(missing_docs, missing_debug_implementations)]
pub mod istiod;
pub mod memnet;
pub mod metrics;
pub mod mtls;
pub mod pki;
#[allow(missing_docs, missing_debug_implementations)]
pub mod resources;
#[allow(missing_docs, missing_debug_implementations)]
pub mod server;

/// Waits (bounded) until `f` holds, checking every 10 ms; panics after 10 s naming `what`.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 10 s");
}
