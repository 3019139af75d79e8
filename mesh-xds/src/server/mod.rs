//! A development control plane: serves a [`MeshConfig`] as Envoy v3 resources over ADS
//! (state of the world), and pushes every change to every open stream.
//!
//! It is what istiod is to a proxyless gRPC client, for a laptop, a test or a demo: the
//! resources are encoded ([`crate::encode`]) as istiod shapes them, so gRPC's own xDS clients
//! accept them. What istiod does not send gRPC (outlier detection, most circuit-breaker
//! limits, file-based TLS, ...) and only this mesh's client reads is served only by a
//! control plane made with [`ControlPlane::with_mesh_extensions`]. The protocol follows
//! Envoy's xDS rules:
//!
//! - Per stream and type URL, the client's subscription is the `resource_names` of its last
//!   request; an empty list is a wildcard for listeners and clusters (all of them) and
//!   nothing for routes and endpoints. Only subscribed resources are sent; for a wildcard,
//!   every resource of the type.
//! - Every response carries the snapshot's `version_info` and a nonce unique on the stream. A
//!   request whose `response_nonce` is not the last one sent for its type is stale and only
//!   updates nothing (Envoy's rule); one with the last nonce is an ACK, or a NACK when it
//!   carries `error_detail`. Both are recorded ([`ControlPlane::acks`],
//!   [`ControlPlane::nacks`], [`ControlPlane::log`]); a NACK is also logged with its detail.
//! - [`ControlPlane::set_config`] publishes a new snapshot through a `tokio::sync::watch`; each
//!   stream then sends every subscribed type whose resources changed.
//! - A listener subscribed by an istiod inbound name (`xds.istio.io/grpc/lds/inbound/<ip>:<port>`,
//!   what an xDS-enabled gRPC server asks for) is built per stream, as istiod builds it for the
//!   requesting node: mTLS mode and RBAC from the configuration's PeerAuthentication and
//!   AuthorizationPolicy for the workload its node metadata names (`NAMESPACE`, `LABELS`) and
//!   the port of the name ([`encode::inbound_view`]). Every such name is answered (with no
//!   policy: plaintext, no RBAC, as istiod under its default PERMISSIVE); a wildcard does not
//!   include them.
//!
//! The incremental (delta) protocol is not served: it answers `UNIMPLEMENTED`.
//!
//! # Example
//!
//! ```no_run
//! # async fn run(config: mesh_core::MeshConfig, newer: mesh_core::MeshConfig) {
//! use mesh_xds::server::ControlPlane;
//!
//! let cp = ControlPlane::new(config);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = listener.local_addr().unwrap(); // Point a gRPC bootstrap's `server_uri` here.
//! let server = cp.clone();
//! tokio::spawn(async move { server.serve(listener).await });
//! cp.set_config(newer); // Pushed to every open stream.
//! assert!(cp.nacks().is_empty());
//! # }
//! ```

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use envoy_types::pb::{
    envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer,
    google::protobuf::Any,
};
use mesh_core::MeshConfig;
use tokio::{net::TcpListener, sync::watch};

use crate::encode::{self, Shape, TYPE_URLS};

mod files;
mod stream;

pub use self::files::FileWatch;

/// One version of the served resources.
#[derive(Debug)]
pub struct Snapshot {
    /// The `version_info` of every response built from it.
    pub version: String,
    /// The configuration it was encoded from (see [`ControlPlane::set_resources`]).
    pub config: Arc<MeshConfig>,
    /// Resources by type URL, then by name.
    pub resources: BTreeMap<&'static str, BTreeMap<String, Any>>,
}

/// An ACK: the client applied a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The client's node id.
    pub node: String,
    /// The resource type.
    pub type_url: String,
    /// The version it applied.
    pub version: String,
    /// The nonce of the response it applied.
    pub nonce: String,
}

/// A NACK: the client rejected a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The client's node id.
    pub node: String,
    /// The resource type.
    pub type_url: String,
    /// The version the client keeps (its last accepted one).
    pub kept_version: String,
    /// The nonce of the rejected response.
    pub nonce: String,
    /// The client's `error_detail` message.
    pub error: String,
}

/// Everything clients said about the responses they received, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Log {
    /// ACKs.
    pub acks: Vec<Ack>,
    /// NACKs.
    pub nacks: Vec<Nack>,
    /// Requests received on all streams.
    pub requests: u64,
    /// Responses sent on all streams.
    pub responses: u64,
}

/// The control plane; clones share it.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    shape: Shape,
    snapshot: watch::Sender<Arc<Snapshot>>,
    log: watch::Sender<Log>,
    versions: AtomicU64,
    /// Serializes `set_config` so versions are published in order.
    publishing: Mutex<()>,
}

// === impl ControlPlane ===

impl ControlPlane {
    /// A control plane serving `config` as version `1`, in the shapes istiod sends a gRPC
    /// client ([`Shape::Istiod`]).
    pub fn new(config: MeshConfig) -> Self {
        Self::with_shape(config, Shape::Istiod)
    }

