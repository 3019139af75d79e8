//! The xDS client (ADS over tonic with Envoy v3 resources and gRPC's bootstrap format) that feeds
//! `mesh-core` snapshots to the mesh, and a small development control plane.
//!
//! Decoding Envoy resources maps onto the same [`mesh_core`] model the Istio YAML loader
//! produces (clusters named `outbound|<port>|<subset>|<host>`, one route table per `host:port`
//! listener), so both sources yield identical snapshots.
//!
//! - [`decode`]: Envoy v3 resources → `mesh-core`, with Envoy's field semantics.
//! - [`encode`]: `mesh-core` → Envoy v3 resources as istiod shapes them for proxyless gRPC; its
//!   inverse (`decode(encode(c)) == encode::canonical(c)`).
//! - [`server`]: the development control plane (ADS, state of the world), also the `mesh-xds
//!   serve` binary; gRPC's own xDS client accepts what it serves.
//! - [`check`]: offline validation and `--explain` of what a request gets (`mesh-xds check`).

#![forbid(unsafe_code)]

pub mod check;
pub mod decode;
pub mod encode;
pub mod server;

pub use mesh_core;
