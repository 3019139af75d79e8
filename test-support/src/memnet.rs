//! An in-memory network: servers listen at socket addresses, a mesh dials them over
//! `tokio::io::duplex` pipes through [`MemNet::connector`], and each address has knobs to refuse
//! connections, delay connects and cut open connections (closed or reset).
//!
//! Nothing here touches a socket or reads the wall clock, so a test can run under
//! `#[tokio::test(start_paused = true)]`: every wait (a connect delay, a retry backoff, an idle
//! timeout, an ejection time) is a tokio timer the paused clock jumps over as soon as every
//! task is idle. That makes timing-dependent tests exact and instant; behaviour that crosses a
//! real network (sockets, TCP options, kernels' timeouts) is still tested on 127.0.0.1.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use mesh_test_support::memnet::MemNet;
//!
//! let net = MemNet::new();
//! let addr = net.next_addr();
//! let host = net.serve(addr, tower::service_fn(|_: http::Request<hyper::body::Incoming>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hi")))
//! }));
//! host.delay_connect(Some(std::time::Duration::from_secs(5)));
//! let mesh = mesh_tower::Mesh::with_connector(mesh_tower::mesh_core::MeshConfig::empty(), net.connector());
//! # drop(mesh);
//! # }
//! ```

use std::{
    collections::HashMap,
    fmt, io,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::task::AtomicWaker;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use mesh_core::EndpointAddress;
use tokio::{
    io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf},
    sync::mpsc,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bytes a pipe buffers each way before a write waits for the reader, as a socket's buffer
/// would.
const PIPE_BUFFER: usize = 256 * 1024;

/// The network: addresses with listeners. Cheap to clone; clones share the network.
#[derive(Clone, Default)]
pub struct MemNet {
    inner: Arc<Net>,
}

#[derive(Default)]
struct Net {
    hosts: Mutex<HashMap<SocketAddr, Arc<HostState>>>,
    /// Numbers the addresses of [`MemNet::next_addr`].
    next_addr: AtomicU32,
    /// Numbers the clients' source ports.
    next_source: AtomicU32,
}

/// One listening address: its knobs and its counters. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    addr: SocketAddr,
    state: Arc<HostState>,
}

struct HostState {
    accept: mpsc::UnboundedSender<MemStream>,
    refuse: AtomicBool,
    connect_delay: Mutex<Option<Duration>>,
    connections: Arc<Connections>,
    /// The connections accepted so far, to cut (dropped ones are skipped and pruned).
    links: Mutex<Vec<std::sync::Weak<Link>>>,
}

/// Connections a listener was handed, and how many of them it still holds.
#[derive(Debug, Default)]
pub struct Connections {
    /// Connections made to the address, ever.
    pub accepted: AtomicU32,
    /// Connections whose server end is still held (not yet dropped by the server).
    pub open: AtomicU32,
}

/// The accepting end of an address: a stream of connections, as `TcpListener` is for tonic's
/// `serve_with_incoming`. Dropping it makes later connects to the address refused.
pub struct MemListener {
    host: Host,
    incoming: mpsc::UnboundedReceiver<MemStream>,
}

/// One end of an in-memory connection.
pub struct MemStream {
    io: DuplexStream,
    link: Arc<Link>,
    /// 0 on the client end, 1 on the server end (which of the link's wakers are ours).
    side: usize,
    local: SocketAddr,
    remote: SocketAddr,
    /// The listener's counters, on the server end (its drop closes the connection for them).
    counted: Option<Arc<Connections>>,
}

/// The state both ends of one connection share, so a cut reaches both at once.
struct Link {
    state: AtomicU8,
    /// Read and write wakers of each side, woken by a cut.
    wakers: [AtomicWaker; 4],
}

const OPEN: u8 = 0;
const CLOSED: u8 = 1;
const RESET: u8 = 2;

// === impl MemNet ===

