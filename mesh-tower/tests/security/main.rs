//! Security tests: attacks on the server stack over real HTTP/1.1 and HTTP/2 connections to
//! tonic and axum servers behind `mesh.server_layer(..)` on 127.0.0.1, one module per attack
//! surface.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod paths;
#[path = "../server_support/mod.rs"]
mod server_support;
#[path = "../support/mod.rs"]
mod support;
