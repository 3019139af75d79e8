//! One HTTP/2 connection per endpoint, shared by every request to it.
//!
//! The connection is made lazily by the first request, reused by all later ones (HTTP/2
//! multiplexes them), and remade when it closes. A failed connect puts the endpoint in a
//! jittered exponential backoff (100 ms × 2ⁿ up to 10 s) during which requests fail at once with
//! a connect failure instead of waiting: the balancer and retries can go elsewhere, and a dead
//! endpoint costs nothing per request.
//!
//! The cluster's pool settings apply as in Envoy for an HTTP/2 upstream: a connection that has
//! taken `max_requests_per_connection` requests, or has had none in flight for `idle_timeout`,
//! takes no more and closes once drained, and the next request makes a fresh one (the
//! `connection` submodule); connections to the cluster, draining ones included, count against
//! `max_connections` (the `budget` submodule, which says how an overflow is answered); sockets
//! get the cluster's TCP keepalive.
//!
//! The transport under a connection is TCP unless the mesh was made with a [`Connector`] (the
//! `connector` submodule): the cluster's TLS and HTTP/2 then run over the connector's stream.
//!
//! Draining is by ownership: the mesh drops an [`Endpoint`] removed from the configuration;
//! requests in flight keep their streams, and hyper closes the connection once the last one
//! finishes.

mod budget;
mod connection;
mod connector;
mod dial;
mod error;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use hyper::client::conn::http2::SendRequest;
use mesh_core::{Cluster, EndpointAddress, TcpKeepalive};
use tokio::time::Instant;

pub(crate) use self::budget::ConnectionBudget;
use self::{
    connection::{ConnectionLife, Lease},
    dial::connect,
};
pub use self::{connector::Connector, error::ConnectError};
use crate::{body::RequestBody, tls::UpstreamConnector};

type Connecting = Shared<BoxFuture<'static, Result<Ready, ConnectError>>>;

/// How a cluster's connections are made, limited and retired: its pool settings. An endpoint
/// is kept across configuration versions only while these stay the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PoolSettings {
    connect_timeout: Duration,
    max_connections: u32,
    max_requests_per_connection: Option<u32>,
    idle_timeout: Option<Duration>,
    tcp_keepalive: Option<TcpKeepalive>,
}

/// What the endpoints of one cluster version share: made once per cluster, not copied into
/// every endpoint (most of an endpoint's size, with thousands of them).
#[derive(Debug)]
pub(crate) struct Pool {
    settings: PoolSettings,
    /// TLS over the transport; `None` is plaintext (the cluster's mode is DISABLE).
    tls: Option<UpstreamConnector>,
    /// How the transport is opened: TCP unless the mesh was given a connector.
    connector: Connector,
    /// The cluster's open connections (`max_connections`).
    budget: Arc<ConnectionBudget>,
}

/// An upstream endpoint, its connection and its load.
#[derive(Debug)]
pub(crate) struct Endpoint {
    address: EndpointAddress,
    /// The cluster's settings, TLS, connector and connection budget.
    pool: Arc<Pool>,
    /// This endpoint's open connections, draining ones included.
    open: Arc<AtomicU32>,
    state: Mutex<State>,
    /// Requests in flight to this endpoint (least request, peak EWMA).
    active: AtomicU32,
    /// Peak-EWMA round-trip estimate, for latency-aware balancing.
    latency: Mutex<PeakEwma>,
}

/// Finagle's and Linkerd's peak-EWMA round-trip estimate: jumps up to a slower sample at once,
/// decays towards faster ones with the configured time constant.
#[derive(Debug)]
struct PeakEwma {
    estimate_nanos: f64,
    updated: Option<Instant>,
}

/// Counts a request in flight to an endpoint until dropped, and holds the connection it was
/// sent on (keeping that connection from closing idle or retired under it).
#[derive(Debug)]
pub(crate) struct ActiveRequest {
    endpoint: Arc<Endpoint>,
    lease: Option<Lease>,
}

/// A connection that completed its handshake.
#[derive(Clone, Debug)]
struct Ready {
    sender: SendRequest<RequestBody>,
    life: Arc<ConnectionLife>,
}

/// What a request does next to get a connection.
enum Step {
    Leased(SendRequest<RequestBody>, Lease),
    Failed(ConnectError),
    Await(Connecting),
    /// The cluster is at `max_connections` and this endpoint has a (draining) connection.
    WaitForSlot,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    Connecting {
        future: ConnectingDebug,
        /// Failed connects before this one, for the next backoff.
        failures: u32,
    },
    Ready(Ready),
    BackingOff {
        until: Instant,
        failures: u32,
        /// Boxed: the largest variant otherwise, and every endpoint's state is sized by it.
        error: Box<ConnectError>,
    },
}

