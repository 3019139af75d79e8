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
use hyper_util::rt::{TokioIo, TokioTimer};
use mesh_core::{Cluster, EndpointAddress, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub(crate) use self::budget::ConnectionBudget;
use self::{
    budget::ConnectionSlot,
    connection::{ConnectionLife, Lease},
    connector::BoxedIo,
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

/// Connects to `address`: with the mesh's connector when it has one; else over TCP, an IP
/// directly, a DNS name by resolving it now and trying each address in turn (so a reconnect
/// follows DNS changes); then the TLS handshake when the cluster has TLS. The connect timeout
/// bounds both. `slot` counts the connection until it closes.
async fn connect(
    address: EndpointAddress,
    settings: PoolSettings,
    tls: Option<UpstreamConnector>,
    connector: Connector,
    slot: ConnectionSlot,
) -> Result<Ready, ConnectError> {
    let handshake_failed = |reason: String| ConnectError::connect(&address, reason);
    let opened = async {
        match (connector.custom(&address), &tls) {
            (None, None) => Ok(Transport::Plaintext(
                open_socket(&address, &settings).await?,
            )),
            (None, Some(tls)) => {
                let stream = open_socket(&address, &settings).await?;
                let stream = tls.connect(&address, stream).await;
                Ok(Transport::Tls(Box::new(stream.map_err(handshake_failed)?)))
            }
            (Some(custom), tls) => {
                let stream = custom
                    .await
                    .map_err(|e| ConnectError::connect(&address, e))?;
                Ok(Transport::Custom(match tls {
                    None => stream,
                    Some(tls) => {
                        let stream = tls.connect(&address, stream).await;
                        Box::new(stream.map_err(handshake_failed)?)
                    }
                }))
            }
        }
    };
    let what = if tls.is_some() {
        "connect and TLS handshake timed out"
    } else {
        "connect timed out"
    };
    let executor = ConnectionExecutor {
        slot: Arc::new(slot),
    };
    match tokio::time::timeout(settings.connect_timeout, opened)
        .await
        .map_err(|_| ConnectError::connect(&address, what))??
    {
        Transport::Plaintext(stream) => http2_handshake(address, stream, &settings, executor).await,
        Transport::Tls(stream) => http2_handshake(address, stream, &settings, executor).await,
        Transport::Custom(stream) => http2_handshake(address, stream, &settings, executor).await,
    }
}

/// Opens the TCP connection with the cluster's socket options.
async fn open_socket(
    address: &EndpointAddress,
    settings: &PoolSettings,
) -> Result<TcpStream, ConnectError> {
    let stream = open(address).await?;
    // Latency matters more than packet count for RPCs.
    let _ = stream.set_nodelay(true);
    if let Some(keepalive) = &settings.tcp_keepalive {
        set_keepalive(&stream, keepalive).map_err(|e| {
            ConnectError::connect(address, format!("setting TCP keepalive failed: {e}"))
        })?;
    }
    Ok(stream)
}

/// Turns on TCP keepalive with the cluster's probe settings. The kernel counts in whole
/// seconds: a fraction rounds up, so a sub-second setting never becomes 0 (which Linux
/// refuses).
fn set_keepalive(stream: &TcpStream, keepalive: &TcpKeepalive) -> std::io::Result<()> {
    let whole_seconds = |d: Duration| Duration::from_secs(d.as_secs_f64().ceil().max(1.0) as u64);
    let mut params = socket2::TcpKeepalive::new();
    if let Some(time) = keepalive.time {
        params = params.with_time(whole_seconds(time));
    }
    if let Some(interval) = keepalive.interval {
        params = params.with_interval(whole_seconds(interval));
    }
    if let Some(probes) = keepalive.probes {
        params = params.with_retries(probes);
    }
    socket2::SockRef::from(stream).set_tcp_keepalive(&params)
}

/// Spawns hyper's tasks of one connection boxed, each holding the connection's slot in the
/// cluster's connection count.
///
/// Hyper spawns one future type for a connection and for each request's body and response
/// (an enum as large as the whole connection state). Spawned as is, every request's task moves
/// that whole enum into the task cell and again when the task finishes; boxed, one move into
/// the heap remains and the task cell holds a pointer.
///
/// The connection task owns the socket, so the slot is released when the last of these tasks
/// ends: when the socket has closed, however the connection ended (retired, idle, closed by the
/// peer, or its endpoint removed from the configuration while requests drain).
#[derive(Clone, Debug)]
struct ConnectionExecutor {
    slot: Arc<ConnectionSlot>,
}

impl<F> hyper::rt::Executor<F> for ConnectionExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let slot = self.slot.clone();
        tokio::spawn(Box::pin(async move {
            let output = future.await;
            drop(slot);
            output
        }));
    }
}

/// The connection under HTTP/2.
enum Transport {
    Plaintext(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// A custom connector's stream, with the cluster's TLS over it when it has TLS.
    Custom(BoxedIo),
}

async fn http2_handshake<T>(
    address: EndpointAddress,
    io: T,
    settings: &PoolSettings,
    executor: ConnectionExecutor,
) -> Result<Ready, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, dispatcher) = hyper::client::conn::http2::Builder::new(executor)
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::connect(&address, e))?;
    let life = ConnectionLife::new(settings.max_requests_per_connection, Instant::now());
    tokio::spawn(connection::drive(
        dispatcher,
        life.clone(),
        settings.idle_timeout,
        address,
    ));
    Ok(Ready { sender, life })
}

