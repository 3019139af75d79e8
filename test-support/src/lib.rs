//! Fixtures shared by the mesh's tests (never published): each test crate depends on this one
//! instead of including another crate's test files.

// Fixtures for tests: a failure to set one up is the test's failure, so they may panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod pki;
