//! The process-wide mesh handle: the current configuration and the runtime state of each
//! cluster, published together.
//!
//! A [`Mesh`] holds one [`Snapshot`] behind an `ArcSwap`: the immutable [`MeshConfig`] plus, per
//! cluster, its endpoint connections and its long-lived state (load counters). Publishing a new
//! configuration builds a new snapshot incrementally, then swaps it in with one store: an
//! unchanged cluster keeps its entry as it is (connections, balancer, health); a changed one
//! keeps its state, the connection of every endpoint still there and its balancer's progress
//! (round robin continues, a hash ring is rebuilt only when its hosts changed). A request loads the snapshot once (in the route layer) and carries what it needs in its
//! extensions, so it is served entirely by one configuration version; what a config change
//! removes lives until its last request ends.
//!
//! Sources publish only their own part, so none drops another's: the client half (listeners
//! and clusters: [`Mesh::publish_client`], e.g. the xDS client), the local server policy
//! ([`Mesh::publish_server`], e.g. Istio YAML) and the xDS server side
//! ([`Mesh::publish_inbound`]). Each is one store of a snapshot combining the new part with the
//! others as they are, under one publish lock, so a request still loads one snapshot.
//!
//! # Settings
//!
//! What the mesh is given once (identity, tracing, metrics, access log, request controls,
//! discovery, the local workload) is read by channels already made, so it never changes under
//! a running call: [`Mesh::builder`] gives it up front and publishes the configuration once,
//! after every setting is in place; a `Mesh::set_*` setter binds one late (an xDS client
//! learning the node after start), once, and a second call is an [`AlreadySet`] error carrying
//! the refused value back.
//!
//! # Where `impl Mesh` lives
//!
//! One file per concern, each next to what it builds, so this module need not know the stacks:
//! this file holds the state and the publish path; the settings and their accessors are in
//! `mesh/settings.rs`; [`MeshBuilder`] is in `mesh/builder.rs`; [`Mesh::channel`] in `channel.rs` (the client stack);
//! [`Mesh::server_layer`] in `server/mod.rs` (the server stack); [`Mesh::from_istio_yaml`] in
//! `static_config.rs` (the YAML files and their reload). The module order of `lib.rs` puts the
//! mesh below the stacks; each of those files extends it from above.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, OnceLock, atomic::AtomicU32},
};

use arc_swap::ArcSwap;
use mesh_core::{Labels, Locality, MeshConfig};
use tokio::sync::watch;

use crate::{
    Discovery, access_log::AccessLog, cluster::ClusterEntry, endpoint::Connector,
    metrics::MeshMetrics, request_controls::RequestControls, tls::MeshTls, trace::Tracing,
};

mod builder;
mod error;
mod settings;

pub use self::{builder::MeshBuilder, error::AlreadySet};

/// The mesh of this process: cheap to clone, shared by every channel.
///
/// Build it from Istio YAML ([`Mesh::from_istio_yaml`]), from a [`MeshConfig`] you assemble
/// ([`Mesh::new`], then [`Mesh::publish`]), or empty with an xDS client filling it in
/// (`mesh_xds::client::XdsClient::start`); with settings (identity, tracing, metrics, the local
/// workload), through [`Mesh::builder`]. Warnings and errors are reported through
/// [`tracing`](https://docs.rs/tracing): install a subscriber (e.g. `tracing_subscriber::fmt()`)
/// to see them.
///
/// # Example
///
/// A channel is a `tower::Service` for any `http::Request`: tonic-generated clients take it as
/// is (`ReviewsClient::new(mesh.channel(..))`); here it is called directly. With no
/// configuration for the target, the mesh answers itself, without a connection:
///
/// ```
/// use mesh_tower::{Mesh, mesh_core::MeshConfig};
/// use tower::ServiceExt as _;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let mesh = Mesh::new(MeshConfig::empty());
/// let channel = mesh.channel("reviews.default.svc.cluster.local:9080");
///
/// let request = http::Request::get("http://reviews.default.svc.cluster.local:9080/reviews/1")
///     .body(String::new())?;
/// let response = channel.oneshot(request).await?;
/// // No listener for the target: answered by the mesh (an HTTP status here, a trailers-only
/// // gRPC status for gRPC callers).
/// assert!(!response.status().is_success());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Mesh {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    snapshot: ArcSwap<Snapshot>,
    /// Serializes publishers so two concurrent publishes cannot lose each other's reuse.
    publish: Mutex<()>,
    /// Faults in flight across the process (for `max_active_faults`).
    pub(crate) active_faults: AtomicU32,
    /// Where `xds:///` targets are resolved; set once.
    discovery: OnceLock<Arc<dyn Discovery>>,
    /// The Kubernetes namespace of this workload, for short target names; set once.
    local_namespace: OnceLock<Arc<str>>,
    /// The pod labels of this workload, for `sourceLabels`; set once.
    local_labels: OnceLock<Labels>,
    /// The IP address of this workload, for `useSourceIp` hashing; set once.
    local_address: OnceLock<IpAddr>,
    /// Where this workload runs, for locality-aware load balancing; set once.
    local_locality: OnceLock<Locality>,
    /// Bumped on every publish, so requests waiting for a pending target wake up.
    published: watch::Sender<u64>,
    /// Trace propagation and span recording of every channel; set once.
    tracing: Arc<OnceLock<Tracing>>,
    /// The workload identity, certificate providers and TLS configurations.
    tls: MeshTls,
    /// How endpoint connections are opened; fixed for the mesh's life.
    connector: Connector,
    /// Where requests are recorded; set once.
    metrics: OnceLock<MeshMetrics>,
    /// The `x-envoy-*` request headers honoured; set once.
    request_controls: OnceLock<RequestControls>,
    /// Where requests are logged; set once.
    access_log: OnceLock<AccessLog>,
}

