//! The security suite: authorization bypasses and availability gaps found by a hostile review,
//! each reproduced over real HTTP/1.1 and HTTP/2 connections to tonic, axum and hyper servers
//! behind `MeshListener` and `mesh.server_layer(..)` on 127.0.0.1, with rcgen-made mTLS
//! certificates, one module per attack surface.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_test_support::{echo as support, mtls as harness, pki as certs, server as server_support};

mod drain;
mod fixture;
mod identity;
mod paths;
mod rotation;
