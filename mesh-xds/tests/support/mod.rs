//! Test fixtures: echo servers as endpoints, a scripted ADS management server, and Envoy
//! resources shaped as istiod sends them.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

pub mod ads;
pub mod demo;
/// The echo server and client of mesh-tower's tests, shared rather than copied.
#[path = "../../../mesh-tower/tests/support/mod.rs"]
pub mod echo;
pub mod istiod;
pub mod resources;
