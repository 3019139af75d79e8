//! Trace headers decode and re-encode to the same ids (see `mesh_fuzz::trace_headers`).
//!
//! `cargo fuzz run trace_headers corpus/trace_headers seeds/trace_headers`; the committed inputs in
//! `seeds/trace_headers` are replayed by `cargo test` (`tests/replay.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::trace_headers(data));