/// One configuration with the runtime entries of its clusters.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// What the data plane serves: the published configuration narrowed for the local
    /// workload by its Sidecar ([`MeshConfig::for_workload`]).
    pub(crate) config: Arc<MeshConfig>,
    /// The configuration as published, narrowed again when the workload changes.
    published: Arc<MeshConfig>,
    /// Looked up on every request: foldhash, several times cheaper than SipHash on names.
    pub(crate) clusters: HashMap<Arc<str>, ClusterEntry, foldhash::fast::RandomState>,
}

// === impl Mesh ===

impl Mesh {
    /// A mesh serving `config`, with every setting at its default and its endpoints connected
    /// over TCP; [`Mesh::builder`] gives the settings up front.
    pub fn new(config: MeshConfig) -> Self {
        Self::with_connector(config, Connector::tcp())
    }

    /// A mesh serving `config` whose endpoint connections are opened by `connector` (with the
    /// cluster's TLS and HTTP/2 still run by the mesh over the stream it returns), e.g. an
    /// in-memory network in tests. [`Mesh::new`] is this with [`Connector::tcp`];
    /// [`MeshBuilder::connector`] is the same with the other settings.
    ///
    /// The connector is fixed at construction, not a setter: endpoints are made when a
    /// configuration is published, the first time inside this constructor, so a connector
    /// set afterwards would leave those endpoints on TCP (or would have to drop their
    /// connections). Every endpoint of the mesh uses it.
    pub fn with_connector(config: MeshConfig, connector: Connector) -> Self {
        let mesh = Self::unpublished(connector);
        mesh.publish(Arc::new(config));
        mesh
    }

    /// A mesh with an empty snapshot and no settings, for [`MeshBuilder::build`].
    fn unpublished(connector: Connector) -> Self {
        let nothing = Arc::new(MeshConfig::empty());
        let empty = Snapshot {
            config: nothing.clone(),
            published: nothing,
            clusters: HashMap::default(),
        };
        Self {
            inner: Arc::new(Inner {
                snapshot: ArcSwap::from_pointee(empty),
                publish: Mutex::new(()),
                active_faults: AtomicU32::new(0),
                discovery: OnceLock::new(),
                local_namespace: OnceLock::new(),
                local_labels: OnceLock::new(),
                local_locality: OnceLock::new(),
                local_address: OnceLock::new(),
                published: watch::Sender::new(0),
                tracing: Arc::default(),
                tls: MeshTls::default(),
                connector,
                metrics: OnceLock::new(),
                request_controls: OnceLock::new(),
                access_log: OnceLock::new(),
            }),
        }
    }

    /// Replaces the client half (listeners, clusters) and the local server policy
    /// ([`MeshConfig::server`]) with `config`'s; the xDS server side
    /// ([`publish_inbound`](Self::publish_inbound)) is kept. Requests already routed finish on
    /// the configuration they started with; new requests see the new one at once. Endpoints
    /// present in both keep their connections. A mesh fed by more than one source (xDS for
    /// clients, YAML for servers) publishes each part on its own:
    /// [`publish_client`](Self::publish_client), [`publish_server`](Self::publish_server).
    pub fn publish(&self, config: Arc<MeshConfig>) {
        let _serial = self.inner.publish.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.inner.snapshot.load();
        let config = keep(
            config,
            current.config.inbound(),
            MeshConfig::inbound,
            MeshConfig::with_inbound,
        );
        drop(current);
        self.store_client(config);
    }

