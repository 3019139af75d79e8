//! Istio's standard metrics, reported by the client stack (`reporter="source"`) and the server
//! stack (`reporter="destination"`), plus the mesh's internals.
//!
//! # Standard metrics
//!
//! `istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes` and
//! `istio_response_bytes`, with Istio's label names, so existing Grafana and Kiali dashboards
//! read them unchanged. Histograms use Envoy's default bucket boundaries, which are Istio's
//! (`0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
//! 600000, 1800000, 3600000`). A request is recorded once, when its response body ends (or is
//! dropped), with the `grpc-status` of its trailers (or of a trailers-only response).
//!
//! What a proxyless mesh knows about the other side is less than Envoy's metadata exchange
//! gives: on the server, the source is known by its principal only (`source_workload_namespace`
//! is derived from it; `source_workload`, `source_app`, `source_version` and the source's
//! canonical service and revision are `unknown`); on the client, the destination is known by its
//! cluster (`destination_service*` from the host, `destination_version` and
//! `destination_canonical_revision` from the subset; the workload and its canonical service are
//! `unknown`). A workload's own `*_canonical_service` and `*_canonical_revision` come from its
//! labels in istiod's order ([`Workload::canonical_service`](crate::Workload::canonical_service)). The client reports
//! `connection_security_policy="unknown"`, as Istio's source reporter does.
//!
//! # Cost per request
//!
//! The labels that depend on who is talking (source and destination workload and service) are
//! built once per principal (server) or cluster (client) and interned; a series' label set holds
//! them by `Arc` and hashes them by address. The four metrics of a label set are looked up
//! together, once per request, in one map with a fast hasher (the families' own maps, keyed
//! with SipHash, are touched only when a series is first seen), so the per-request work is two
//! short hash lookups, a counter increment and three histogram observations, with no `String`
//! built.
//!
//! # Mesh internals
//!
//! [`MeshCollector`] reports per cluster, at scrape time, from the state the data plane already
//! keeps: requests in flight, open connections, breaker overflows (requests and connections),
//! retries, outlier ejections, currently ejected endpoints and outcomes outlier detection
//! dropped (its queue full). The xDS client's own metrics (updates accepted and rejected, the
//! configuration's age) live with it, in mesh-xds (`mesh_xds::client::XdsMetrics`).

mod collector;
mod labels;
mod layer;
pub(crate) mod metered;
pub(crate) mod recorder;

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

pub use self::collector::MeshCollector;
use self::labels::{PeerLabels, PolicyLabels, RequestLabels, ServiceLabels};
pub(crate) use self::layer::ClientMetrics;
pub(crate) use self::recorder::Recorder as ServerRecorder;
pub(crate) use self::recorder::Recorder;
use crate::server::Workload;

/// Envoy's default histogram buckets, which Istio's standard histograms use.
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The destination labels of a request: its workload side and its service.
type Destination = (Arc<PeerLabels>, Arc<ServiceLabels>);

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// A map for per-request lookups: foldhash is several times cheaper than SipHash on these short
/// keys, and its per-map random seed keeps collisions unpredictable.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The four standard metrics of one label set: handles into the families, which share the
/// values (a handle is an `Arc`).
#[derive(Debug)]
struct Series {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// The mesh's request metrics: install with [`MeshMetrics::install`] (or
/// [`Mesh::set_metrics`](crate::Mesh::set_metrics)) and the client and server stacks record into
/// them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MeshMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    request_bytes: HistogramFamily,
    response_bytes: HistogramFamily,
    authz_denied: Family<PolicyLabels, Counter>,
    authz_dry_run_denied: Family<PolicyLabels, Counter>,
    /// This process's workload, as the source of client requests.
    local: Arc<PeerLabels>,
    /// Interned peer labels (so equal labels share one `Arc`).
    peers: Interner<PeerLabels>,
    services: Interner<ServiceLabels>,
    /// Source labels by principal (`""` for none), on the server side.
    sources: RwLock<FastMap<Arc<str>, Arc<PeerLabels>>>,
    /// Destination labels by cluster name, on the client side.
    destinations: RwLock<FastMap<Arc<str>, Destination>>,
    /// Destination labels by server workload, keyed by the workload's address (found without
    /// touching its reference count); the entry holds the workload, so the address is not
    /// reused while it is a key.
    locals: RwLock<FastMap<usize, (Arc<Workload>, Destination)>>,
    /// The metrics of every label set seen, for the one lookup a request makes.
    series: RwLock<FastMap<RequestLabels, Series>>,
}

/// A set of values where equal values share one `Arc`.
#[derive(Debug)]
struct Interner<T>(RwLock<std::collections::HashSet<Arc<T>, foldhash::fast::RandomState>>);