impl MemNet {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh address on this network: `192.0.2.1:50051`, `192.0.2.2:50051`, … (TEST-NET-1,
    /// documentation space no real host has, so a test that reaches a real socket by mistake
    /// fails to connect).
    pub fn next_addr(&self) -> SocketAddr {
        let n = self.inner.next_addr.fetch_add(1, Ordering::Relaxed);
        let host = u8::try_from(1 + n % 253).unwrap_or(1);
        let port = u16::try_from(50_051 + n / 253).unwrap_or(u16::MAX);
        SocketAddr::from((Ipv4Addr::new(192, 0, 2, host), port))
    }

    /// Listens at `addr`, replacing what listened there before.
    pub fn bind(&self, addr: SocketAddr) -> MemListener {
        let (accept, incoming) = mpsc::unbounded_channel();
        let state = Arc::new(HostState {
            accept,
            refuse: AtomicBool::new(false),
            connect_delay: Mutex::new(None),
            connections: Arc::default(),
            links: Mutex::default(),
        });
        lock(&self.inner.hosts).insert(addr, state.clone());
        MemListener {
            host: Host { addr, state },
            incoming,
        }
    }

    /// Serves `service` at `addr` over HTTP/2 (a task per connection; hyper's defaults):
    /// an axum `Router`, a `tonic::service::Routes`, a `hyper::service::service_fn` wrapped in
    /// `tower::service_fn`, anything taking `http::Request<hyper::body::Incoming>`.
    pub fn serve<S, B>(&self, addr: SocketAddr, service: S) -> Host
    where
        S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let mut listener = self.bind(addr);
        let host = listener.host();
        tokio::spawn(async move {
            while let Some(stream) = listener.accept().await {
                let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .serve_connection(
                        TokioIo::new(stream),
                        TowerToHyperService::new(service.clone()),
                    );
                tokio::spawn(connection);
            }
        });
        host
    }

    /// The address's listener handle, when something listens there.
    pub fn host(&self, addr: SocketAddr) -> Option<Host> {
        let state = lock(&self.inner.hosts).get(&addr).cloned()?;
        Some(Host { addr, state })
    }

    /// Opens a connection to `addr` as a client would: refused when nothing listens there or
    /// the address refuses; after the address's connect delay (a paused clock skips it).
    pub async fn dial(&self, addr: SocketAddr) -> io::Result<MemStream> {
        let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        let host = self.host(addr).ok_or_else(refused)?;
        let delay = *lock(&host.state.connect_delay);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if host.state.refuse.load(Ordering::SeqCst) {
            return Err(refused());
        }
        let n = self.inner.next_source.fetch_add(1, Ordering::Relaxed);
        let source_port = u16::try_from(1_024 + n % 60_000).unwrap_or(u16::MAX);
        let source = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 254), source_port));
        let (client, server) = tokio::io::duplex(PIPE_BUFFER);
        let link = Arc::new(Link {
            state: AtomicU8::new(OPEN),
            wakers: Default::default(),
        });
        let connections = &host.state.connections;
        let server = MemStream {
            io: server,
            link: link.clone(),
            side: 1,
            local: addr,
            remote: source,
            counted: Some(connections.clone()),
        };
        connections.accepted.fetch_add(1, Ordering::SeqCst);
        connections.open.fetch_add(1, Ordering::SeqCst);
        // Refused when the listener is gone: the server end is dropped, uncounting itself.
        host.state.accept.send(server).map_err(|_| refused())?;
        let mut links = lock(&host.state.links);
        links.retain(|l| l.strong_count() > 0);
        links.push(Arc::downgrade(&link));
        Ok(MemStream {
            io: client,
            link,
            side: 0,
            local: source,
            remote: addr,
            counted: None,
        })
    }

    /// A mesh connector dialing this network: an endpoint's socket address is dialed with
    /// [`dial`](Self::dial); a DNS name is refused (the network has no resolver).
    pub fn connector(&self) -> mesh_tower::Connector {
        let net = self.clone();
        mesh_tower::Connector::new(tower::service_fn(move |address: EndpointAddress| {
            let net = net.clone();
            async move {
                match address {
                    EndpointAddress::Socket(addr) => net.dial(addr).await,
                    EndpointAddress::Dns { host, .. } => Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("the in-memory network cannot resolve `{host}`"),
                    )),
                }
            }
        }))
    }
}

impl fmt::Debug for MemNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<_> = lock(&self.inner.hosts).keys().copied().collect();
        f.debug_struct("MemNet").field("hosts", &hosts).finish()
    }
}

// === impl Host ===

