//! Tower layers and the client stack that enforce `mesh-core` policies in-process, around tonic
//! and axum.
//!
//! ```text
//! Mesh::channel(target):  route → metrics → fault → timeout → retry → breaker + balance → endpoint (HTTP/2)
//! Mesh::server_layer(w):  (trace) → metrics → authorization → fault → local rate limit → handler
//! ```
//!
//! - [`Mesh`] holds the configuration snapshot and the per-cluster runtime state; publish a new
//!   [`MeshConfig`](mesh_core::MeshConfig) with [`Mesh::publish`].
//! - [`Channel`] is the client stack for one target; tonic clients accept it unchanged.
//! - Each middleware is its own module ([`route`], [`fault`], [`timeout`], [`retry`],
//!   [`balance`], [`endpoint`]). The route layer loads the snapshot once per request and puts its
//!   [`RouteDecision`] in the request's extensions; later layers read only that, so a request
//!   never sees two configuration versions.
//! - [`server`]: the server stack as one layer for tonic and axum ([`Mesh::server_layer`]).
//! - [`metrics`]: Istio's standard metrics from both sides, and the mesh's internals
//!   ([`MeshMetrics::install`]); [`admin`]: `/metrics`, `/config_dump`, `/clusters`.
//! - [`access_log`]: one line per request on both sides, Istio's text format or JSON
//!   ([`Mesh::set_access_log`]).
//! - Diagnostics: with `RUST_LOG=mesh_tower=debug`, each call's route decision, retries (with
//!   their reason and backoff) and every answer the mesh makes itself (no route, fault, timeout,
//!   breaker overflow, no healthy endpoint, denial) are logged inside a span carrying the call's
//!   trace id (`mesh_call` on the client, `mesh_serve` on the server).
//! - [`tls`] is mutual TLS with SPIFFE identities: the endpoint connections follow each
//!   cluster's `UpstreamTls`, and [`tls::MeshListener`] accepts tonic and axum connections in the
//!   PeerAuthentication mode, putting the verified [`Peer`] in request extensions.
//!
//! Warnings and errors (a configuration warning, a rejected reload, a refused certificate, a
//! failed accept) are reported through [`tracing`](https://docs.rs/tracing): install a
//! subscriber, e.g. `tracing_subscriber::fmt().init()`, or they go nowhere.
//!
//! Failures the mesh decides (no route, fault abort, timeout, breaker overflow, no endpoint,
//! connect failure) are answered with a gRPC-correct response for gRPC callers (trailers-only,
//! `grpc-status`) and an HTTP status for HTTP callers; see [`ResponseFlags`].

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod body;
pub mod channel;
mod cluster;
mod decision;
pub mod discovery;
pub mod endpoint;
pub mod fault;
mod mesh;
pub mod metrics;
mod names;
pub mod peer;
mod request_controls;
mod request_path;
pub mod retry;
mod rng;
pub mod route;
pub mod server;
mod static_config;
mod synthesize;
#[cfg(test)]
mod test_util;
pub mod timeout;
pub mod tls;
pub mod trace;

pub use mesh_core;
/// The metrics registry crate this crate's metrics are written for
/// ([`MeshMetrics::install`], [`admin::router`]), so applications need not depend on a matching
/// version themselves: `mesh_tower::prometheus_client::registry::Registry`.
pub use prometheus_client;

pub use self::{
    channel::Channel,
    decision::RouteDecision,
    discovery::{Discovery, UnreadyTarget},
    mesh::Mesh,
    metrics::{MeshMetrics, XdsMetrics},
    peer::Peer,
    request_controls::RequestControls,
    server::{ServerLayer, Workload},
    static_config::{ConfigWatch, PARSE_TIME_BUDGET, StaticConfigError, WatchStatus},
    synthesize::ResponseFlags,
};
