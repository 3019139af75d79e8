//! The xDS client: ADS state of the world over tonic, feeding complete snapshots to a mesh.
//!
//! Four parts, kept apart so each can be tested alone: [`state`] is the protocol as a pure
//! state machine (subscriptions, versions, nonces, ACK/NACK, the does-not-exist timer);
//! `transport` owns the tonic stream, reconnects and fallback; `assembly` turns the cache
//! into a [`MeshConfig`](mesh_core::MeshConfig) only when a target is complete; [`dump`] reports
//! everything (config dump, CSDS). [`XdsClient`] ties them to a [`Mesh`] as its
//! [`Discovery`] source.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    time::{Duration, SystemTime},
};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{DiscoveryRequest, DiscoveryResponse},
};
use mesh_tower::{
    AlreadySet, Discovery, Mesh, UnreadyTarget,
    admin::ConfigDumpExtension,
    mesh_core::{InboundListeners, InboundState},
    tls::{CertificateFiles, ProviderFiles, TlsError},
};
use tokio::{sync::Notify, task::JoinHandle};

use self::{
    assembly::{TargetConfig, TargetState},
    persist::{Owner, Persisted},
    state::AdsState,
};
use crate::bootstrap::{Bootstrap, CertificateProvider};

mod assembly;
pub mod backoff;
pub mod dump;
mod metrics;
mod persist;
pub mod state;
mod transport;

pub use self::{
    dump::{ConfigDump, CsdsService, ResourceDump, StaleDump},
    metrics::XdsMetrics,
    state::{Counters, DEFAULT_DOES_NOT_EXIST_TIMEOUT, ResourceStatus, ResourceType},
};

/// The xDS client of a mesh: resolves `xds:///host:port` targets over ADS.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use mesh_tower::{Mesh, mesh_core::MeshConfig};
/// use mesh_xds::{bootstrap::Bootstrap, client::XdsClient};
///
/// // GRPC_XDS_BOOTSTRAP=/etc/istio/proxy/grpc-bootstrap.json, as istio-agent writes it.
/// let bootstrap = Bootstrap::from_env()?;
/// let mesh = Mesh::new(MeshConfig::empty());
/// let xds = XdsClient::start(bootstrap, mesh.clone())?;
///
/// // Requests wait until the target's Listener, routes, clusters and endpoints have arrived.
/// let channel = mesh.channel("xds:///reviews.default.svc.cluster.local:9080");
/// # let _ = channel;
///
/// // What the client holds, for an admin endpoint; or mount `xds.csds()` on a tonic server.
/// println!("{}", serde_json::to_string_pretty(&xds.config_dump())?);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct XdsClient {
    inner: Arc<Inner>,
}

/// Options of [`XdsClient::start_with`].
#[derive(Clone, Debug)]
pub struct XdsClientOptions {
    /// How long a subscribed resource may stay unanswered before it is declared missing.
    /// Default is 15 s.
    pub does_not_exist_timeout: Duration,
    /// Where to persist the last ACKed resources, to start from them when the management
    /// server cannot be reached (see the `persist` module: written atomically after each
    /// accepted change, checked whole before use, marked stale until a fresh response).
    /// Default is `None`: nothing is persisted.
    pub persist_path: Option<PathBuf>,
}

/// Why a server cannot be driven by xDS.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The bootstrap names no inbound listeners.
    #[error("the bootstrap has no server_listener_resource_name_template")]
    NoServerListenerTemplate,
    /// The mesh has no workload identity and the bootstrap's `default` certificate provider
    /// could not become it.
    #[error("the workload identity from the bootstrap's `default` certificate provider: {0}")]
    Identity(#[source] TlsError),
}

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The mesh already has a discovery source.
    #[error("the mesh already has a discovery source")]
    DiscoveryAlreadySet,
    /// Not inside a tokio runtime.
    #[error("XdsClient::start must be called inside a tokio runtime")]
    NoRuntime,
}

