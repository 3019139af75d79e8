//! Tower layers and ready-made client/server stacks that enforce `mesh-core` policies in-process
//! around tonic and axum.
//!
//! **Status: skeleton.** The foundation (the policy model and every pure decision) lives in
//! [`mesh_core`]; this crate receives the data plane next. Its planned shape, one middleware per
//! module as in tower:
//!
//! ```text
//! client: trace → route → fault → timeout → retry → breaker → balance → endpoint (hyper h2, rustls)
//! server: TLS accept → trace → metrics → authz → fault → rate limit → handler
//! ```
//!
//! The `route` layer loads the `Arc<MeshConfig>` snapshot once per request and carries the chosen
//! route and cluster in request extensions, so no later layer reloads configuration and a request
//! never sees two versions.

#![forbid(unsafe_code)]

pub use mesh_core;
