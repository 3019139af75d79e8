//! Fixtures shared by the mesh's tests (never published): each test crate depends on this one
//! instead of including another crate's test files.
//!
//! - [`echo`]: the echo service with behaviour knobs, its client, and Istio YAML for a mesh of
//!   echo servers; [`server`]: servers behind `mesh.server_layer(..)` and their clients.
//! - [`pki`]: certificate authorities and workload certificates.
//! - [`metrics`]: the `/metrics` text parsed for assertions.
//! - [`ads`], [`resources`], [`istiod`], [`demo`]: a scripted ADS server, Envoy resources shaped
//!   as istiod sends them (built here and rebuilt from istio's source), the demo's configurations.

// Fixtures for tests: a failure to set one up is the test's failure, so they may panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Fixtures whose fields and helpers say what they are by name, as the tests that use them.
#[allow(missing_docs, missing_debug_implementations)]
pub mod ads;
#[allow(missing_docs, missing_debug_implementations)]
pub mod demo;
#[allow(missing_docs, missing_debug_implementations)]
pub mod echo;
#[allow(missing_docs, missing_debug_implementations)]
pub mod istiod;
pub mod metrics;
pub mod pki;
#[allow(missing_docs, missing_debug_implementations)]
pub mod resources;
#[allow(missing_docs, missing_debug_implementations)]
pub mod server;