pin_project_lite::pin_project! {
    /// A request body that counts its data bytes into a shared counter (`istio_request_bytes`).
    #[derive(Debug)]
    pub(crate) struct CountingBody<B> {
        #[pin]
        inner: B,
        count: Arc<AtomicU64>,
    }
}

// === impl MeshMetrics ===

impl MeshMetrics {
    /// Metrics for a process running `local` (the `source_*` labels of its client requests).
    pub fn new(local: &Workload) -> Self {
        let peers = Interner::default();
        let local_labels = peers.intern(PeerLabels::of_workload(local));
        let histogram: fn() -> Histogram = || Histogram::new(BUCKETS);
        Self {
            inner: Arc::new(Inner {
                requests: Family::default(),
                duration: Family::new_with_constructor(histogram),
                request_bytes: Family::new_with_constructor(histogram),
                response_bytes: Family::new_with_constructor(histogram),
                authz_denied: Family::default(),
                authz_dry_run_denied: Family::default(),
                local: local_labels,
                peers,
                services: Interner::default(),
                sources: RwLock::default(),
                destinations: RwLock::default(),
                locals: RwLock::default(),
                series: RwLock::default(),
            }),
        }
    }

    /// Registers the metric families in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let i = &self.inner;
        registry.register(
            "istio_requests",
            "Requests, by source, destination and response",
            i.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds",
            i.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes in bytes",
            i.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes in bytes",
            i.response_bytes.clone(),
        );
        registry.register(
            "mesh_authz_denied",
            "Requests denied by an authorization policy (policy=\"-\": no ALLOW policy matched)",
            i.authz_denied.clone(),
        );
        registry.register(
            "mesh_authz_dry_run_denied",
            "Requests a dry-run authorization policy would have denied",
            i.authz_dry_run_denied.clone(),
        );
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

// === impl Inner ===

impl Inner {
    /// The source labels of a server-side request from `principal`.
    fn source(&self, principal: Option<&str>) -> Arc<PeerLabels> {
        let key = principal.unwrap_or("");
        if let Some(found) = read(&self.sources).get(key) {
            return found.clone();
        }
        let labels = self.peers.intern(PeerLabels::of_principal(principal));
        write(&self.sources)
            .entry(key.into())
            .or_insert(labels)
            .clone()
    }

    /// The destination labels of a client-side request to `cluster`.
    fn destination(&self, cluster: &str) -> Destination {
        if let Some(found) = read(&self.destinations).get(cluster) {
            return found.clone();
        }
        let (peer, service) = labels::of_cluster(cluster);
        let entry = (self.peers.intern(peer), self.services.intern(service));
        write(&self.destinations)
            .entry(cluster.into())
            .or_insert(entry)
            .clone()
    }

    /// The destination labels of a server workload.
    fn local_destination(&self, workload: &Arc<Workload>) -> Destination {
        let key = Arc::as_ptr(workload) as usize;
        if let Some((_, found)) = read(&self.locals).get(&key) {
            return found.clone();
        }
        let entry = (
            self.peers.intern(PeerLabels::of_workload(workload)),
            self.services
                .intern(ServiceLabels::of_host(&workload.service)),
        );
        write(&self.locals)
            .entry(key)
            .or_insert_with(|| (workload.clone(), entry))
            .1
            .clone()
    }

    /// Records one finished request: its duration in milliseconds and its body sizes.
    fn record(&self, labels: &RequestLabels, duration_ms: f64, request: f64, response: f64) {
        let observe = |series: &Series| {
            series.requests.inc();
            series.duration.observe(duration_ms);
            series.request_bytes.observe(request);
            series.response_bytes.observe(response);
        };
        if let Some(series) = read(&self.series).get(labels) {
            return observe(series);
        }
        // First request of this label set: make its series in the families (which the
        // registry encodes) and keep handles to them.
        let series = Series {
            requests: self.requests.get_or_create(labels).clone(),
            duration: self.duration.get_or_create(labels).clone(),
            request_bytes: self.request_bytes.get_or_create(labels).clone(),
            response_bytes: self.response_bytes.get_or_create(labels).clone(),
        };
        observe(write(&self.series).entry(labels.clone()).or_insert(series));
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

// === impl Interner ===

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self(RwLock::default())
    }
}

impl<T: Eq + std::hash::Hash> Interner<T> {
    fn intern(&self, value: T) -> Arc<T> {
        if let Some(found) = read(&self.0).get(&value) {
            return found.clone();
        }
        let mut set = write(&self.0);
        if let Some(found) = set.get(&value) {
            return found.clone();
        }
        let value = Arc::new(value);
        set.insert(value.clone());
        value
    }
}

// === impl CountingBody ===

impl<B> CountingBody<B> {
    pub(crate) fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl<B: Body<Data = Bytes>> Body for CountingBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            let n = u64::try_from(data.len()).unwrap_or(u64::MAX);
            this.count.fetch_add(n, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