async fn open(address: &EndpointAddress) -> Result<TcpStream, ConnectError> {
    match address {
        EndpointAddress::Socket(addr) => TcpStream::connect(addr)
            .await
            .map_err(|e| ConnectError::connect(address, e)),
        EndpointAddress::Dns { host, port } => {
            let resolved = tokio::net::lookup_host((&**host, *port))
                .await
                .map_err(|e| ConnectError::connect(address, format!("resolving failed: {e}")))?;
            let mut last = None;
            for addr in resolved {
                match TcpStream::connect(addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = Some(format!("{addr}: {e}")),
                }
            }
            Err(ConnectError::connect(
                address,
                last.unwrap_or_else(|| "the name resolved to no address".into()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for failures in 1..40 {
            for random in [0, u64::MAX / 3, u64::MAX] {
                let d = backoff(failures, random);
                assert!(d <= BACKOFF_MAX, "{failures}: {d:?}");
                assert!(d >= BACKOFF_BASE / 2);
            }
        }
        assert!(backoff(1, u64::MAX) <= BACKOFF_BASE);
        assert!(
            backoff(8, 0) >= Duration::from_secs(5),
            "capped at 10s, jitter keeps at least half"
        );
    }

    #[tokio::test]
    async fn upstream_sockets_get_the_clusters_tcp_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = EndpointAddress::Socket(listener.local_addr().unwrap());
        let mut cluster = Cluster::new("c", Vec::new());
        let socket = |settings: PoolSettings| {
            let address = address.clone();
            async move { open_socket(&address, &settings).await.unwrap() }
        };

        let plain = socket(PoolSettings::of(&cluster)).await;
        assert!(
            !socket2::SockRef::from(&plain).keepalive().unwrap(),
            "off by default"
        );

        cluster.tcp_keepalive = Some(TcpKeepalive {
            time: Some(Duration::from_secs(7)),
            interval: Some(Duration::from_millis(2_500)),
            probes: Some(4),
        });
        let stream = socket(PoolSettings::of(&cluster)).await;
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(3),
            "the kernel counts whole seconds: rounded up"
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);

        // Unset fields keep the system's values; keepalive is still on.
        cluster.tcp_keepalive = Some(TcpKeepalive::default());
        let defaults = socket(PoolSettings::of(&cluster)).await;
        assert!(socket2::SockRef::from(&defaults).keepalive().unwrap());
    }

    /// An endpoint dialing through `connector`, with `connect_timeout`.
    fn through(connector: Connector, connect_timeout: Duration) -> Endpoint {
        let address = EndpointAddress::Socket(([10, 0, 0, 1], 80).into());
        let settings = PoolSettings {
            connect_timeout,
            ..PoolSettings::of(&Cluster::new("c", Vec::new()))
        };
        Endpoint::with_tls(address, settings, None, connector, Arc::default())
    }

    #[tokio::test(start_paused = true)]
    async fn a_custom_connector_carries_the_connection_and_is_asked_once_per_connection() {
        let dials = Arc::new(AtomicU32::new(0));
        let dialed = dials.clone();
        let connector = Connector::new(tower::service_fn(move |address: EndpointAddress| {
            dialed.fetch_add(1, Ordering::SeqCst);
            async move {
                assert_eq!(address.to_string(), "10.0.0.1:80");
                let (client, server) = tokio::io::duplex(64 * 1024);
                let ok =
                    hyper::service::service_fn(|_: http::Request<hyper::body::Incoming>| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
                    });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(TokioIo::new(server), ok),
                );
                Ok::<_, std::io::Error>(client)
            }
        }));
        let ep = Arc::new(through(connector, Duration::from_secs(1)));
        for _ in 0..3 {
            let mut request = ep.start_request();
            let mut sender = request.connection().await.unwrap();
            let empty = http_body_util::Empty::new()
                .map_err(|e| match e {})
                .boxed_unsync();
            let response = sender
                .send_request(http::Request::get("http://x/").body(empty).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), http::StatusCode::OK);
        }
        assert_eq!(
            dials.load(Ordering::SeqCst),
            1,
            "one HTTP/2 connection, reused"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_connect_timeout_bounds_a_custom_connector_and_a_failure_backs_off() {
        let stalled = Connector::new(tower::service_fn(|_: EndpointAddress| async {
            std::future::pending::<Result<tokio::io::DuplexStream, std::io::Error>>().await
        }));
        let ep = through(stalled, Duration::from_secs(2));
        let started = Instant::now();
        let error = ep.lease().await.unwrap_err();
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(2),
            "paused time: exactly"
        );
        assert!(error.to_string().ends_with("connect timed out"), "{error}");
        assert!(ep.is_backing_off());

        let refusing = Connector::new(tower::service_fn(|_: EndpointAddress| async {
            Err::<tokio::io::DuplexStream, _>(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ))
        }));
        let ep = through(refusing, Duration::from_secs(2));
        let error = ep.lease().await.unwrap_err();
        assert!(error.to_string().contains("refused"), "{error}");
        assert!(ep.is_backing_off());
    }

    #[tokio::test]
    async fn a_refused_connect_fails_fast_until_the_backoff_ends() {
        // Bind then drop a listener to get a loopback port nothing listens on.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let ep = Endpoint::new(EndpointAddress::Socket(addr), Duration::from_secs(1));
        let first = ep.lease().await.unwrap_err();
        assert_eq!(first.address(), &EndpointAddress::Socket(addr));
        assert!(ep.is_backing_off());
        // Served from the backoff state: the same error, without a new connect.
        let second = ep.lease().await.unwrap_err();
        assert_eq!(second.to_string(), first.to_string());
    }
}
