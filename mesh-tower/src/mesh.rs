//! The process-wide mesh handle: the current configuration and the runtime state of each
//! cluster, published together.
//!
//! A [`Mesh`] holds one [`Snapshot`] behind an `ArcSwap`: the immutable [`MeshConfig`] plus, per
//! cluster, its endpoint connections and its long-lived state (load counters). Publishing a new
//! configuration builds a new snapshot that *reuses* the connection of every endpoint that is
//! still there and the state of every cluster that is still there, then swaps it in with one
//! store. A request loads the snapshot once (in the route layer) and carries what it needs in its
//! extensions, so it is served entirely by one configuration version; what a config change
//! removes lives until its last request ends.
//!
//! Sources publish only their own part, so none drops another's: the client half (listeners
//! and clusters: [`Mesh::publish_client`], e.g. the xDS client), the local server policy
//! ([`Mesh::publish_server`], e.g. Istio YAML) and the xDS server side
//! ([`Mesh::publish_inbound`]). Each is one store of a snapshot combining the new part with the
//! others as they are, under one publish lock, so a request still loads one snapshot.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use mesh_core::{
    CircuitBreakers, Cluster, DEFAULT_ROOT_NAMESPACE, EndpointAddress, InboundState, Labels,
    LbPolicy, Locality, MeshConfig, MtlsMode, Outcome, OutlierDetector, OutlierEvent, TlsMode,
    Workload, lb::Balancer, mtls_mode,
};
use tokio::{sync::watch, time::Instant};

use crate::{
    Discovery,
    access_log::AccessLog,
    endpoint::Endpoint,
    metrics::MeshMetrics,
    request_controls::{self, RequestControls},
    rng,
    tls::{CertificateFiles, MeshTls, ServerTls, TlsError, UpstreamConnector},
    trace::{self, Tracing},
};

/// The mesh of this process: cheap to clone, shared by every channel.
///
/// Build it from Istio YAML ([`Mesh::from_istio_yaml`]), from a [`MeshConfig`] you assemble
/// ([`Mesh::new`], then [`Mesh::publish`]), or empty with an xDS client filling it in
/// (`mesh_xds::client::XdsClient::start`). Warnings and errors are reported through
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
    pub(crate) config: Arc<MeshConfig>,
    /// Looked up on every request: foldhash, several times cheaper than SipHash on names.
    pub(crate) clusters: HashMap<Arc<str>, ClusterEntry, foldhash::fast::RandomState>,
}

/// A cluster as one snapshot sees it.
#[derive(Clone, Debug)]
pub(crate) struct ClusterEntry {
    pub(crate) policy: Arc<Cluster>,
    /// The connection of each of the policy's endpoints, by the same index.
    pub(crate) connections: Arc<[Arc<Endpoint>]>,
    /// The balancer of this configuration of the cluster.
    pub(crate) balancer: Arc<Mutex<BalancerState>>,
    /// State that outlives configuration versions.
    pub(crate) state: Arc<ClusterState>,
}

/// A cluster's counters at one instant, for metrics and the admin endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClusterStats {
    pub(crate) active_requests: u64,
    pub(crate) overflows: u64,
    pub(crate) retries: u64,
    pub(crate) ejections: u64,
    pub(crate) endpoints: u64,
    pub(crate) ejected: u64,
}

/// A balancer and the health generation its health flags reflect.
#[derive(Debug)]
pub(crate) struct BalancerState {
    balancer: Balancer,
    generation: u64,
    /// The local workload's locality the balancer ranks endpoints by.
    locality: Option<Locality>,
}

/// Per-cluster state shared by all snapshots in which the cluster exists.
#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    /// Requests in flight (the `max_requests` breaker, the retry budget).
    pub(crate) active_requests: AtomicU32,
    /// Retries in flight (the `max_retries` breaker, the retry budget).
    pub(crate) active_retries: AtomicU32,
    /// Requests waiting for a connection to be made (the `max_pending_requests` breaker).
    pub(crate) pending_requests: AtomicU32,
    /// Requests rejected by a breaker.
    pub(crate) overflows: AtomicU64,
    /// Retries admitted.
    pub(crate) retries: AtomicU64,
    /// Endpoints ejected by outlier detection, ever.
    pub(crate) ejections: AtomicU64,
    /// Passive health: `None` when the cluster has no outlier detection.
    outlier: Mutex<Option<OutlierDetector>>,
    /// Bumped on every ejection and return, so balancers know to refresh health.
    health_generation: AtomicU64,
}
// === impl Mesh ===

