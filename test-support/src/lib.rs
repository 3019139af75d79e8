//! Fixtures shared by the mesh's tests (never published): each test crate depends on this one
//! instead of including another crate's test files.

pub mod memnet;
