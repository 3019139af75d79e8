//! One HTTP/2 connection per endpoint, shared by every request to it.
//!
//! The connection is made lazily by the first request, reused by all later ones (HTTP/2
//! multiplexes them), and remade when it closes. A failed connect puts the endpoint in a
//! jittered exponential backoff (100 ms × 2ⁿ up to 10 s) during which requests fail at once with
//! a connect failure instead of waiting: the balancer and retries can go elsewhere, and a dead
//! endpoint costs nothing per request.
//!
//! Draining is by ownership: the mesh drops an [`Endpoint`] removed from the configuration;
//! requests in flight hold their own handle to the connection, and hyper closes it once the last
//! one finishes.

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
use mesh_core::EndpointAddress;
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use self::error::ConnectError;
use crate::{body::RequestBody, tls::UpstreamConnector};

type Connecting = Shared<BoxFuture<'static, Result<SendRequest<RequestBody>, ConnectError>>>;

/// An upstream endpoint, its connection and its load.
#[derive(Debug)]
pub struct Endpoint {
    address: EndpointAddress,
    connect_timeout: Duration,
    /// TLS over the TCP connection; `None` is plaintext (the cluster's mode is DISABLE).
    tls: Option<UpstreamConnector>,
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

/// Counts a request in flight to an endpoint until dropped.
#[derive(Debug)]
pub(crate) struct ActiveRequest(Arc<Endpoint>);

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    Connecting {
        future: ConnectingDebug,
        /// Failed connects before this one, for the next backoff.
        failures: u32,
    },
    Ready(SendRequest<RequestBody>),
    BackingOff {
        until: Instant,
        failures: u32,
        error: ConnectError,
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
    /// An endpoint at `address`; nothing is connected until the first request.
    pub fn new(address: EndpointAddress, connect_timeout: Duration) -> Self {
        Self::with_tls(address, connect_timeout, None)
    }

    /// An endpoint whose connections run TLS with `tls`, or plaintext with `None`.
    pub(crate) fn with_tls(
        address: EndpointAddress,
        connect_timeout: Duration,
        tls: Option<UpstreamConnector>,
    ) -> Self {
        Self {
            address,
            connect_timeout,
            tls,
            state: Mutex::new(State::Idle),
            active: AtomicU32::new(0),
            latency: Mutex::new(PeakEwma {
                estimate_nanos: DEFAULT_RTT.as_nanos() as f64,
                updated: None,
            }),
        }
    }

    /// Requests in flight to this endpoint.
    pub fn active_requests(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub(crate) fn start_request(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(self.clone())
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
    pub fn address(&self) -> &EndpointAddress {
        &self.address
    }

    /// A handle to the endpoint's connection, connecting first when there is none. Fails at once
    /// while the endpoint is backing off after a failed connect.
    pub async fn connection(&self) -> Result<SendRequest<RequestBody>, ConnectError> {
        let connecting = {
            let mut state = self.lock();
            match &*state {
                State::Ready(sender) if !sender.is_closed() => return Ok(sender.clone()),
                State::Connecting { future, .. } => future.0.clone(),
                State::BackingOff { until, error, .. } if Instant::now() < *until => {
                    return Err(error.clone());
                }
                _ => {
                    let failures = match &*state {
                        State::BackingOff { failures, .. } => *failures,
                        _ => 0,
                    };
                    let future =
                        connect(self.address.clone(), self.connect_timeout, self.tls.clone())
                            .boxed()
                            .shared();
                    *state = State::Connecting {
                        future: ConnectingDebug(future.clone()),
                        failures,
                    };
                    future
                }
            }
        };
        let result = connecting.await;
        self.record(&result);
        result
    }

    /// Records a finished connect. Every waiter calls this, so the result is recorded even when
    /// the request that started the connect was cancelled; only the first call changes state.
    fn record(&self, result: &Result<SendRequest<RequestBody>, ConnectError>) {
        let mut state = self.lock();
        let State::Connecting { failures, .. } = &*state else {
            return;
        };
        *state = match result {
            Ok(sender) => State::Ready(sender.clone()),
            Err(error) => {
                let failures = failures.saturating_add(1);
                State::BackingOff {
                    until: Instant::now() + backoff(failures, crate::rng::draw()),
                    failures,
                    error: error.clone(),
                }
            }
        };
    }

    /// Whether a live connection is in hand (a request need not wait to be sent).
    pub(crate) fn is_connected(&self) -> bool {
        matches!(&*self.lock(), State::Ready(sender) if !sender.is_closed())
    }

    /// Whether the endpoint is backing off after a failed connect (for the balancer).
    pub fn is_backing_off(&self) -> bool {
        matches!(&*self.lock(), State::BackingOff { until, .. } if Instant::now() < *until)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave `State` inconsistent (every write is a
        // single assignment), so a poisoned lock is safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The backoff after `failures` failed connects: uniform in `[d/2, d)` with
/// `d = min(base × 2^(failures-1), max)`.
fn backoff(failures: u32, random: u64) -> Duration {
    RECONNECT.delay(failures.saturating_sub(1), random)
}

/// Connects to `address`: an IP directly, a DNS name by resolving it now and trying each
/// address in turn (so a reconnect follows DNS changes); then the TLS handshake when the cluster
/// has TLS. The timeout bounds both.
async fn connect(
    address: EndpointAddress,
    timeout: Duration,
    tls: Option<UpstreamConnector>,
) -> Result<SendRequest<RequestBody>, ConnectError> {
    let opened = async {
        let stream = open(&address).await?;
        // Latency matters more than packet count for RPCs.
        let _ = stream.set_nodelay(true);
        match &tls {
            None => Ok(Transport::Plaintext(stream)),
            Some(tls) => tls
                .connect(&address, stream)
                .await
                .map(|s| Transport::Tls(Box::new(s)))
                .map_err(|reason| ConnectError::connect(&address, reason)),
        }
    };
    let what = if tls.is_some() {
        "connect and TLS handshake timed out"
    } else {
        "connect timed out"
    };
    match tokio::time::timeout(timeout, opened)
        .await
        .map_err(|_| ConnectError::connect(&address, what))??
    {
        Transport::Plaintext(stream) => http2_handshake(address, stream).await,
        Transport::Tls(stream) => http2_handshake(address, stream).await,
    }
}

/// Spawns hyper's per-request tasks boxed.
///
/// Hyper spawns one future type for a connection and for each request's body and response
/// (an enum as large as the whole connection state). Spawned as is, every request's task moves
/// that whole enum into the task cell and again when the task finishes; boxed, one move into
/// the heap remains and the task cell holds a pointer.
#[derive(Clone, Copy, Debug)]
struct BoxingExecutor;

impl<F> hyper::rt::Executor<F> for BoxingExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Box::pin(future));
    }
}

/// The connection under HTTP/2.
enum Transport {
    Plaintext(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn http2_handshake<T>(
    address: EndpointAddress,
    io: T,
) -> Result<SendRequest<RequestBody>, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(BoxingExecutor)
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::connect(&address, e))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%address, %error, "upstream connection closed with an error");
        }
    });
    Ok(sender)
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
    async fn a_refused_connect_fails_fast_until_the_backoff_ends() {
        // Bind then drop a listener to get a loopback port nothing listens on.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let ep = Endpoint::new(EndpointAddress::Socket(addr), Duration::from_secs(1));
        let first = ep.connection().await.unwrap_err();
        assert_eq!(first.address(), &EndpointAddress::Socket(addr));
        assert!(ep.is_backing_off());
        // Served from the backoff state: the same error, without a new connect.
        let second = ep.connection().await.unwrap_err();
        assert_eq!(second.to_string(), first.to_string());
    }
}
