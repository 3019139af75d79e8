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

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use mesh_core::{Cluster, EndpointAddress, MeshConfig, lb::Balancer};

use crate::{Channel, endpoint::Endpoint};

/// The mesh of this process: cheap to clone, shared by every channel.
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
}

/// One configuration with the runtime entries of its clusters.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) config: Arc<MeshConfig>,
    pub(crate) clusters: HashMap<Arc<str>, ClusterEntry>,
}

/// A cluster as one snapshot sees it.
#[derive(Clone, Debug)]
pub(crate) struct ClusterEntry {
    pub(crate) policy: Arc<Cluster>,
    /// The connection of each of the policy's endpoints, by the same index; `None` for an
    /// endpoint that cannot be connected to (a DNS name, until resolution lands).
    pub(crate) connections: Arc<[Option<Arc<Endpoint>>]>,
    /// The balancer of this configuration of the cluster.
    pub(crate) balancer: Arc<Mutex<Balancer>>,
    /// State that outlives configuration versions.
    pub(crate) state: Arc<ClusterState>,
}

/// Per-cluster counters shared by all snapshots in which the cluster exists.
#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    /// Requests in flight (the `max_requests` breaker).
    pub(crate) active_requests: AtomicU32,
    /// Requests rejected by a breaker.
    pub(crate) overflows: AtomicU64,
}

// === impl Mesh ===

impl Mesh {
    /// A mesh serving `config`.
    pub fn new(config: MeshConfig) -> Self {
        let empty = Snapshot {
            config: Arc::new(MeshConfig::empty()),
            clusters: HashMap::new(),
        };
        let mesh = Self {
            inner: Arc::new(Inner {
                snapshot: ArcSwap::from_pointee(empty),
                publish: Mutex::new(()),
                active_faults: AtomicU32::new(0),
            }),
        };
        mesh.publish(Arc::new(config));
        mesh
    }

    /// Replaces the configuration. Requests already routed finish on the configuration they
    /// started with; new requests see the new one at once. Endpoints present in both keep their
    /// connections.
    pub fn publish(&self, config: Arc<MeshConfig>) {
        let _serial = self.inner.publish.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.inner.snapshot.load_full();
        let clusters = config
            .clusters()
            .iter()
            .map(|(name, policy)| {
                let old = previous.clusters.get(name);
                let entry = ClusterEntry::build(policy, old);
                (name.clone(), entry)
            })
            .collect();
        self.inner
            .snapshot
            .store(Arc::new(Snapshot { config, clusters }));
    }

    /// The configuration currently served.
    pub fn config(&self) -> Arc<MeshConfig> {
        self.inner.snapshot.load().config.clone()
    }

    /// A channel to `target` (`host:port`, e.g. `reviews.default.svc.cluster.local:9080`):
    /// a `tower::Service` that tonic clients accept unchanged and plain HTTP callers can use.
    pub fn channel(&self, target: impl Into<Arc<str>>) -> Channel {
        Channel::new(self.clone(), target.into())
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.load_full()
    }

    pub(crate) fn active_faults(&self) -> &AtomicU32 {
        &self.inner.active_faults
    }
}

// === impl ClusterEntry ===

impl ClusterEntry {
    fn build(policy: &Arc<Cluster>, old: Option<&ClusterEntry>) -> Self {
        let reusable: HashMap<SocketAddr, &Arc<Endpoint>> = old
            .map(|o| {
                o.connections
                    .iter()
                    .flatten()
                    .map(|c| (c.address(), c))
                    .collect()
            })
            .unwrap_or_default();
        let connections: Arc<[Option<Arc<Endpoint>>]> = policy
            .endpoints
            .iter()
            .map(|e| match &e.address {
                EndpointAddress::Socket(addr) => Some(
                    reusable
                        .get(addr)
                        .map(|c| Arc::clone(c))
                        .unwrap_or_else(|| Arc::new(Endpoint::new(*addr, policy.connect_timeout))),
                ),
                EndpointAddress::Dns { host, port } => {
                    tracing::warn!(
                        cluster = %policy.name,
                        endpoint = %format_args!("{host}:{port}"),
                        "DNS endpoints are not resolved yet; endpoint skipped"
                    );
                    None
                }
            })
            .collect();
        let healthy: Vec<bool> = policy
            .endpoints
            .iter()
            .zip(connections.iter())
            .map(|(e, c)| e.is_healthy() && c.is_some())
            .collect();
        Self {
            balancer: Arc::new(Mutex::new(Balancer::new(policy, &healthy, None))),
            policy: policy.clone(),
            connections,
            state: old.map(|o| o.state.clone()).unwrap_or_default(),
        }
    }
}

impl ClusterState {
    /// Takes a request slot if the cluster is under `max_requests`; the guard frees it.
    pub(crate) fn try_admit_request(self: &Arc<Self>, max: u32) -> Option<RequestGuard> {
        let admitted = self
            .active_requests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Some(RequestGuard(self.clone()))
        } else {
            self.overflows.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Holds one of the cluster's `max_requests` slots until dropped.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<ClusterState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Ordering::AcqRel);
    }
}
