//! A scripted ADS management server on 127.0.0.1: records every request, and sends what the
//! test says — by hand (`send`), or by serving a snapshot the way a real control plane does
//! (answer each new subscription or version mismatch, stay quiet on ACKs and NACKs).

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use envoy_types::pb::{
    envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_server::{
            AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
        },
    },
    google::protobuf::Any,
};
use futures::{Stream, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tonic::Status;

/// Resources by type URL, at one version.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub version: String,
    pub resources: HashMap<String, Vec<(String, Any)>>,
}

impl Snapshot {
    pub fn new(version: &str) -> Self {
        Self {
            version: version.into(),
            resources: HashMap::new(),
        }
    }

    /// Adds a resource named `name` of type `type_url`.
    pub fn with(mut self, type_url: &str, name: &str, any: Any) -> Self {
        self.resources
            .entry(type_url.into())
            .or_default()
            .push((name.into(), any));
        self
    }
}

/// Makes a response's nonce from its version.
pub type NonceFormat = fn(&str) -> String;

type Tx = mpsc::UnboundedSender<Result<DiscoveryResponse, Status>>;

struct StreamEntry {
    tx: Tx,
    /// Names last sent per type, with the version.
    sent: HashMap<String, (String, Vec<String>)>,
    /// Names the client subscribed per type.
    subscribed: HashMap<String, Vec<String>>,
}

#[derive(Default)]
pub struct State {
    requests: Mutex<Vec<DiscoveryRequest>>,
    arrived: Notify,
    streams: Mutex<Vec<StreamEntry>>,
    snapshot: Mutex<Option<Snapshot>>,
    nonce: AtomicU64,
    pub streams_opened: AtomicU32,
    /// Send response headers only once the stream has subscribed to a named resource, as
    /// grpc-go servers (istiod, istio-agent) and grpcio's server do: the handler returns its
    /// response stream after it has read that request.
    pub withhold_headers_until_subscribed: AtomicBool,
    /// Send response headers only with the first response, as istiod does: grpc-go writes
    /// the headers with the first message its handler sends.
    pub withhold_headers_until_first_response: AtomicBool,
    /// Makes each response's nonce from its version (istiod: the push version followed by a
    /// UUID); `None` numbers them.
    pub nonce_format: Mutex<Option<NonceFormat>>,
}

#[derive(Clone)]
struct Service(Arc<State>);

/// A running server.
pub struct AdsServer {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl AdsServer {
    /// Starts on a fresh port.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on `addr` (to bring a "down" server up at a known address).
    pub async fn start_on(addr: SocketAddr) -> Self {
        Self::start_with_state(addr, Arc::new(State::default())).await
    }

    async fn start_with_state(addr: SocketAddr, state: Arc<State>) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, rx) = oneshot::channel();
        let incoming = futures::stream::unfold(listener, |listener| async move {
            Some((listener.accept().await.map(|(s, _)| s), listener))
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(Service(
                    state.clone(),
                )))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                }),
        );
        Self {
            addr,
            state,
            shutdown: Some(shutdown),
        }
    }

    /// A free port with nothing listening on it (for a server that is down).
    pub async fn unused_addr() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    /// Breaks every open stream (the client sees the stream end).
    pub fn break_streams(&self) {
        let mut streams = self.state.streams.lock().unwrap();
        for s in streams.drain(..) {
            let _ = s.tx.send(Err(Status::unavailable("scripted break")));
        }
    }

    /// Stops the server: streams broken, listener closed. Returns its state, to restart.
    pub async fn stop(mut self) -> Arc<State> {
        self.break_streams();
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        // Let the server task drop its listener.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(self.addr).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.state.clone()
    }

    /// Sends `response` on every open stream (a fresh nonce when it has none).
    pub fn send(&self, mut response: DiscoveryResponse) {
        if response.nonce.is_empty() {
            response.nonce = self.state.next_nonce();
        }
        for s in self.state.streams.lock().unwrap().iter() {
            let _ = s.tx.send(Ok(response.clone()));
        }
    }

    /// Serves `snapshot` from now on, pushing it to every subscribed type.
    pub fn set_snapshot(&self, snapshot: Snapshot) {
        self.state.set_snapshot(snapshot);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<DiscoveryRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits (at most 10 s) for a request matching `pred`, searching from the start.
    pub async fn wait_request(
        &self,
        what: &str,
        pred: impl Fn(&DiscoveryRequest) -> bool,
    ) -> DiscoveryRequest {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let arrived = self.state.arrived.notified();
            if let Some(r) = self.state.requests.lock().unwrap().iter().find(|r| pred(r)) {
                return r.clone();
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("no request {what} within 10 s; got {:#?}", self.requests());
            }
        }
    }
}

