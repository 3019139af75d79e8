//! ADS responses through the xDS client's state machine (see `mesh_fuzz::xds_response`).
//!
//! `cargo fuzz run xds_response corpus/xds_response seeds/xds_response`; the committed inputs in
//! `seeds/xds_response` are replayed by `cargo test` (`tests/replay.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::xds_response(data));