/// `Shared` is not `Debug`; this wrapper keeps `State` printable.
struct ConnectingDebug(Connecting);

impl std::fmt::Debug for ConnectingDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connecting")
    }
}

/// The estimate before the first sample (Linkerd's default).
const DEFAULT_RTT: Duration = Duration::from_millis(30);

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Reconnect delays: doubling from [`BACKOFF_BASE`] to [`BACKOFF_MAX`], at least half of each
/// ("equal jitter"), so a dead endpoint is tried again soon but not by every caller at once.
const RECONNECT: mesh_core::backoff::ExponentialBackoff =
    mesh_core::backoff::ExponentialBackoff::new(
        BACKOFF_BASE,
        2000,
        BACKOFF_MAX,
        mesh_core::backoff::Jitter::Equal,
    );

// === impl Endpoint ===

impl Endpoint {
    /// An endpoint at `address`; nothing is connected until the first request. Its connections
    /// take any number of requests and stay open while idle.
    #[cfg(test)]
    pub(crate) fn new(address: EndpointAddress, connect_timeout: Duration) -> Self {
        let settings = PoolSettings {
            connect_timeout,
            max_connections: u32::MAX,
            max_requests_per_connection: None,
            idle_timeout: None,
            tcp_keepalive: None,
        };
        Self::with_tls(address, settings, None, Connector::tcp(), Arc::default())
    }

    /// An endpoint of a cluster with `settings` and the cluster's connection `budget`, whose
    /// connections run TLS with `tls`, or plaintext with `None`, over transports `connector`
    /// opens.
    #[cfg(test)]
    pub(crate) fn with_tls(
        address: EndpointAddress,
        settings: PoolSettings,
        tls: Option<UpstreamConnector>,
        connector: Connector,
        budget: Arc<ConnectionBudget>,
    ) -> Self {
        Self::in_pool(address, Pool::new(settings, tls, connector, budget))
    }

    /// An endpoint at `address` of the cluster whose endpoints share `pool`.
    pub(crate) fn in_pool(address: EndpointAddress, pool: Arc<Pool>) -> Self {
        Self {
            address,
            pool,
            open: Arc::default(),
            state: Mutex::new(State::Idle),
            active: AtomicU32::new(0),
            latency: Mutex::new(PeakEwma {
                estimate_nanos: DEFAULT_RTT.as_nanos() as f64,
                updated: None,
            }),
        }
    }

    /// The pool settings the endpoint was made with.
    pub(crate) fn settings(&self) -> &PoolSettings {
        &self.pool.settings
    }

