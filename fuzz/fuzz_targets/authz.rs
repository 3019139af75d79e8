//! The authorization engine against a reference model of Istio's semantics (see
//! `mesh_fuzz::authz`).
//!
//! `cargo fuzz run authz corpus/authz seeds/authz`; the committed inputs in `seeds/authz` are
//! replayed by `cargo test` (`tests/replay.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::authz(data));