impl Mesh {
    /// A mesh serving `config`.
    pub fn new(config: MeshConfig) -> Self {
        let empty = Snapshot {
            config: Arc::new(MeshConfig::empty()),
            clusters: HashMap::default(),
        };
        let mesh = Self {
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
                metrics: OnceLock::new(),
                request_controls: OnceLock::new(),
                access_log: OnceLock::new(),
            }),
        };
        mesh.publish(Arc::new(config));
        mesh
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
        self.store_server(|config| config.with_server(server));
    }

    /// Replaces the xDS server side (the inbound listener state of each xDS-driven port) and
    /// keeps everything else. Servers of those ports follow it
    /// ([`server_tls`](Self::server_tls), [`server_layer`](Self::server_layer)).
    pub fn publish_inbound(&self, inbound: Arc<mesh_core::InboundListeners>) {
        self.store_server(|config| config.with_inbound(inbound));
    }

    /// Stores `change(current config)` with the current cluster entries.
    fn store_server(&self, change: impl FnOnce(&MeshConfig) -> MeshConfig) {
        let _serial = self.inner.publish.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.inner.snapshot.load_full();
        let snapshot = Snapshot {
            config: Arc::new(change(&previous.config)),
            clusters: previous.clusters.clone(),
        };
        self.inner.snapshot.store(Arc::new(snapshot));
        self.inner.published.send_modify(|n| *n += 1);
    }

    /// Stores `config` whole, reusing the entries of clusters still there. The caller holds
    /// the publish lock.
    fn store_client(&self, config: Arc<MeshConfig>) {
        let previous = self.inner.snapshot.load_full();
        let clusters = config
            .clusters()
            .iter()
            .map(|(name, policy)| {
                let old = previous.clusters.get(name);
                let locality = self.inner.local_locality.get().cloned();
                let entry = ClusterEntry::build(policy, old, &self.inner.tls, locality);
                (name.clone(), entry)
            })
            .collect();
        self.inner
            .snapshot
            .store(Arc::new(Snapshot { config, clusters }));
        self.inner.published.send_modify(|n| *n += 1);
    }

    /// Makes `discovery` the resolver of `xds:///` targets. Only the first call takes effect; it
    /// returns `false` when a discovery source was already set.
    pub fn set_discovery(&self, discovery: Arc<dyn Discovery>) -> bool {
        self.inner.discovery.set(discovery).is_ok()
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

    /// The mesh's TLS context: the workload identity, the certificate-provider registry the
    /// xDS bootstrap fills (`mesh.tls().certificate_providers().register(..)`), and server-side
    /// acceptors.
    pub fn tls(&self) -> &MeshTls {
        &self.inner.tls
    }

    /// The server side of this workload's `port`, in the mTLS mode the PeerAuthentication
    /// policies of the served configuration give it ([`mtls_mode`] with the workload's
    /// `namespace` and `labels`, root namespace `istio-system`) — or, when an xDS client serves
    /// the port ([`MeshConfig::inbound`]), the mode of its inbound listener's filter chain
    /// (STRICT while it has none) — kept current: every publish re-resolves the mode for new
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
            None => mtls_mode(
                &config.server().peer_authentication,
                &namespace,
                &labels,
                port,
                DEFAULT_ROOT_NAMESPACE,
            ),
            Some(InboundState::Serving(listener)) => listener.mtls,
            // Until the inbound listener says otherwise, nothing is accepted in plaintext (the
            // server stack answers every request UNAVAILABLE meanwhile).
            Some(InboundState::NotServing(_)) => MtlsMode::Strict,
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
        let server = ServerTls::new(resolve(&self.config()), identity)?;
        let mesh: Weak<Inner> = Arc::downgrade(&self.inner);
        let follower = server.clone();
        runtime.spawn(async move {
            // Ends when the mesh is dropped (the sender goes) or when no listener uses the
            // server any more (only this task's clone is left).
            while published.changed().await.is_ok() && !follower.is_unused() {
                let Some(inner) = mesh.upgrade() else { return };
                let mode = resolve(&inner.snapshot.load().config);
                if mode != follower.mode() {
                    tracing::info!(
                        port,
                        ?mode,
                        "PeerAuthentication mode changed for new connections"
                    );
                    // Cannot fail: the server was built with material.
                    let _ = follower.set_mode(mode);
                }
            }
        });
        Ok(server)
    }

    /// Makes `namespace` the Kubernetes namespace of this workload: channels made afterwards
    /// resolve short targets (`greeter:50051`, `greeter.prod:50051`) as Kubernetes DNS search
    /// would from a pod in it ([`MeshConfig::listener_in`]). Only the first call takes effect;
    /// it returns `false` when the namespace was already set. Default is `default`.
    pub fn set_local_namespace(&self, namespace: impl Into<Arc<str>>) -> bool {
        self.inner.local_namespace.set(namespace.into()).is_ok()
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
    /// these labels satisfy them, as a sidecar of this pod would decide. Only the first call
    /// takes effect; it returns `false` when the labels were already set. Default is no labels,
    /// so a route naming `sourceLabels` never applies.
    pub fn set_local_labels(&self, labels: Labels) -> bool {
        self.inner.local_labels.set(labels).is_ok()
    }

    /// Makes `locality` where this workload runs: clusters with locality load balancing
    /// ([`Cluster::locality_weighted`], set by a DestinationRule's `localityLbSetting`)
    /// prefer endpoints in the same region, zone and sub-zone and fail over outward as those
    /// become unhealthy, as a sidecar in that locality would. Applies at once (the current
    /// configuration is republished, connections kept). Only the first call takes effect; it
    /// returns `false` when the locality was already set. Default is none: every endpoint is
    /// equally near.
    ///
    /// [`Cluster::locality_weighted`]: mesh_core::Cluster::locality_weighted
    pub fn set_local_locality(&self, locality: Locality) -> bool {
        if self.inner.local_locality.set(locality).is_err() {
            return false;
        }
        let _serial = self.inner.publish.lock().unwrap_or_else(|p| p.into_inner());
        let config = self.inner.snapshot.load().config.clone();
        self.store_client(config);
        true
    }

    /// Makes `address` the IP address of this workload: a consistent-hash load balancer with
    /// `useSourceIp` hashes it, as the sidecar of this workload would hash its application's
    /// address, so every request of this workload goes to the same endpoint. Applies to
    /// channels made afterwards. Only the first call takes effect; it returns `false` when the
    /// address was already set. Default is none: `useSourceIp` yields no hash and the pick is
    /// random, as Envoy's is for a request whose hash policy produced nothing.
    pub fn set_local_address(&self, address: IpAddr) -> bool {
        self.inner.local_address.set(address).is_ok()
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
    /// already. Only the first call takes effect; it returns `false` when tracing was already
    /// set. Until then channels propagate W3C + B3 headers and record no spans.
    pub fn set_tracing(&self, tracing: Tracing) -> bool {
        self.inner.tracing.set(tracing).is_ok()
    }

    /// The trace settings of this mesh's channels.
    pub fn tracing(&self) -> &Tracing {
        self.inner.tracing.get().unwrap_or(&trace::DEFAULT_TRACING)
    }

    /// Makes `controls` say which `x-envoy-*` request headers every channel of this mesh
    /// honours (header-driven faults, trusted timeout and retry overrides). Only the first call
    /// takes effect; it returns `false` when they were already set. Default is none: fault
    /// headers are ignored and override headers stripped unread.
    pub fn set_request_controls(&self, controls: RequestControls) -> bool {
        self.inner.request_controls.set(controls).is_ok()
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

    /// The configuration currently served.
    pub fn config(&self) -> Arc<MeshConfig> {
        self.inner.snapshot.load().config.clone()
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

    /// Makes `log` the access log of the mesh's client and server stacks, including those made
    /// already: one line per request on each. Only the first call takes effect; it returns
    /// `false` when an access log was already set. Default is no access log.
    pub fn set_access_log(&self, log: AccessLog) -> bool {
        self.inner.access_log.set(log).is_ok()
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

// === impl ClusterEntry ===

impl ClusterEntry {
    /// The cluster's counters now.
    pub(crate) fn stats(&self) -> ClusterStats {
        let s = &self.state;
        let ejected = self
            .policy
            .endpoints
            .iter()
            .filter(|e| s.is_ejected(&e.address))
            .count();
        ClusterStats {
            active_requests: u64::from(s.active_requests.load(Ordering::Relaxed)),
            overflows: s.overflows.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            ejections: s.ejections.load(Ordering::Relaxed),
            endpoints: u64::try_from(self.policy.endpoints.len()).unwrap_or(u64::MAX),
            ejected: u64::try_from(ejected).unwrap_or(u64::MAX),
        }
    }

    fn build(
        policy: &Arc<Cluster>,
        old: Option<&ClusterEntry>,
        tls: &MeshTls,
        locality: Option<Locality>,
    ) -> Self {
        // A connection is kept only under the same TLS settings: a changed mode, trust bundle
        // or SAN matcher must not be served by a connection negotiated under the old ones.
        let reusable: HashMap<&EndpointAddress, &Arc<Endpoint>> = old
            .filter(|o| o.policy.tls == policy.tls)
            .map(|o| o.connections.iter().map(|c| (c.address(), c)).collect())
            .unwrap_or_default();
        let connector = (policy.tls.mode != TlsMode::Disable)
            .then(|| UpstreamConnector::new(policy.tls.clone(), tls.clone()));
        let connections: Arc<[Arc<Endpoint>]> = policy
            .endpoints
            .iter()
            .map(|e| match reusable.get(&e.address) {
                Some(kept) => Arc::clone(kept),
                None => Arc::new(Endpoint::with_tls(
                    e.address.clone(),
                    policy.connect_timeout,
                    connector.clone(),
                )),
            })
            .collect();
        let state = old.map(|o| o.state.clone()).unwrap_or_default();
        state.update_outlier(policy);
        let generation = state.health_generation.load(Ordering::Acquire);
        let healthy = state.healthy_flags(policy);
        Self {
            balancer: Arc::new(Mutex::new(BalancerState {
                balancer: Balancer::new(policy, &healthy, locality.as_ref()),
                generation,
                locality,
            })),
            policy: policy.clone(),
            connections,
            state,
        }
    }

    /// Picks an endpoint index with the cluster's policy, first refreshing health if an
    /// ejection or return happened since the balancer last looked, and running the outlier
    /// detector's timer when it is due (it is driven by traffic: with no requests nothing needs
    /// to return).
    pub(crate) fn pick(
        &self,
        request_hash: Option<u64>,
        avoid: &[EndpointAddress],
    ) -> Option<usize> {
        self.state.outlier_tick();
        let mut b = self.balancer.lock().unwrap_or_else(|p| p.into_inner());
        let generation = self.state.health_generation.load(Ordering::Acquire);
        if b.generation != generation {
            let healthy = self.state.healthy_flags(&self.policy);
            let BalancerState {
                balancer, locality, ..
            } = &mut *b;
            balancer.update(&self.policy, &healthy, locality.as_ref());
            b.generation = generation;
        }
        let load = |i: usize| match (&self.policy.lb, self.connections.get(i)) {
            (LbPolicy::PeakEwma { .. }, Some(c)) => c.peak_ewma_cost(),
            (_, Some(c)) => u64::from(c.active_requests()),
            _ => u64::MAX,
        };
        let tried = |i: usize| {
            self.connections
                .get(i)
                .is_some_and(|c| avoid.contains(c.address()))
        };
        // A retry prefers an endpoint not tried yet (Envoy's previous-hosts predicate, which
        // Istio sets with up to 5 selection attempts)...
        let mut picked = b.balancer.pick(request_hash, load, rng::draw())?;
        for _ in 1..5 {
            if !tried(picked) {
                return Some(picked);
            }
            picked = b.balancer.pick(request_hash, load, rng::draw())?;
        }
        if !tried(picked) {
            return Some(picked);
        }
        drop(b);
        // ...and, unlike Envoy, does not give up after those: any healthy untried endpoint,
        // from a random start, beats a second try of one that just failed. With none left,
        // the balancer's choice stands.
        let healthy = self.state.healthy_flags(&self.policy);
        let n = healthy.len();
        let start = usize::try_from(rng::draw() % n.max(1) as u64).unwrap_or(0);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| healthy.get(i).copied().unwrap_or(false) && !tried(i))
            .or(Some(picked))
    }
}

// === impl ClusterState ===

impl ClusterState {
    /// Takes a request slot if the cluster is under `max_requests`.
    pub(crate) fn try_admit_request(self: &Arc<Self>, max: u32) -> Option<Slot> {
        self.try_admit(SlotKind::Request, |n| n < max)
    }

    /// Takes a pending slot (a request waiting for its endpoint's connection to be made) if the
    /// cluster is under `max_pending_requests`.
    pub(crate) fn try_admit_pending(self: &Arc<Self>, max: u32) -> Option<Slot> {
        self.try_admit(SlotKind::Pending, |n| n < max)
    }

    /// Takes a retry slot if the cluster's retry budget (or, without one, its `max_retries`
    /// threshold) allows one more retry in flight.
    pub(crate) fn try_admit_retry(self: &Arc<Self>, breakers: &CircuitBreakers) -> Option<Slot> {
        self.try_admit(SlotKind::Retry, |retries| {
            breakers.admits_retry(self.active_requests.load(Ordering::Acquire), retries)
        })
    }

    /// Increments `kind`'s counter if `admits` it; counts an overflow otherwise.
    fn try_admit(self: &Arc<Self>, kind: SlotKind, admits: impl Fn(u32) -> bool) -> Option<Slot> {
        let admitted = self
            .counter(kind)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                admits(n).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            if matches!(kind, SlotKind::Retry) {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            Some(Slot {
                state: self.clone(),
                kind,
            })
        } else {
            self.overflows.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    fn counter(&self, kind: SlotKind) -> &AtomicU32 {
        match kind {
            SlotKind::Request => &self.active_requests,
            SlotKind::Pending => &self.pending_requests,
            SlotKind::Retry => &self.active_retries,
        }
    }

    /// Feeds one classified outcome of `host` to outlier detection.
    pub(crate) fn record_outcome(&self, host: &EndpointAddress, outcome: Outcome) {
        let mut outlier = self.outlier.lock().unwrap_or_else(|p| p.into_inner());
        let Some(detector) = outlier.as_mut() else {
            return;
        };
        let now = Instant::now().into_std();
        let event = detector.record(host, outcome, now, rng::draw());
        if let Some(event) = event {
            self.on_event(&event);
            self.health_generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn outlier_tick(&self) {
        let mut outlier = self.outlier.lock().unwrap_or_else(|p| p.into_inner());
        let Some(detector) = outlier.as_mut() else {
            return;
        };
        let now = Instant::now().into_std();
        if detector.poll_timeout().is_some_and(|due| due <= now) {
            let events = detector.on_timeout(now, rng::draw());
            if !events.is_empty() {
                events.iter().for_each(|e| self.on_event(e));
                self.health_generation.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Keeps the detector (and its ejections) across a configuration change of the same
    /// settings; new settings start a fresh detector.
    fn update_outlier(&self, policy: &Cluster) {
        let now = Instant::now().into_std();
        let mut outlier = self.outlier.lock().unwrap_or_else(|p| p.into_inner());
        let hosts = policy.endpoints.iter().map(|e| e.address.clone());
        match (&policy.outlier, outlier.as_mut()) {
            (None, _) => *outlier = None,
            (Some(config), Some(detector)) if detector.config() == config => {
                let events = detector.set_hosts(hosts, now);
                events.iter().for_each(|e| self.on_event(e));
            }
            (Some(config), _) => {
                let mut detector = OutlierDetector::new(config.clone(), now);
                detector.set_hosts(hosts, now);
                *outlier = Some(detector);
            }
        }
        self.health_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether outlier detection has ejected `host` now.
    pub(crate) fn is_ejected(&self, host: &EndpointAddress) -> bool {
        let outlier = self.outlier.lock().unwrap_or_else(|p| p.into_inner());
        outlier.as_ref().is_some_and(|d| d.is_ejected(host))
    }

    /// Logs an outlier event and counts ejections.
    fn on_event(&self, event: &OutlierEvent) {
        if matches!(event, OutlierEvent::Ejected { .. }) {
            self.ejections.fetch_add(1, Ordering::Relaxed);
        }
        log_event(event);
    }

    /// `healthy[i]`: the control plane says healthy and outlier detection has not ejected it.
    fn healthy_flags(&self, policy: &Cluster) -> Vec<bool> {
        let outlier = self.outlier.lock().unwrap_or_else(|p| p.into_inner());
        policy
            .endpoints
            .iter()
            .map(|e| e.is_healthy() && !outlier.as_ref().is_some_and(|d| d.is_ejected(&e.address)))
            .collect()
    }
}

fn log_event(event: &OutlierEvent) {
    match event {
        OutlierEvent::Ejected {
            host,
            reason,
            until,
        } => {
            tracing::info!(%host, ?reason, ?until, "endpoint ejected by outlier detection");
        }
        OutlierEvent::Returned { host } => {
            tracing::info!(%host, "endpoint returned from outlier ejection");
        }
    }
}

/// One of the cluster's breaker slots (a request, a pending request or a retry), held until
/// dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    state: Arc<ClusterState>,
    kind: SlotKind,
}

#[derive(Clone, Copy, Debug)]
enum SlotKind {
    Request,
    Pending,
    Retry,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.counter(self.kind).fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
