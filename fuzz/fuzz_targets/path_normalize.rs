//! Request paths under every normalization mode (see `mesh_fuzz::path_normalize`).
//!
//! `cargo fuzz run path_normalize corpus/path_normalize seeds/path_normalize`; the committed inputs in
//! `seeds/path_normalize` are replayed by `cargo test` (`tests/replay.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::path_normalize(data));