    /// Replaces the client half (listeners and clusters) with `config`'s and keeps the server
    /// side served now (local policy and xDS inbound listeners); `config`'s own are not used.
    /// Endpoints present in both keep their connections.
    pub fn publish_client(&self, config: Arc<MeshConfig>) {
        let _serial = self.inner.publish.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.inner.snapshot.load();
        let config = keep(
            config,
            current.config.server(),
            MeshConfig::server,
            MeshConfig::with_server,
        );
        let config = keep(
            config,
            current.config.inbound(),
            MeshConfig::inbound,
            MeshConfig::with_inbound,
        );
        drop(current);
        self.store_client(config);
    }

    /// Replaces the local server policy (peer authentication, authorization, server faults,
    /// rate limit) and keeps everything else, the clusters with their connections, balancers
    /// and health state.
    pub fn publish_server(&self, server: Arc<mesh_core::ServerPolicy>) {
        self.store_server(|config| config.with_server(server.clone()));
    }

    /// Replaces the xDS server side (the inbound listener state of each xDS-driven port) and
    /// keeps everything else. Servers of those ports follow it
    /// ([`server_tls`](Self::server_tls), [`server_layer`](Self::server_layer)).
    pub fn publish_inbound(&self, inbound: Arc<mesh_core::InboundListeners>) {
        self.store_server(|config| config.with_inbound(inbound.clone()));
    }

    /// Stores `change(current config)` with the current cluster entries (the published
    /// configuration changed alike).
    fn store_server(&self, change: impl Fn(&MeshConfig) -> MeshConfig) {
        let _serial = self.inner.publish.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.inner.snapshot.load_full();
        let snapshot = Snapshot {
            config: Arc::new(change(&previous.config)),
            published: Arc::new(change(&previous.published)),
            clusters: previous.clusters.clone(),
        };
        self.inner.snapshot.store(Arc::new(snapshot));
        self.inner.published.send_modify(|n| *n += 1);
    }

    /// Stores `config` whole, narrowed for the local workload, reusing the entries of clusters
    /// still there ([`ClusterEntry::build`]). The caller holds the publish lock.
    fn store_client(&self, published: Arc<MeshConfig>) {
        let config = match published.visibility() {
            Some(_) => Arc::new(published.for_workload(&self.local_workload())),
            None => published.clone(),
        };
        if let Some(scope) = config.outbound() {
            tracing::debug!(
                sidecar = scope.sidecar.as_deref().unwrap_or("-"),
                mode = %scope.mode,
                hidden = scope.hidden.len(),
                "configuration narrowed for the local workload"
            );
        }
        let previous = self.inner.snapshot.load_full();
        let clusters = config
            .clusters()
            .iter()
            .map(|(name, policy)| {
                let old = previous.clusters.get(name);
                let locality = self.inner.local_locality.get().cloned();
                let entry = ClusterEntry::build(
                    policy,
                    old,
                    &self.inner.tls,
                    &self.inner.connector,
                    locality,
                );
                (name.clone(), entry)
            })
            .collect();
        self.inner.snapshot.store(Arc::new(Snapshot {
            config,
            published,
            clusters,
        }));
        self.inner.published.send_modify(|n| *n += 1);
    }

    /// A receiver that changes on every publish.
    pub(crate) fn published(&self) -> watch::Receiver<u64> {
        self.inner.published.subscribe()
    }

    /// The configuration currently served: as published, narrowed for the local workload by
    /// the Istio Sidecar that applies to it ([`MeshConfig::for_workload`]).
    pub fn config(&self) -> Arc<MeshConfig> {
        self.inner.snapshot.load().config.clone()
    }

    /// The configuration as published, before the local workload's Sidecar narrows it (what
    /// a control plane serving other workloads hands out).
    pub fn published_config(&self) -> Arc<MeshConfig> {
        self.inner.snapshot.load().published.clone()
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.load_full()
    }
}

/// `config` with its part (read by `get`) set to `current` (by `set`), without a copy when it
/// already is that.
fn keep<T>(
    config: Arc<MeshConfig>,
    current: &Arc<T>,
    get: impl Fn(&MeshConfig) -> &Arc<T>,
    set: impl Fn(&MeshConfig, Arc<T>) -> MeshConfig,
) -> Arc<MeshConfig> {
    if Arc::ptr_eq(get(&config), current) {
        config
    } else {
        Arc::new(set(&config, current.clone()))
    }
}

#[cfg(test)]
mod tests;
