//! Fuzzes the Istio YAML loader: no input may panic.
//!
//! `cargo fuzz run istio_yaml corpus/istio_yaml seeds/istio_yaml`; the committed inputs in
//! `seeds/istio_yaml` are replayed by `cargo test` (`tests/replay.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::istio_yaml(data));