    /// Requests in flight to this endpoint.
    pub(crate) fn active_requests(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub(crate) fn start_request(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest {
            endpoint: self.clone(),
            lease: None,
        }
    }

    /// Feeds one round-trip sample into the peak-EWMA estimate.
    pub(crate) fn observe_latency(&self, rtt: Duration, decay: Duration, now: Instant) {
        let mut ewma = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let sample = rtt.as_nanos() as f64;
        if sample > ewma.estimate_nanos {
            ewma.estimate_nanos = sample;
        } else {
            let elapsed = ewma
                .updated
                .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
            let w = (-elapsed / decay.as_secs_f64().max(1e-3)).exp();
            ewma.estimate_nanos = ewma.estimate_nanos * w + sample * (1.0 - w);
        }
        ewma.updated = Some(now);
    }

    /// Peak-EWMA cost: the round-trip estimate × (requests in flight + 1), in nanoseconds.
    pub(crate) fn peak_ewma_cost(&self) -> u64 {
        let estimate = self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .estimate_nanos;
        let load = f64::from(self.active_requests()) + 1.0;
        // Saturating float-to-int conversion: a huge estimate is simply the highest cost.
        (estimate * load) as u64
    }

    /// The endpoint's address.
    pub(crate) fn address(&self) -> &EndpointAddress {
        &self.address
    }

    /// A connection for one request, connecting first when none takes requests. Fails at once
    /// while the endpoint is backing off after a failed connect. When the cluster is at
    /// `max_connections` and this endpoint still has a draining connection, waits for a
    /// connection of the cluster to close (the caller holds a pending slot meanwhile).
    async fn lease(&self) -> Result<(SendRequest<RequestBody>, Lease), ConnectError> {
        let mut next = self.step();
        loop {
            next = match next {
                Step::Leased(sender, lease) => return Ok((sender, lease)),
                Step::Failed(error) => return Err(error),
                Step::Await(connecting) => {
                    let result = connecting.await;
                    self.record(&result);
                    result?;
                    // Then lease it like any other: concurrent requests may have used it up.
                    self.step()
                }
                Step::WaitForSlot => {
                    let closed = self.pool.budget.closed();
                    tokio::pin!(closed);
                    closed.as_mut().enable();
                    // A close between the last look and `enable` would be missed: look again.
                    match self.step() {
                        Step::WaitForSlot => {
                            closed.await;
                            self.step()
                        }
                        other => other,
                    }
                }
            };
        }
    }

    /// Leases the current connection, or decides how to get one.
    fn step(&self) -> Step {
        let mut state = self.lock();
        let failures = match &*state {
            State::Ready(ready) if !ready.sender.is_closed() => match ready.life.try_lease() {
                Some(lease) => return Step::Leased(ready.sender.clone(), lease),
                None => 0,
            },
            State::Idle | State::Ready(_) => 0,
            State::Connecting { future, .. } => return Step::Await(future.0.clone()),
            State::BackingOff { until, error, .. } if Instant::now() < *until => {
                return Step::Failed(ConnectError::clone(error));
            }
            State::BackingOff { failures, .. } => *failures,
        };
        let Some(slot) = self
            .pool
            .budget
            .try_open(self.pool.settings.max_connections, &self.open)
        else {
            return Step::WaitForSlot;
        };
        let future = connect(
            self.address.clone(),
            self.pool.settings.clone(),
            self.pool.tls.clone(),
            self.pool.connector.clone(),
            slot,
        )
        .boxed()
        .shared();
        *state = State::Connecting {
            future: ConnectingDebug(future.clone()),
            failures,
        };
        Step::Await(future)
    }

    /// Records a finished connect. Every waiter calls this, so the result is recorded even when
    /// the request that started the connect was cancelled; only the first call changes state.
    fn record(&self, result: &Result<Ready, ConnectError>) {
        let mut state = self.lock();
        let State::Connecting { failures, .. } = &*state else {
            return;
        };
        *state = match result {
            Ok(ready) => State::Ready(ready.clone()),
            Err(error) => {
                let failures = failures.saturating_add(1);
                State::BackingOff {
                    until: Instant::now() + backoff(failures, crate::rng::draw()),
                    failures,
                    error: Box::new(error.clone()),
                }
            }
        };
    }

    /// Whether a live connection takes requests (a request need not wait to be sent).
    pub(crate) fn is_connected(&self) -> bool {
        matches!(&*self.lock(), State::Ready(ready)
            if !ready.sender.is_closed() && ready.life.is_taking_requests())
    }

    /// Whether the endpoint is backing off after a failed connect.
    #[cfg(test)]
    pub(crate) fn is_backing_off(&self) -> bool {
        matches!(&*self.lock(), State::BackingOff { until, .. } if Instant::now() < *until)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave `State` inconsistent (every write is a
        // single assignment), so a poisoned lock is safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// === impl ActiveRequest ===

impl ActiveRequest {
    /// A connection of the endpoint for this request, held until the request is dropped. See
    /// [`Endpoint`]'s connection rules: fails at once while backing off.
    pub(crate) async fn connection(&mut self) -> Result<SendRequest<RequestBody>, ConnectError> {
        let (sender, lease) = self.endpoint.lease().await?;
        self.lease = Some(lease);
        Ok(sender)
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Pool ===

impl Pool {
    /// What a cluster's endpoints share: their connections are made with `settings`, run TLS
    /// with `tls` (plaintext with `None`) over transports `connector` opens, and count against
    /// the cluster's `budget`.
    pub(crate) fn new(
        settings: PoolSettings,
        tls: Option<UpstreamConnector>,
        connector: Connector,
        budget: Arc<ConnectionBudget>,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings,
            tls,
            connector,
            budget,
        })
    }
}

// === impl PoolSettings ===

impl PoolSettings {
    /// The pool settings of `cluster`.
    pub(crate) fn of(cluster: &Cluster) -> Self {
        Self {
            connect_timeout: cluster.connect_timeout,
            max_connections: cluster.breaker.max_connections,
            max_requests_per_connection: cluster.max_requests_per_connection,
            idle_timeout: cluster.idle_timeout,
            tcp_keepalive: cluster.tcp_keepalive,
        }
    }
}

/// The backoff after `failures` failed connects: uniform in `[d/2, d)` with
/// `d = min(base × 2^(failures-1), max)`.
fn backoff(failures: u32, random: u64) -> Duration {
    RECONNECT.delay(failures.saturating_sub(1), random)
}

#[cfg(test)]
mod tests;
