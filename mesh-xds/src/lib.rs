//! The xDS client (ADS over tonic with Envoy v3 resources and gRPC's bootstrap format) that feeds
//! `mesh-core` snapshots to the mesh, and a small development control plane.
//!
//! - [`bootstrap`]: gRPC's bootstrap JSON (`GRPC_XDS_BOOTSTRAP`, `GRPC_XDS_BOOTSTRAP_CONFIG`).
//! - [`decode`]: Envoy v3 resources into the same [`mesh_core`] model the Istio YAML loader
//!   produces (clusters named `outbound|<port>|<subset>|<host>`, one route table per
//!   `host:port` listener), so both sources yield identical snapshots.
//! - [`client`]: the ADS client, [`client::XdsClient`], which resolves a mesh's `xds:///`
//!   targets and publishes complete snapshots; its config dump and CSDS service.
//! - [`encode`]: `mesh-core` → Envoy v3 resources as istiod shapes them for proxyless gRPC
//!   ([`encode::Shape::Istiod`]), or with what only this mesh's client reads
//!   ([`encode::Shape::MeshExtensions`], whose inverse is `decode`:
//!   `decode(encode_as(c, MeshExtensions)) == encode::canonical(c)`).
//! - [`server`]: the development control plane (ADS, state of the world), also the `mesh-xds
//!   serve` binary; gRPC's own xDS clients (C-core, grpc-js) accept what it serves.
//! - [`check`]: offline validation and `--explain` of what a request gets (`mesh-xds check`).

#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod check;
pub mod client;
pub mod decode;
pub mod encode;
pub mod server;

pub use mesh_core;
