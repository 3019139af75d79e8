//! The admin endpoint: `/metrics`, `/config_dump`, `/clusters`, `/ready` and `/healthz`, as an axum [`Router`] to
//! mount in an application's router or to serve on a side port.
//!
//! ```
//! use std::sync::Arc;
//!
//! use mesh_tower::{
//!     Mesh, MeshMetrics, Workload, admin, mesh_core::MeshConfig,
//!     prometheus_client::registry::Registry,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mesh = Mesh::new(MeshConfig::empty());
//! let workload = Workload::new("default", "reviews.default.svc.cluster.local", 9080);
//! let mut registry = Registry::default();
//! // Istio's metrics of the channels and of `mesh.server_layer(..)`, and the mesh's internals.
//! MeshMetrics::install(&mesh, &mut registry, &workload);
//! let registry = Arc::new(registry);
//!
//! // On a side port (port 0 picks a free one)...
//! let admin = admin::serve("127.0.0.1:0".parse()?, admin::router(&mesh, registry.clone())).await?;
//! println!("metrics on http://{}/metrics", admin.local_addr());
//! // ...or next to the application's routes.
//! let app: axum::Router = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "hello" }))
//!     .merge(admin::router(&mesh, registry));
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! - `/metrics`: the registry, in OpenMetrics 1.0.0 text when the `Accept` header asks for
//!   `application/openmetrics-text` (as a Prometheus server does), in the Prometheus text
//!   format 0.0.4 otherwise (promtool, curl, browsers, scrapers that send no `Accept`).
//! - `/config_dump`: the configuration the mesh serves now, as JSON, plus what each
//!   [`ConfigDumpExtension`] adds (the xDS client adds its resources' versions and status).
//! - `/clusters`: per cluster, its endpoints with health, outlier ejection state and requests
//!   in flight, and its breaker overflows and retries — the state balancing decides on.
//! - `/ready`: a readiness probe. 503 with the targets still waiting (JSON) until every target
//!   the mesh's [`Discovery`](crate::Discovery) source watches has a complete configuration,
//!   fresh or persisted; 200 after. A mesh without a discovery source is ready: it always has a
//!   configuration (the static one). Readiness never goes back to 503 on a control plane
//!   outage, since the cached configuration keeps serving.
//! - `/healthz`: a liveness probe, 200 while the process serves the admin endpoint.
//!
//! The admin endpoint has no authentication of its own: serve it on loopback or an internal
//! port, as Envoy's admin interface is.

mod exposition;
mod view;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::registry::Registry;

use self::exposition::Format;
use crate::Mesh;

/// Something that adds a section to `/config_dump`: the xDS client implements it to report its
/// resources (versions, ACK/NACK status, last errors).
///
/// # Example
///
/// ```
/// use mesh_tower::admin::ConfigDumpExtension;
///
/// #[derive(Debug)]
/// struct Build;
///
/// impl ConfigDumpExtension for Build {
///     fn name(&self) -> &str {
///         "build"
///     }
///     fn dump(&self) -> serde_json::Value {
///         serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })
///     }
/// }
/// ```
pub trait ConfigDumpExtension: std::fmt::Debug + Send + Sync + 'static {
    /// The section's key in the dump's `extensions` object.
    fn name(&self) -> &str;
    /// The section's content, taken at request time.
    fn dump(&self) -> serde_json::Value;
}

/// The admin endpoint's state; build its router with [`Admin::router`].
#[derive(Clone, Debug)]
pub struct Admin {
    mesh: Mesh,
    registry: Arc<Registry>,
    extensions: Vec<Arc<dyn ConfigDumpExtension>>,
}

// === impl Admin ===

impl Admin {
    /// An admin endpoint for `mesh` whose `/metrics` encodes `registry`.
    pub fn new(mesh: &Mesh, registry: Arc<Registry>) -> Self {
        Self {
            mesh: mesh.clone(),
            registry,
            extensions: Vec::new(),
        }
    }

    /// Adds a `/config_dump` section.
    pub fn with_extension(mut self, extension: Arc<dyn ConfigDumpExtension>) -> Self {
        self.extensions.push(extension);
        self
    }

    /// The router: `/metrics`, `/config_dump`, `/clusters`, `/ready`, `/healthz`.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/config_dump", get(config_dump))
            .route("/clusters", get(clusters))
            .route("/ready", get(ready))
            .route("/healthz", get(healthz))
            .with_state(Arc::new(self))
    }
}

/// The admin router for `mesh` and `registry` (see [`Admin`] to add config-dump sections).
pub fn router<S: Clone + Send + Sync + 'static>(mesh: &Mesh, registry: Arc<Registry>) -> Router<S> {
    Admin::new(mesh, registry).router()
}

/// An admin endpoint served on its own port by [`serve`]; dropping it stops serving.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Binds `addr` (port 0 picks a free port) and serves `router` there on a spawned task, until
/// the returned [`AdminServer`] is dropped. Bind errors are returned at once.
pub async fn serve(addr: SocketAddr, router: Router) -> std::io::Result<AdminServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let task = tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(AdminServer { local_addr, task })
}

// === impl AdminServer ===

impl AdminServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `/metrics`: the registry in the format the `Accept` header asks for (see [`exposition`]).
async fn metrics(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &admin.registry) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}"),
        )
            .into_response();
    }
    if format == Format::Text {
        text = exposition::to_text_format(&text);
    }
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            // The answer depends on `Accept`: a cache must not serve one format for the other.
            (header::VARY, "accept"),
        ],
        text,
    )
        .into_response()
}

async fn config_dump(State(admin): State<Arc<Admin>>) -> Json<serde_json::Value> {
    let config = admin.mesh.config();
    let mut dump = view::config(&config);
    let extensions: serde_json::Map<String, serde_json::Value> = admin
        .extensions
        .iter()
        .map(|e| (e.name().to_owned(), e.dump()))
        .collect();
    if let Some(object) = dump.as_object_mut() {
        object.insert("extensions".into(), extensions.into());
        object.insert(
            "request_controls".into(),
            view::request_controls(admin.mesh.request_controls()),
        );
    }
    Json(dump)
}

async fn clusters(State(admin): State<Arc<Admin>>) -> Json<serde_json::Value> {
    Json(view::clusters(&admin.mesh))
}

async fn ready(State(admin): State<Arc<Admin>>) -> Response {
    let unready = admin
        .mesh
        .discovery()
        .map(|d| d.unready_targets())
        .unwrap_or_default();
    if unready.is_empty() {
        return (StatusCode::OK, Json(serde_json::json!({ "ready": true }))).into_response();
    }
    let waiting: Vec<serde_json::Value> = unready
        .iter()
        .map(|u| serde_json::json!({ "target": u.target, "reason": u.reason }))
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "ready": false, "waiting": waiting })),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}