pub(crate) struct Inner {
    pub(crate) bootstrap: Bootstrap,
    node: Node,
    mesh: Mesh,
    shared: Mutex<Shared>,
    /// Wakes the transport when a target is watched.
    pub(crate) wake: Notify,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Where accepted and rejected updates are counted, once set.
    metrics: OnceLock<XdsMetrics>,
    /// Where the last ACKed resources are persisted, when they are.
    persist_path: Option<PathBuf>,
    /// Who the persisted file belongs to.
    owner: Owner,
}

pub(crate) struct Shared {
    pub(crate) state: AdsState,
    /// The last complete configuration of each target.
    published: BTreeMap<String, TargetConfig>,
    /// Index in `xds_servers` of the server of the current stream.
    pub(crate) server: Option<usize>,
    publishes: u64,
    /// Whether the current stream has delivered an accepted update (it is known healthy).
    stream_healthy: bool,
    /// When the configuration was last known fresh, while no stream is healthy: the time the
    /// healthy stream broke. `None` before any configuration.
    stale_since: Option<SystemTime>,
    /// The persisted configuration, checked, until it is applied or a fresh response makes it
    /// useless.
    pending_restore: Option<Persisted>,
    /// When the persisted configuration in use was saved, while no fresh response has come.
    restored_from: Option<SystemTime>,
}

// === impl XdsClientOptions ===

impl Default for XdsClientOptions {
    fn default() -> Self {
        Self {
            does_not_exist_timeout: DEFAULT_DOES_NOT_EXIST_TIMEOUT,
            persist_path: None,
        }
    }
}

/// The client's resources in the admin endpoint's `/config_dump`, under `xds`:
/// `Admin::new(..).with_extension(Arc::new(xds_client.clone()))`.
impl ConfigDumpExtension for XdsClient {
    fn name(&self) -> &str {
        "xds"
    }

    fn dump(&self) -> serde_json::Value {
        serde_json::to_value(self.config_dump())
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
    }
}

/// Makes the bootstrap's `file_watcher` certificate-provider instances known to the mesh's TLS
/// context, so the clusters that name them (istiod's `default` and `ROOTCA`) find their files.
/// Other plugins stay unregistered: a cluster naming one fails its connections with an error
/// that names the instance, never with plaintext.
fn register_certificate_providers(bootstrap: &Bootstrap, mesh: &Mesh) {
    for (name, provider) in &bootstrap.certificate_providers {
        match provider {
            CertificateProvider::FileWatcher(files) => {
                mesh.tls().certificate_providers().register(
                    name.as_str(),
                    ProviderFiles {
                        certificate_file: files.certificate_file.clone(),
                        private_key_file: files.private_key_file.clone(),
                        ca_certificate_file: files.ca_certificate_file.clone(),
                    },
                );
            }
            CertificateProvider::Unsupported { plugin_name } => {
                tracing::warn!(instance = %name, plugin = %plugin_name, "certificate provider plugin not supported; clusters using it cannot connect");
            }
        }
    }
}

// === impl XdsClient ===

impl XdsClient {
    /// Starts the client on the current tokio runtime and makes it `mesh`'s discovery source.
    /// From then on the client owns the mesh's client half: it publishes every complete
    /// watched target ([`Mesh::publish_client`]); local server policy published beside it
    /// ([`Mesh::publish_server`]) is kept, and the ports it [`serve`](Self::serve)s get their
    /// server side from xDS ([`Mesh::publish_inbound`]). The client lives
    /// as long as the mesh holds it; [`shutdown`](Self::shutdown) stops the ADS stream.
    ///
    /// `channel_creds` `tls` is not implemented yet: such a server is never dialled in
    /// plaintext, the client logs why and tries the next one. NACKs, stream failures and
    /// ignored fields are logged through `tracing`: install a subscriber to see them.
    ///
    /// See the [example](XdsClient#example) on the type.
    pub fn start(bootstrap: Bootstrap, mesh: Mesh) -> Result<Self, StartError> {
        Self::start_with(bootstrap, mesh, XdsClientOptions::default())
    }

