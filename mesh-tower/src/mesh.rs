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
//! this file holds the state and the publish path and the settings; [`MeshBuilder`] is in
//! `mesh/builder.rs`; [`Mesh::channel`] in `channel.rs` (the client stack);
//! [`Mesh::server_layer`] in `server/mod.rs` (the server stack); [`Mesh::from_istio_yaml`] in
//! `static_config.rs` (the YAML files and their reload). The module order of `lib.rs` puts the
//! mesh below the stacks; each of those files extends it from above.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, OnceLock, Weak, atomic::AtomicU32},
};

use arc_swap::ArcSwap;
use mesh_core::{
    DEFAULT_ROOT_NAMESPACE, InboundState, Labels, Locality, MeshConfig, MtlsMode, Workload,
    mtls_mode,
};
use tokio::sync::watch;

use crate::{
    Discovery,
    access_log::AccessLog,
    cluster::ClusterEntry,
    endpoint::Connector,
    metrics::MeshMetrics,
    request_controls::{self, RequestControls},
    tls::{Admission, CertificateFiles, MeshTls, ServerTls, TlsError},
    trace::{self, Tracing},
};

mod builder;
mod error;

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

    /// Makes `discovery` the resolver of `xds:///` targets. Only the first call takes effect; a
    /// later one is an [`AlreadySet`] error handing `discovery` back.
    #[must_use = "a discovery source set already is kept and this one returned"]
    pub fn set_discovery(
        &self,
        discovery: Arc<dyn Discovery>,
    ) -> Result<(), AlreadySet<Arc<dyn Discovery>>> {
        self.inner
            .discovery
            .set(discovery)
            .map_err(|d| AlreadySet::new("discovery source", d))
    }

    /// Sets the workload's identity: its certificate chain and private key, and the mesh trust
    /// bundle, as PEM files (`CertificateFiles::identity(chain, key).with_trust_bundle(ca)`).
    /// ISTIO_MUTUAL clusters present it and verify servers with the bundle; mTLS servers
    /// ([`Mesh::server_tls`], [`MeshTls::server`]) present it and verify clients with it. The files are loaded now
    /// (an error keeps the previous identity) and polled for rotation. Connections made from
    /// now on use it; open connections keep theirs.
    pub fn set_workload_identity(&self, files: CertificateFiles) -> Result<(), TlsError> {
        self.inner.tls.set_workload_identity(files)
    }

    /// How the mesh opens endpoint connections.
    pub(crate) fn connector(&self) -> &Connector {
        &self.inner.connector
    }

    /// The mesh's TLS context: the workload identity, the certificate-provider registry the
    /// xDS bootstrap fills (`mesh.tls().certificate_providers().register(..)`), and server-side
    /// acceptors.
    pub fn tls(&self) -> &MeshTls {
        &self.inner.tls
    }

    /// The server side of this workload's `port`, in the mTLS mode the PeerAuthentication
    /// policies of the served configuration give it ([`mtls_mode`] with the workload's
    /// `namespace` and `labels`, root namespace `istio-system`) — or, when an xDS client serves
    /// the port ([`MeshConfig::inbound`]), the mode of its inbound listener's filter chain,
    /// per connection: the chain the listener gives the connection's addresses; while the port
    /// has no listener, connections are closed unanswered) — kept current: every publish re-resolves the mode for new
    /// connections, and a change to STRICT drains open connections without a verified client
    /// certificate (see [`ServerTls`]). Presents the workload identity and verifies
    /// clients with its trust bundle, so one must be set
    /// ([`set_workload_identity`](Self::set_workload_identity)) even while the mode is
    /// PERMISSIVE or DISABLE: a later STRICT must never find the server without material.
    /// Fails outside a tokio runtime (the mode is followed by a task).
    pub fn server_tls(
        &self,
        namespace: impl Into<Arc<str>>,
        labels: Labels,
        port: u16,
    ) -> Result<ServerTls, TlsError> {
        let namespace = namespace.into();
        let resolve = move |config: &MeshConfig| match config.inbound().get(port) {
            None => Admission::Mode(mtls_mode(
                &config.server().peer_authentication,
                &namespace,
                &labels,
                port,
                DEFAULT_ROOT_NAMESPACE,
            )),
            Some(InboundState::Serving(listener)) => Admission::Chains(listener.clone()),
            // Until the inbound listener arrives, connections are closed unanswered (A36).
            Some(InboundState::NotServing(_)) => Admission::NotServing,
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            TlsError::policy("Mesh::server_tls must be called inside a tokio runtime")
        })?;
        // Built with material even for DISABLE: a later STRICT must not find it without any.
        let identity = self
            .inner
            .tls
            .workload_identity()
            .ok_or(TlsError::NoWorkloadIdentity)?;
        // Subscribed before the first resolution, so no publish in between goes unseen.
        let mut published = self.published();
        let server = ServerTls::new(MtlsMode::Strict, identity)?;
        // Cannot fail: the server was built with material.
        server.set_admission(resolve(&self.config()))?;
        let mesh: Weak<Inner> = Arc::downgrade(&self.inner);
        let follower = server.clone();
        runtime.spawn(async move {
            // Ends when the mesh is dropped (the sender goes) or when no listener uses the
            // server any more (only this task's clone is left).
            while published.changed().await.is_ok() && !follower.is_unused() {
                let Some(inner) = mesh.upgrade() else { return };
                let admission = resolve(&inner.snapshot.load().config);
                if follower.has_admission(&admission) {
                    continue;
                }
                tracing::info!(
                    port,
                    ?admission,
                    "the server's mTLS mode or filter chains changed for new connections"
                );
                // Cannot fail: the server was built with material.
                let _ = follower.set_admission(admission);
            }
        });
        Ok(server)
    }

    /// Makes `namespace` the Kubernetes namespace of this workload: channels made afterwards
    /// resolve short targets (`greeter:50051`, `greeter.prod:50051`) as Kubernetes DNS search
    /// would from a pod in it ([`MeshConfig::listener_in`]), and the Istio Sidecar that
    /// applies to the workload is chosen again at once ([`MeshConfig::for_workload`]). Only
    /// the first call takes effect; a later one is an [`AlreadySet`] error. Default is
    /// `default`.
    #[must_use = "a namespace set already is kept and this one returned"]
    pub fn set_local_namespace(
        &self,
        namespace: impl Into<Arc<str>>,
    ) -> Result<(), AlreadySet<Arc<str>>> {
        self.inner
            .local_namespace
            .set(namespace.into())
            .map_err(|n| AlreadySet::new("local namespace", n))?;
        self.republish();
        Ok(())
    }

    /// The Kubernetes namespace of this workload; `default` unless set.
    pub fn local_namespace(&self) -> Arc<str> {
        self.inner
            .local_namespace
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::from("default"))
    }

    /// Makes `labels` the pod labels of this workload: routes whose matches name
    /// `sourceLabels` (and `sourceNamespace`, checked against
    /// [`local_namespace`](Self::local_namespace)) apply to channels made afterwards only when
    /// these labels satisfy them, as a sidecar of this pod would decide; the Istio Sidecar
    /// whose `workloadSelector` they match applies at once ([`MeshConfig::for_workload`]).
    /// Only the first call takes effect; a later one is an [`AlreadySet`] error. Default is no
    /// labels, so a route naming `sourceLabels` never applies.
    #[must_use = "labels set already are kept and these returned"]
    pub fn set_local_labels(&self, labels: Labels) -> Result<(), AlreadySet<Labels>> {
        self.inner
            .local_labels
            .set(labels)
            .map_err(|l| AlreadySet::new("local labels", l))?;
        self.republish();
        Ok(())
    }

    /// Stores the published configuration again, narrowed for the workload as it is now
    /// (the Sidecar that applies depends on its namespace and labels).
    fn republish(&self) {
        let _serial = self.inner.publish.lock().unwrap_or_else(|p| p.into_inner());
        let published = self.inner.snapshot.load().published.clone();
        self.store_client(published);
    }

    /// Makes `locality` where this workload runs: clusters with locality load balancing
    /// ([`Cluster::locality_weighted`], set by a DestinationRule's `localityLbSetting`)
    /// prefer endpoints in the same region, zone and sub-zone and fail over outward as those
    /// become unhealthy, as a sidecar in that locality would. Applies at once (the current
    /// configuration is republished, connections kept). Only the first call takes effect; a
    /// later one is an [`AlreadySet`] error. Default is none: every endpoint is equally near.
    ///
    /// [`Cluster::locality_weighted`]: mesh_core::Cluster::locality_weighted
    #[must_use = "a locality set already is kept and this one returned"]
    pub fn set_local_locality(&self, locality: Locality) -> Result<(), AlreadySet<Locality>> {
        self.inner
            .local_locality
            .set(locality)
            .map_err(|l| AlreadySet::new("local locality", l))?;
        self.republish();
        Ok(())
    }

    /// Makes `address` the IP address of this workload: a consistent-hash load balancer with
    /// `useSourceIp` hashes it, as the sidecar of this workload would hash its application's
    /// address, so every request of this workload goes to the same endpoint. Applies to
    /// channels made afterwards. Only the first call takes effect; a later one is an
    /// [`AlreadySet`] error. Default is none: `useSourceIp` yields no hash and the pick is
    /// random, as Envoy's is for a request whose hash policy produced nothing.
    #[must_use = "an address set already is kept and this one returned"]
    pub fn set_local_address(&self, address: IpAddr) -> Result<(), AlreadySet<IpAddr>> {
        self.inner
            .local_address
            .set(address)
            .map_err(|a| AlreadySet::new("local address", a))
    }

    /// Where this workload runs, when set.
    pub fn local_locality(&self) -> Option<&Locality> {
        self.inner.local_locality.get()
    }

    /// This workload as source-scoped routes see it: [`local_namespace`](Self::local_namespace),
    /// the labels of [`set_local_labels`](Self::set_local_labels) and the address of
    /// [`set_local_address`](Self::set_local_address).
    pub fn local_workload(&self) -> Workload {
        let labels = self.inner.local_labels.get().cloned().unwrap_or_default();
        let mut workload = Workload::new(self.local_namespace(), labels);
        workload.address = self.inner.local_address.get().copied();
        workload
    }

    /// The discovery source, when one is set.
    pub fn discovery(&self) -> Option<&Arc<dyn Discovery>> {
        self.inner.discovery.get()
    }

    /// Makes `tracing` the trace settings of every channel of this mesh, including those made
    /// already. Only the first call takes effect; a later one is an [`AlreadySet`] error.
    /// Until then channels propagate W3C + B3 headers and record no spans.
    #[must_use = "tracing set already is kept and this one returned"]
    pub fn set_tracing(&self, tracing: Tracing) -> Result<(), AlreadySet<Tracing>> {
        self.inner
            .tracing
            .set(tracing)
            .map_err(|t| AlreadySet::new("tracing", t))
    }

    /// The trace settings of this mesh's channels.
    pub fn tracing(&self) -> &Tracing {
        self.inner.tracing.get().unwrap_or(&trace::DEFAULT_TRACING)
    }

    /// Makes `controls` say which `x-envoy-*` request headers every channel of this mesh
    /// honours (header-driven faults, trusted timeout and retry overrides). Only the first call
    /// takes effect; a later one is an [`AlreadySet`] error. Default is none: fault headers are
    /// ignored and override headers stripped unread.
    #[must_use = "request controls set already are kept and these returned"]
    pub fn set_request_controls(
        &self,
        controls: RequestControls,
    ) -> Result<(), AlreadySet<RequestControls>> {
        self.inner
            .request_controls
            .set(controls)
            .map_err(|c| AlreadySet::new("request controls", c))
    }

    /// The `x-envoy-*` request headers this mesh honours.
    pub fn request_controls(&self) -> &RequestControls {
        self.inner
            .request_controls
            .get()
            .unwrap_or(&request_controls::DEFAULT_REQUEST_CONTROLS)
    }

    /// The trace settings, shared with channels that read them per request.
    pub(crate) fn shared_tracing(&self) -> Arc<OnceLock<Tracing>> {
        self.inner.tracing.clone()
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

    pub(crate) fn active_faults(&self) -> &AtomicU32 {
        &self.inner.active_faults
    }

    pub(crate) fn metrics_cell(&self) -> &OnceLock<MeshMetrics> {
        &self.inner.metrics
    }

    /// Makes `metrics` the metrics the mesh's client and server stacks record into. Only the
    /// first call takes effect; a later one is an [`AlreadySet`] error.
    #[must_use = "metrics set already are kept and these returned"]
    pub fn set_metrics(&self, metrics: MeshMetrics) -> Result<(), AlreadySet<MeshMetrics>> {
        self.metrics_cell()
            .set(metrics)
            .map_err(|m| AlreadySet::new("metrics", m))
    }

    /// The installed metrics, if any.
    pub fn metrics(&self) -> Option<&MeshMetrics> {
        self.metrics_cell().get()
    }

    /// Makes `log` the access log of the mesh's client and server stacks, including those made
    /// already: one line per request on each. Only the first call takes effect; a later one is
    /// an [`AlreadySet`] error. Default is no access log.
    #[must_use = "an access log set already is kept and this one returned"]
    pub fn set_access_log(&self, log: AccessLog) -> Result<(), AlreadySet<AccessLog>> {
        self.inner
            .access_log
            .set(log)
            .map_err(|l| AlreadySet::new("access log", l))
    }

    /// The access log, if one is set.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.inner.access_log.get()
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
