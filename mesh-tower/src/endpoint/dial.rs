//! Making a connection: the transport (TCP with the cluster's socket options, a custom
//! connector's stream, TLS over either), then the HTTP/2 handshake, with the connect timeout
//! over both.

use std::{sync::Arc, time::Duration};

use hyper_util::rt::{TokioIo, TokioTimer};
use mesh_core::{EndpointAddress, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{
    ConnectError, Connector, PoolSettings, Ready,
    budget::ConnectionSlot,
    connection::{self, ConnectionLife},
    connector::BoxedIo,
};
use crate::tls::UpstreamConnector;

/// Connects to `address`: with the mesh's connector when it has one; else over TCP, an IP
/// directly, a DNS name by resolving it now and trying each address in turn (so a reconnect
/// follows DNS changes); then the TLS handshake when the cluster has TLS. The connect timeout
/// bounds both. `slot` counts the connection until it closes.
pub(super) async fn connect(
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
pub(super) async fn open_socket(
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