impl Host {
    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Refuses new connections (as a closed port does) while `refuse` is true; open ones are
    /// kept.
    pub fn refuse_connections(&self, refuse: bool) {
        self.state.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Makes every later connect take `delay` before it is answered (accepted, or refused);
    /// `None` answers at once. Under a paused clock the delay passes as soon as every task is
    /// idle, so a connect timeout shorter than it fires first, exactly.
    pub fn delay_connect(&self, delay: Option<Duration>) {
        *lock(&self.state.connect_delay) = delay;
    }

    /// Closes every open connection as a server dropping it would: both ends read end of
    /// stream and fail to write (`BrokenPipe`).
    pub fn close_connections(&self) {
        self.cut(CLOSED);
    }

    /// Resets every open connection, as a TCP RST: reads and writes on both ends fail with
    /// `ConnectionReset`.
    pub fn reset_connections(&self) {
        self.cut(RESET);
    }

    /// The counters of the connections made to this address.
    pub fn connections(&self) -> Arc<Connections> {
        self.state.connections.clone()
    }

    /// Connections made to this address, ever.
    pub fn accepted(&self) -> u32 {
        self.state.connections.accepted.load(Ordering::SeqCst)
    }

    /// Connections whose server end is still open.
    pub fn open(&self) -> u32 {
        self.state.connections.open.load(Ordering::SeqCst)
    }

    fn cut(&self, how: u8) {
        let links = std::mem::take(&mut *lock(&self.state.links));
        for link in links.iter().filter_map(std::sync::Weak::upgrade) {
            link.cut(how);
        }
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("addr", &self.addr)
            .field("connections", &self.state.connections)
            .finish()
    }
}

// === impl MemListener ===

impl MemListener {
    /// The next connection; `None` never comes while the network holds the address, so a
    /// server loop on it ends only when its task is dropped.
    pub async fn accept(&mut self) -> Option<MemStream> {
        self.incoming.recv().await
    }

    /// This listener's address, knobs and counters.
    pub fn host(&self) -> Host {
        self.host.clone()
    }
}

impl futures::Stream for MemListener {
    type Item = io::Result<MemStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx).map(|s| s.map(Ok))
    }
}

impl fmt::Debug for MemListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemListener")
            .field("addr", &self.host.addr)
            .finish()
    }
}

// === impl MemStream ===

impl MemStream {
    /// This end's address (a client end has a made-up source address).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The other end's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.remote
    }

    /// `Some(result)` when the connection was cut: what a read or write answers then.
    fn cut_result(&self, cx: &Context<'_>, waker: usize) -> Option<io::ErrorKind> {
        let check = || self.link.state.load(Ordering::SeqCst);
        if check() == OPEN {
            self.link.wakers[self.side * 2 + waker].register(cx.waker());
            // A cut between the first look and the registration would go unnoticed.
            if check() == OPEN {
                return None;
            }
        }
        Some(match check() {
            RESET => io::ErrorKind::ConnectionReset,
            _ => io::ErrorKind::BrokenPipe,
        })
    }
}

impl Drop for MemStream {
    fn drop(&mut self) {
        if let Some(connections) = &self.counted {
            connections.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl AsyncRead for MemStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.cut_result(cx, 0) {
            None => Pin::new(&mut self.io).poll_read(cx, buf),
            // A closed connection reads end of stream.
            Some(io::ErrorKind::BrokenPipe) => Poll::Ready(Ok(())),
            Some(kind) => Poll::Ready(Err(kind.into())),
        }
    }
}

impl AsyncWrite for MemStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.cut_result(cx, 1) {
            None => Pin::new(&mut self.io).poll_write(cx, data),
            Some(kind) => Poll::Ready(Err(kind.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.cut_result(cx, 1) {
            None => Pin::new(&mut self.io).poll_flush(cx),
            Some(kind) => Poll::Ready(Err(kind.into())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.cut_result(cx, 1) {
            None => Pin::new(&mut self.io).poll_shutdown(cx),
            // Already closed: nothing left to shut down.
            Some(io::ErrorKind::BrokenPipe) => Poll::Ready(Ok(())),
            Some(kind) => Poll::Ready(Err(kind.into())),
        }
    }
}

impl tonic::transport::server::Connected for MemStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: Some(self.local),
            remote_addr: Some(self.remote),
        }
    }
}

impl fmt::Debug for MemStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemStream")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish()
    }
}

// === impl Link ===

impl Link {
    fn cut(&self, how: u8) {
        // A connection is cut once: a reset after a close changes nothing.
        if self
            .state
            .compare_exchange(OPEN, how, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            for waker in &self.wakers {
                waker.wake();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update is one insert or a swap of a value: a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