    /// [`start`](Self::start) with options.
    pub fn start_with(
        bootstrap: Bootstrap,
        mesh: Mesh,
        options: XdsClientOptions,
    ) -> Result<Self, StartError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let mut state = AdsState::new();
        state.set_does_not_exist_timeout(options.does_not_exist_timeout);
        let ignore_deletion = bootstrap.xds_servers.first().is_some_and(|s| {
            s.server_features
                .iter()
                .any(|f| f == "ignore_resource_deletion")
        });
        state.set_ignore_resource_deletion(ignore_deletion);
        let owner = Owner {
            server_uri: bootstrap
                .xds_servers
                .first()
                .map(|s| s.server_uri.clone())
                .unwrap_or_default(),
            node_id: bootstrap.node.id.clone(),
        };
        let pending_restore =
            options
                .persist_path
                .as_deref()
                .and_then(|path| match Persisted::load(path, &owner) {
                    Ok(persisted) => persisted,
                    Err(error) => {
                        tracing::warn!(%error, "persisted xDS configuration not used");
                        None
                    }
                });
        let inner = Arc::new(Inner {
            node: bootstrap.node.to_proto(),
            bootstrap,
            mesh: mesh.clone(),
            shared: Mutex::new(Shared {
                state,
                published: BTreeMap::new(),
                server: None,
                publishes: 0,
                stream_healthy: false,
                stale_since: None,
                pending_restore,
                restored_from: None,
            }),
            wake: Notify::new(),
            task: Mutex::new(None),
            metrics: OnceLock::new(),
            persist_path: options.persist_path,
            owner,
        });
        let client = Self { inner };
        if mesh.set_discovery(Arc::new(client.clone())).is_err() {
            return Err(StartError::DiscoveryAlreadySet);
        }
        // The workload's identity for source-scoped policy and short names; what the
        // application set before starting the client wins (each is set-once), so a setting
        // already set is no error here.
        let node = &client.inner.bootstrap.node;
        if let Some(namespace) = node.workload_namespace() {
            let _ = mesh.set_local_namespace(namespace);
        }
        let labels = node.workload_labels();
        if !labels.is_empty() {
            let _ = mesh.set_local_labels(labels);
        }
        if let Some(address) = node.workload_address() {
            let _ = mesh.set_local_address(address);
        }
        if let Some(locality) = node.workload_locality() {
            let _ = mesh.set_local_locality(locality);
        }
        register_certificate_providers(&client.inner.bootstrap, &mesh);
        let task = runtime.spawn(transport::run(client.inner.clone()));
        *client.inner.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(client)
    }

    /// Stops talking to the management server; the last published configuration stays.
    pub fn shutdown(&self) {
        if let Some(task) = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }

    /// Counts of accepted and rejected updates and unsupported fields.
    pub fn counters(&self) -> Counters {
        self.inner.lock().state.counters()
    }

    /// Counts every accepted and rejected update in `metrics` (`mesh_xds_updates_*_total`)
    /// and reports the configuration's age (`mesh_xds_config_age_seconds`: 0 while the stream
    /// is healthy, the time since it was otherwise). Only the first call takes effect; a later
    /// one is an [`AlreadySet`] error handing `metrics` back.
    #[must_use = "metrics set already are kept and these returned"]
    pub fn set_metrics(&self, metrics: XdsMetrics) -> Result<(), AlreadySet<XdsMetrics>> {
        let shared = self.inner.lock();
        if shared.stream_healthy {
            metrics.record_stream_healthy();
        } else if let Some(since) = shared.stale_since {
            metrics.record_stale_since(since);
        }
        drop(shared);
        self.inner
            .metrics
            .set(metrics)
            .map_err(|m| AlreadySet::new("xDS client metrics", m))
    }

    /// The `server_uri` of the server of the current stream, if one is up.
    pub fn connected_server(&self) -> Option<String> {
        let server = self.inner.lock().server?;
        self.inner
            .bootstrap
            .xds_servers
            .get(server)
            .map(|s| s.server_uri.clone())
    }

    /// Every resource the client holds, with its status.
    pub fn config_dump(&self) -> ConfigDump {
        dump::config_dump(&self.inner)
    }

    /// The CSDS service (`envoy.service.status.v3.ClientStatusDiscoveryService`) over this
    /// client, to mount on a tonic server.
    pub fn csds(&self) -> CsdsService {
        CsdsService::new(self.inner.clone())
    }

    /// Drives the server listening on `address` by xDS (gRFC A36): the client subscribes to
    /// its inbound Listener (the bootstrap's `server_listener_resource_name_template` with
    /// `ip:port`) and publishes it to the mesh as the port's server side
    /// ([`Mesh::publish_inbound`]), so [`Mesh::server_tls`] and [`Mesh::server_layer`] of that
    /// port follow the listener instead of the local policy: each connection gets the mTLS mode
    /// and RBAC of the filter chain that matches it, and is drained when an update changes that
    /// chain.
    ///
    /// The server presents the mesh's workload identity. When none is set, the bootstrap's
    /// `default` certificate provider — the instance istiod's inbound listeners name — becomes
    /// it, so an istio-agent bootstrap is enough to serve.
    ///
    /// Until the listener arrives, and whenever it does not exist or was rejected with no good
    /// version before, the port is *not serving*: its TLS acceptor closes new connections
    /// before sending a byte, open ones are drained, and the server stack answers their
    /// requests UNAVAILABLE. A rejected update keeps the last good listener serving.
    pub fn serve(&self, address: std::net::SocketAddr) -> Result<(), ServeError> {
        let name = self
            .inner
            .bootstrap
            .server_listener_name(address)
            .ok_or(ServeError::NoServerListenerTemplate)?;
        self.inner
            .adopt_bootstrap_identity()
            .map_err(ServeError::Identity)?;
        let mut shared = self.inner.lock();
        if shared.state.watch_server(address.port(), &name) {
            tracing::debug!(%address, listener = %name, "serving over xDS");
            self.inner.publish_inbound(&shared);
            drop(shared);
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// The bootstrap the client runs with.
    pub fn bootstrap(&self) -> &Bootstrap {
        &self.inner.bootstrap
    }
}

impl Discovery for XdsClient {
    fn watch(&self, target: &str) {
        let listener = self.inner.bootstrap.client_listener_name(target);
        let added = self.inner.lock().state.watch(target, &listener);
        if added {
            tracing::debug!(%target, %listener, "watching xDS target");
            self.inner.wake.notify_one();
        }
    }

    fn is_pending(&self, target: &str) -> bool {
        let shared = self.inner.lock();
        if shared.published.contains_key(target) {
            return false;
        }
        match shared.state.targets().get(target) {
            Some(listener) => {
                assembly::target_state(&shared.state, listener) == TargetState::Waiting
            }
            None => false,
        }
    }

    fn unready_targets(&self) -> Vec<UnreadyTarget> {
        let shared = self.inner.lock();
        let mut unready = Vec::new();
        for (target, listener) in shared.state.targets() {
            if shared.published.contains_key(target) {
                continue; // A complete configuration, fresh or persisted.
            }
            let reason = match assembly::target_state(&shared.state, listener) {
                TargetState::Waiting => format!(
                    "waiting for the Listener {listener} and what it references (routes, clusters, endpoints)"
                ),
                TargetState::Gone => format!("the Listener {listener} does not exist"),
                TargetState::Failed(reason) => reason,
                // Complete but not published yet: it is, with the next publish.
                TargetState::Complete(_) => continue,
            };
            unready.push(UnreadyTarget {
                target: target.clone(),
                reason,
            });
        }
        unready
    }
}

// === impl Shared ===

impl Shared {
    /// Whether the configuration in use was restored from the persisted file and nothing fresh
    /// has arrived since.
    pub(crate) fn serving_persisted(&self) -> bool {
        self.restored_from.is_some()
    }
}

// === impl Inner ===

impl Inner {
    /// Sets the mesh's workload identity from the bootstrap's `default` `file_watcher`
    /// provider when the mesh has none; an identity set by the application wins. Without such
    /// a provider nothing changes, and serving mTLS fails with the mesh's own error.
    fn adopt_bootstrap_identity(&self) -> Result<(), TlsError> {
        if self.mesh.tls().workload_identity().is_some() {
            return Ok(());
        }
        let Some(CertificateProvider::FileWatcher(files)) = self
            .bootstrap
            .certificate_providers
            .get(crate::decode::inbound::WORKLOAD_INSTANCE)
        else {
            return Ok(());
        };
        let (Some(certificate), Some(private_key)) =
            (&files.certificate_file, &files.private_key_file)
        else {
            return Ok(());
        };
        let mut identity = CertificateFiles::identity(certificate, private_key);
        if let Some(ca) = &files.ca_certificate_file {
            identity = identity.with_trust_bundle(ca);
        }
        self.mesh.set_workload_identity(identity)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends every request the state machine has ready.
    pub(crate) fn flush(
        &self,
        shared: &mut Shared,
        tx: &tokio::sync::mpsc::UnboundedSender<DiscoveryRequest>,
    ) {
        let now = tokio::time::Instant::now().into_std();
        while let Some(request) = shared.state.poll_request(now, &self.node) {
            if tx.send(request).is_err() {
                break; // The stream is gone; the next one resubscribes.
            }
        }
    }

    pub(crate) fn on_response(
        &self,
        response: &DiscoveryResponse,
        tx: &tokio::sync::mpsc::UnboundedSender<DiscoveryRequest>,
    ) {
        let mut shared = self.lock();
        let wall = transport::wall();
        let outcome = shared.state.on_response(response, wall);
        if outcome.acked {
            shared.stream_healthy = true;
            shared.stale_since = None;
            shared.pending_restore = None;
            shared.restored_from = None;
        }
        let to_persist = self
            .persist_path
            .as_ref()
            .filter(|_| outcome.acked && outcome.changed)
            .map(|path| (path, Persisted::of(&shared.state, wall)));
        if let Some(metrics) = self.metrics.get() {
            if outcome.acked {
                metrics.record_accepted(&response.type_url);
            } else {
                metrics.record_rejected(&response.type_url);
            }
        }
        self.flush(&mut shared, tx);
        if outcome.changed {
            self.republish(&mut shared);
        }
        drop(shared);
        if let Some((path, persisted)) = to_persist
            && let Err(error) = persisted.save(path, &self.owner)
        {
            tracing::warn!(%error, "persisting the xDS configuration failed");
        }
    }

    /// The management server could not be reached and nothing fresh has come: serve the
    /// persisted configuration, if there is one, marked stale until a fresh response.
    pub(crate) fn restore_persisted(&self) {
        let mut shared = self.lock();
        let Some(persisted) = shared.pending_restore.take() else {
            return;
        };
        let saved_at = persisted.saved_at;
        if !persisted.apply(&mut shared.state, transport::wall()) {
            tracing::error!(
                "persisted xDS configuration rejected on apply after passing its check"
            );
        }
        tracing::warn!(
            saved_at_unix_s = saved_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            "xDS management server unreachable: serving the persisted configuration, stale until a fresh response"
        );
        shared.restored_from = Some(saved_at);
        shared.stale_since = Some(saved_at);
        if let Some(metrics) = self.metrics.get() {
            metrics.record_stale_since(saved_at);
        }
        self.republish(&mut shared);
    }

    /// The stream ended: if it was healthy, the configuration is fresh as of now and ages
    /// from here.
    pub(crate) fn on_stream_ended(&self, shared: &mut Shared) {
        if std::mem::take(&mut shared.stream_healthy) {
            let now = transport::wall();
            shared.stale_since = Some(now);
            if let Some(metrics) = self.metrics.get() {
                metrics.record_stream_lost(now);
            }
        }
    }

    pub(crate) fn on_timeout(&self, tx: &tokio::sync::mpsc::UnboundedSender<DiscoveryRequest>) {
        let mut shared = self.lock();
        let now = tokio::time::Instant::now().into_std();
        if shared.state.handle_timeout(now) {
            self.flush(&mut shared, tx);
            self.republish(&mut shared);
        }
    }

    /// Rebuilds the configuration of every watched target; publishes when any changed.
    ///
    /// When none did, the current configuration is published again all the same: a target may
    /// have stopped being pending (it failed, or does not exist), and the requests waiting for
    /// it wake on a publish to find that out at once rather than at their deadline.
    fn republish(&self, shared: &mut Shared) {
        self.publish_inbound(shared);
        let mut changed = false;
        let targets: Vec<(String, String)> = shared
            .state
            .targets()
            .iter()
            .map(|(t, l)| (t.clone(), l.clone()))
            .collect();
        for (target, listener) in targets {
            match assembly::target_state(&shared.state, &listener) {
                TargetState::Complete(config) => {
                    if shared.published.get(&target) != Some(&config) {
                        shared.published.insert(target, config);
                        changed = true;
                    }
                }
                TargetState::Gone => {
                    if shared.published.remove(&target).is_some() {
                        tracing::warn!(%target, "xDS Listener deleted: target no longer configured");
                        changed = true;
                    }
                }
                TargetState::Failed(reason) => {
                    tracing::warn!(%target, %reason, "xDS target incomplete; keeping its last complete configuration");
                }
                TargetState::Waiting => {}
            }
        }
        if !changed {
            self.mesh.publish_client(self.mesh.published_config());
            return;
        }
        shared.publishes += 1;
        let version = format!("xds-{}", shared.publishes);
        // Only the client half: the server half belongs to whoever publishes server policy.
        match assembly::mesh_config(version, &shared.published) {
            Ok(config) => self.mesh.publish_client(Arc::new(config)),
            // Cannot happen: each target was assembled with every cluster it names.
            Err(e) => {
                tracing::error!(error = %e, "assembled xDS configuration is inconsistent; not published")
            }
        }
    }

    /// Publishes the state of every served port when it changed: serving with its inbound
    /// listener (the last good one), or not serving.
    fn publish_inbound(&self, shared: &Shared) {
        let ports = shared
            .state
            .servers()
            .iter()
            .map(|(port, name)| (*port, inbound_state(&shared.state, name)))
            .collect();
        let inbound = InboundListeners::new(ports);
        let current = self.mesh.config();
        if **current.inbound() == inbound {
            return;
        }
        for (port, state) in inbound.ports() {
            if current.inbound().get(*port) != Some(state) {
                match state {
                    InboundState::Serving(l) => {
                        tracing::info!(port, listener = %l.name, mtls = ?l.mtls_summary(), "xDS server serving")
                    }
                    InboundState::NotServing(why) => {
                        tracing::warn!(port, reason = %why, "xDS server not serving")
                    }
                }
            }
        }
        self.mesh.publish_inbound(Arc::new(inbound));
    }
}

/// Where the inbound Listener `name` stands for its server.
fn inbound_state(state: &AdsState, name: &str) -> InboundState {
    let Some(entry) = state.resource(ResourceType::Listener, name) else {
        return InboundState::NotServing("waiting for the inbound listener".into());
    };
    match (&entry.value, entry.status) {
        (Some(state::Resource::Inbound(l)), _) => InboundState::Serving(l.clone()),
        (Some(_), _) => InboundState::NotServing(
            format!("Listener {name} is a client listener, not a server's").into(),
        ),
        (None, ResourceStatus::DoesNotExist) => {
            InboundState::NotServing(format!("Listener {name} does not exist").into())
        }
        (None, ResourceStatus::Nacked) => InboundState::NotServing(
            entry
                .error
                .clone()
                .unwrap_or_else(|| format!("Listener {name} rejected"))
                .into(),
        ),
        (None, _) => InboundState::NotServing("waiting for the inbound listener".into()),
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsClient")
            .field("servers", &self.bootstrap.xds_servers)
            .finish_non_exhaustive()
    }
}
