//! Tower layers and the client stack that enforce `mesh-core` policies in-process, around tonic
//! and axum.
//!
//! # The stacks
//!
//! ```text
//! Mesh::channel(target):  route → metrics → fault → timeout → retry → trace
//!                         → (your per-attempt layer) → breaker + balance → endpoint (HTTP/2)
//! Mesh::server_layer(w):  (TLS accept: Peer) → trace → metrics → normalization
//!                         → authorization → fault → local rate limit → handler
//! ```
//!
//! The client order is [`Channel`]'s type (see [`channel`]): the metrics layer follows the route
//! layer so it can label a call with the chosen cluster, and sees each call once, around every
//! retry; trace is inside retry so every attempt is a span of its own. The server steps are one
//! service ([`server`]), since each reads the same snapshot and a denied request must reach no
//! later step.
//!
//! # The publish path
//!
//! ```text
//! Istio YAML (ConfigWatch) ─┐
//! xDS client (mesh-xds)    ─┼─→ Mesh::publish | publish_client | publish_server | publish_inbound
//! a MeshConfig you build   ─┘     under one publish lock: a new Snapshot = the config with the
//!                                 sources' other parts kept + one ClusterEntry per cluster,
//!                                 reusing the connections of endpoints still there (same TLS)
//!                                 and the state of clusters still there (breakers, outliers)
//!                             ─→ one ArcSwap store; `published` bumped (pending targets wake)
//! per request, client:  the route layer loads the snapshot once → RouteDecision in extensions
//! per request, server:  the server layer loads the configuration once
//! per connection:       ServerTls follows the mTLS mode each publish gives the port
//! ```
//!
//! # The public API
//!
//! What an application names, as tonic's `transport` module does, and nothing it cannot put
//! together itself; `public-api.txt` beside `Cargo.toml` lists every item
//! (`scripts/public-api --check`), so a change to it shows in review.
//!
//! - [`Mesh`] holds the configuration snapshot and the per-cluster runtime state; publish a new
//!   [`MeshConfig`](mesh_core::MeshConfig) with [`Mesh::publish`]. Its settings (identity,
//!   tracing, metrics, access log, request controls, discovery, the local workload) are given
//!   once, up front with [`Mesh::builder`] or late with a `Mesh::set_*` setter, which refuses a
//!   second value ([`AlreadySet`]).
//! - [`Channel`] is the client stack for one target; tonic clients accept it unchanged. Its
//!   [`channel`] module names what its type and its calls expose: the response future, the
//!   balancer a per-attempt layer wraps, the endpoint a response came from, the connect error.
//! - Each middleware is its own private module (`route`, `fault`, `timeout`, `retry`,
//!   `balance`, `endpoint`): they only work stacked as [`Channel`] stacks them. The route layer
//!   loads the snapshot once per request and puts its [`RouteDecision`] in the request's
//!   extensions; later layers, and a per-attempt layer of yours, read only that, so a request
//!   never sees two configuration versions.
//! - [`body`]: the request and response body types of the stacks.
//! - [`server`]: the server stack as one layer for tonic and axum ([`Mesh::server_layer`]).
//! - [`metrics`]: Istio's standard metrics from both sides, and the mesh's internals
//!   ([`MeshMetrics::install`]); [`admin`]: `/metrics`, `/config_dump`, `/clusters`.
//! - [`access_log`]: one line per request on both sides, Istio's text format or JSON
//!   ([`MeshBuilder::access_log`], [`Mesh::set_access_log`]).
//! - Diagnostics: with `RUST_LOG=mesh_tower=debug`, each call's route decision, retries (with
//!   their reason and backoff) and every answer the mesh makes itself (no route, fault, timeout,
//!   breaker overflow, no healthy endpoint, denial) are logged inside a span carrying the call's
//!   trace id (`mesh_call` on the client, `mesh_serve` on the server).
//! - [`tls`] is mutual TLS with SPIFFE identities: the endpoint connections follow each
//!   cluster's `UpstreamTls`, and [`tls::MeshListener`] accepts tonic and axum connections in the
//!   PeerAuthentication mode, putting the verified [`Peer`] in request extensions.
//! - [`Connector`]: how endpoint connections are opened, TCP unless the mesh is made with
//!   another ([`Mesh::with_connector`]: an in-memory network in tests, a Unix socket, a tunnel);
//!   the cluster's TLS and HTTP/2 run over it either way.
//!
//! Warnings and errors (a configuration warning, a rejected reload, a refused certificate, a
//! failed accept) are reported through [`tracing`](https://docs.rs/tracing): install a
//! subscriber, e.g. `tracing_subscriber::fmt().init()`, or they go nowhere.
//!
//! Failures the mesh decides (no route, fault abort, timeout, breaker overflow, no endpoint,
//! connect failure) are answered with a gRPC-correct response for gRPC callers (trailers-only,
//! `grpc-status`) and an HTTP status for HTTP callers; see [`ResponseFlags`].
//!
//! # Module order
//!
//! Modules depend one way: each uses only what its own layer and the layers before it in this
//! list define, so the crate reads from the top of the list down and no two modules need each
//! other. A path stands for the module and its submodules, except those listed on their own.
//! `scripts/check-layers` (run by `scripts/test`) fails on an import against this order.
//!
//! ```text
//!  0. shared types:   names, rng, request_path, peer, discovery, body::erased,
//!                     synthesize::flags, server::workload, balance::upstream, retry::replay
//!  1. tls, trace:     tls, trace
//!  2. endpoint:       endpoint
//!  3. cluster:        cluster
//!  4. route decision: decision, request_controls
//!  5. access log:     access_log
//!  6. metrics:        metrics
//!  7. mesh state:     mesh
//!  8. recorder:       metrics::recorder
//!  9. bodies:         body
//! 10. mesh answers:   synthesize
//! 11. retry:          retry
//! 12. balance:        balance
//! 13. layers:         timeout, fault, metrics::layer
//! 14. route:          route
//! 15. handles:        channel, server, admin, static_config, metrics::collector
//! ```
//!
//! Where this is not the stack's order, the code says why: the route decision sits low because
//! the access log reads it from a request's extensions, and `retry::replay` sits lower still
//! because the decision carries the replay buffer the balancer resends from; `mesh` (the configuration and state
//! handle) sits below the recorder, which finds the mesh's metrics and access log per request;
//! `retry` sits below `balance` because the balancer resends a request whose connection failed
//! with the retry layer's replay body.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
mod balance;
pub mod body;
pub mod channel;
mod cluster;
mod decision;
pub mod discovery;
mod endpoint;
mod fault;
mod mesh;
pub mod metrics;
mod names;
pub mod peer;
mod request_controls;
mod request_path;
mod retry;
pub mod rng;
mod route;
pub mod server;
mod static_config;
mod synthesize;
#[cfg(test)]
mod test_util;
mod timeout;
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
    endpoint::Connector,
    mesh::{AlreadySet, Mesh, MeshBuilder},
    metrics::MeshMetrics,
    peer::Peer,
    request_controls::RequestControls,
    server::{ServerLayer, Workload},
    static_config::{ConfigWatch, PARSE_TIME_BUDGET, StaticConfigError, WatchStatus},
    synthesize::ResponseFlags,
};