impl Drop for AdsServer {
    fn drop(&mut self) {
        self.break_streams();
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

impl State {
    fn next_nonce(&self) -> String {
        format!("nonce-{}", self.nonce.fetch_add(1, Ordering::SeqCst))
    }

    fn nonce_for(&self, version: &str) -> String {
        match *self.nonce_format.lock().unwrap() {
            Some(format) => format(version),
            None => self.next_nonce(),
        }
    }

    fn set_snapshot(&self, snapshot: Snapshot) {
        *self.snapshot.lock().unwrap() = Some(snapshot);
        let mut streams = self.streams.lock().unwrap();
        for s in streams.iter_mut() {
            let types: Vec<String> = s.subscribed.keys().cloned().collect();
            for ty in types {
                self.answer(s, &ty);
            }
        }
    }

    /// Sends the snapshot's resources of `ty` that the stream subscribed to.
    fn answer(&self, s: &mut StreamEntry, ty: &str) {
        let snapshot = self.snapshot.lock().unwrap().clone();
        let Some(snapshot) = snapshot else { return };
        let names = s.subscribed.get(ty).cloned().unwrap_or_default();
        let resources: Vec<Any> = snapshot
            .resources
            .get(ty)
            .into_iter()
            .flatten()
            .filter(|(n, _)| names.contains(n))
            .map(|(_, a)| a.clone())
            .collect();
        if s.sent.get(ty) == Some(&(snapshot.version.clone(), names.clone())) {
            return;
        }
        s.sent.insert(ty.into(), (snapshot.version.clone(), names));
        let _ = s.tx.send(Ok(DiscoveryResponse {
            version_info: snapshot.version.clone(),
            resources,
            type_url: ty.into(),
            nonce: self.nonce_for(&snapshot.version),
            ..Default::default()
        }));
    }

    fn on_request(&self, tx: &Tx, r: DiscoveryRequest) {
        self.requests.lock().unwrap().push(r.clone());
        self.arrived.notify_waiters();
        let mut streams = self.streams.lock().unwrap();
        let Some(s) = streams.iter_mut().find(|s| s.tx.same_channel(tx)) else {
            return;
        };
        s.subscribed
            .insert(r.type_url.clone(), r.resource_names.clone());
        if r.error_detail.is_none() {
            self.answer(s, &r.type_url);
        }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<ResponseStream>, Status> {
        let state = self.0.clone();
        state.streams_opened.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::unbounded_channel();
        state.streams.lock().unwrap().push(StreamEntry {
            tx: tx.clone(),
            sent: HashMap::new(),
            subscribed: HashMap::new(),
        });
        let mut inbound = request.into_inner();
        if state
            .withhold_headers_until_subscribed
            .load(Ordering::SeqCst)
        {
            loop {
                match inbound.next().await {
                    Some(Ok(r)) => {
                        let named = !r.resource_names.is_empty();
                        state.on_request(&tx, r);
                        if named {
                            break;
                        }
                    }
                    Some(Err(status)) => return Err(status),
                    None => return Err(Status::cancelled("the client closed the stream")),
                }
            }
        }
        let first_response = state
            .withhold_headers_until_first_response
            .load(Ordering::SeqCst);
        tokio::spawn(async move {
            while let Some(Ok(r)) = inbound.next().await {
                state.on_request(&tx, r);
            }
        });
        let mut rx = rx;
        let first = if first_response {
            // The handler returns, and tonic writes the headers, with the first response.
            match rx.recv().await {
                Some(response) => Some(response),
                None => return Err(Status::cancelled("the stream ended before a response")),
            }
        } else {
            None
        };
        let rest =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        Ok(tonic::Response::new(Box::pin(
            futures::stream::iter(first).chain(rest),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        _: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<DeltaStream>, Status> {
        Err(Status::unimplemented("delta xDS"))
    }
}
