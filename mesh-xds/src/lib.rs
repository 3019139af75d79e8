//! The xDS client (ADS over tonic with Envoy v3 resources and gRPC's bootstrap format) that feeds
//! `mesh-core` snapshots to the mesh, and a small development control plane.
//!
//! **Status: decoding in progress; the ADS client and control plane are not written yet.** Decoding Envoy resources will map onto the same [`mesh_core`] model the
//! Istio YAML loader produces (clusters named `outbound|<port>|<subset>|<host>`, one route table
//! per `host:port` listener), so both sources yield identical snapshots.

#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod client;
pub mod decode;

pub use mesh_core;