    /// A control plane that also sends what only this mesh's client reads
    /// ([`Shape::MeshExtensions`]: outlier detection, every circuit-breaker limit, timeouts,
    /// file-based TLS, ...). gRPC's own clients may NACK these resources.
    pub fn with_mesh_extensions(config: MeshConfig) -> Self {
        Self::with_shape(config, Shape::MeshExtensions)
    }

    /// A control plane serving `config` as version `1` in `shape`.
    pub fn with_shape(config: MeshConfig, shape: Shape) -> Self {
        let shared = Arc::new(Shared {
            shape,
            snapshot: watch::Sender::new(Arc::new(Snapshot::new("1".into(), config, shape))),
            log: watch::Sender::new(Log::default()),
            versions: AtomicU64::new(1),
            publishing: Mutex::new(()),
        });
        Self { shared }
    }

    /// Serves `config` from now on, pushing it to every open stream; returns its version.
    pub fn set_config(&self, config: MeshConfig) -> String {
        tracing::info!(mesh_version = config.version(), "configuration pushed");
        let shape = self.shape();
        self.publish(|version| Snapshot::new(version, config, shape))
    }

    /// The shape of the resources it serves.
    pub fn shape(&self) -> Shape {
        self.shared.shape
    }

    /// The snapshot being served.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.borrow().clone()
    }

    /// Serves `resources` as they are, pushing them to every open stream; returns their
    /// version. For tests and experiments with resources the encoder would not write (what a
    /// client does with a malformed or differently shaped resource); [`Snapshot::config`]
    /// stays the last configuration set.
    pub fn set_resources(&self, resources: &encode::Resources) -> String {
        let config = self.snapshot().config.clone();
        self.publish(|version| Snapshot {
            version,
            config,
            resources: Snapshot::index(resources),
        })
    }

    /// Publishes the snapshot `make` builds for the next version; versions are published in
    /// order.
    fn publish(&self, make: impl FnOnce(String) -> Snapshot) -> String {
        let _serial = self
            .shared
            .publishing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let version = (self.shared.versions.fetch_add(1, Ordering::SeqCst) + 1).to_string();
        self.shared
            .snapshot
            .send_replace(Arc::new(make(version.clone())));
        version
    }

    /// A receiver of every snapshot served from now on.
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.shared.snapshot.subscribe()
    }

    /// Every ACK received so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.shared.log.borrow().acks.clone()
    }

    /// Every NACK received so far.
    pub fn nacks(&self) -> Vec<Nack> {
        self.shared.log.borrow().nacks.clone()
    }

    /// A receiver of the ACK/NACK log, to wait for a client's answer without polling:
    /// `cp.log().wait_for(|log| !log.acks.is_empty()).await`.
    pub fn log(&self) -> watch::Receiver<Log> {
        self.shared.log.subscribe()
    }

    /// The gRPC service, to mount in a tonic server of your own.
    pub fn service(&self) -> AggregatedDiscoveryServiceServer<stream::Ads> {
        AggregatedDiscoveryServiceServer::new(stream::Ads::new(self.clone()))
    }

    /// Serves ADS on `listener` until the future is dropped or the server fails.
    pub async fn serve(&self, listener: TcpListener) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(self.service())
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    }

    /// Loads Istio YAML `files`, serves them, and pushes every change that loads cleanly
    /// (checked every `poll_interval`); a change that does not load keeps the last good
    /// configuration and is reported in [`FileWatch::status`]. The watch stops when the
    /// returned handle is dropped. Must be called within a tokio runtime. Serves istiod's
    /// shapes; see [`ControlPlane::from_istio_yaml_as`] for the others.
    pub fn from_istio_yaml<P: AsRef<Path>>(
        files: &[P],
        poll_interval: Duration,
    ) -> Result<(Self, FileWatch), mesh_tower::StaticConfigError> {
        files::watch(files, poll_interval, Shape::Istiod)
    }

    /// [`ControlPlane::from_istio_yaml`], serving resources in `shape`.
    pub fn from_istio_yaml_as<P: AsRef<Path>>(
        files: &[P],
        poll_interval: Duration,
        shape: Shape,
    ) -> Result<(Self, FileWatch), mesh_tower::StaticConfigError> {
        files::watch(files, poll_interval, shape)
    }

    fn record(&self, edit: impl FnOnce(&mut Log)) {
        self.shared.log.send_modify(edit);
    }
}

// === impl Snapshot ===

impl Snapshot {
    fn new(version: String, config: MeshConfig, shape: Shape) -> Self {
        let resources = Self::index(&encode::encode_as(&config, shape));
        Self {
            version,
            config: Arc::new(config),
            resources,
        }
    }

    fn index(resources: &encode::Resources) -> BTreeMap<&'static str, BTreeMap<String, Any>> {
        TYPE_URLS
            .into_iter()
            .map(|t| (t, resources.by_type(t)))
            .collect()
    }
}
