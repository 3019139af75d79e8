//! The server stack: one layer for tonic's `Server::builder()` and for an axum `Router`.
//!
//! ```text
//! (TLS accept: Peer) → trace → metrics → normalization → authorization → fault
//!                    → local rate limit → handler
//! ```
//!
//! ```no_run
//! use mesh_tower::{Mesh, Peer, Workload, mesh_core::MeshConfig, tls::{MeshListener, ServerTls}};
//!
//! # async fn run(routes: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
//! let mesh = Mesh::new(MeshConfig::empty());
//! let layer = mesh.server_layer(Workload::new("default", "reviews.default.svc.cluster.local", 9080));
//!
//! // tonic: `routes` are your services, e.g. `Routes::new(ReviewsServer::new(reviews))`.
//! let listener = MeshListener::bind("0.0.0.0:9080", ServerTls::plaintext()).await?;
//! let grpc = tonic::transport::Server::builder()
//!     .layer(layer.clone())
//!     .add_routes(routes)
//!     .serve_with_incoming(listener);
//!
//! // axum: the connect info carries the caller's `Peer` to the layer.
//! let router = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "hello" }))
//!     .layer(layer);
//! let listener = MeshListener::bind("0.0.0.0:8080", ServerTls::plaintext()).await?;
//! let http = axum::serve(listener, router.into_make_service_with_connect_info::<Peer>());
//!
//! let (grpc, http) = tokio::join!(grpc, http);
//! grpc?;
//! http?;
//! # Ok(()) }
//! ```
//!
//! Each request loads the mesh's configuration once ([`Mesh::config`]) and is judged entirely by
//! that snapshot: by its [`ServerPolicy`](mesh_core::ServerPolicy), or, on a port an xDS client
//! serves, by the port's inbound listener ([`MeshConfig::inbound`](mesh_core::MeshConfig::inbound):
//! its RBAC filters; while it has none, every request is answered UNAVAILABLE). The steps are one service rather
//! than four stacked ones because every step reads the same snapshot and the same request
//! facts (is it gRPC, who is the peer), and a denied request must never reach the later steps;
//! each step's logic lives in its own module ([`authz`], `rate_limit`, the fault decision the
//! client's fault layer shares).
//!
//! Everything the server answers itself is gRPC-correct for gRPC callers (trailers-only
//! `PERMISSION_DENIED`, `RESOURCE_EXHAUSTED`, the fault's status) and an HTTP status otherwise
//! (403, 429, the fault's status). The layer never fails a request with an `Err`: its error type
//! is the inner service's (`Infallible` for tonic and axum).
//!
//! The request head is normalized first: the path by the policy's
//! [`PathNormalizer`] (Istio's `pathNormalization`, default `BASE`; see
//! [`ServerLayer::path_normalization`]), the method and the authority, and the request is
//! rewritten so that authorization and the handler see the same path and host. A request that
//! cannot be normalized (`%00` in the path, a lower-case method, ...) gets 400 /
//! `INVALID_ARGUMENT`.
//!
//! Health checks skip authorization, faults and the rate limit when
//! [`ServerLayer::bypass_health_checks`] is set, so a kubelet probe or a load balancer's health
//! check is not denied by a policy written for application traffic. Only the exact, normalized
//! paths `/grpc.health.v1.Health/Check`, `/grpc.health.v1.Health/Watch` and `/healthz` are
//! health checks: a prefix would let `/grpc.health.v1.Health/../../admin` through.
//!
//! # Where the caller's identity comes from
//!
//! Authorization judges the [`Peer`] the connection established, so that peer must reach the
//! layer on every serving path:
//!
//! - tonic on a [`MeshListener`](crate::tls::MeshListener) (`serve_with_incoming`): tonic puts
//!   the connection's `Peer` in every request.
//! - axum on a `MeshListener` with `into_make_service_with_connect_info::<Peer>()`: axum puts a
//!   `ConnectInfo<Peer>`.
//! - hyper's `server::conn` on a [`MeshStream`](crate::tls::MeshStream): build the service per
//!   connection with [`ServerLayer::for_connection`]`(stream.peer().clone())`.
//! - axum's `into_make_service()` (no connect info) gives the layer no connection facts at
//!   all; axum has no hook through which the listener could add them. Such a request is
//!   *refused* (403 / `PERMISSION_DENIED`, and an error log that says how to wire the server)
//!   whenever being wrong would matter: an authorization policy names principals or
//!   namespaces, or the port's PeerAuthentication mode is STRICT. Judging it as "plaintext,
//!   no principal" would satisfy every `notPrincipals` and bypass STRICT.
//!
//! A request from a peer without a verified identity is refused too when the port's mode is
//! STRICT (a connection accepted before the mode changed, or a server not behind a
//! `MeshListener`): the listener is where STRICT is enforced, this is the second lock.

pub mod authz;
mod body;
mod future;
mod normalize;
mod rate_limit;
mod workload;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use http::{Request, Response, header};
use mesh_core::{InboundState, MtlsMode, PathNormalizer};
use tower::{Layer, Service};

use self::{authz::Authorized, rate_limit::RateLimiter};
pub use self::{body::ServerBody, future::ServerFuture, workload::Workload};
pub use crate::metrics::metered::MeteredRequestBody;
use crate::{
    Mesh, Peer,
    fault::{ActiveFault, injected_abort},
    metrics::ServerRecorder,
    rng,
    synthesize::ResponseFlags,
    trace::ServerTrace,
};

/// The server stack as a [`Layer`]; see the [module docs](self).
///
/// Clones share the local rate limiter: one server, one token bucket, as Envoy's local rate
/// limit is per listener.
#[derive(Clone, Debug)]
pub struct ServerLayer {
    shared: Arc<Shared>,
    /// The peer of the one connection this layer serves ([`ServerLayer::for_connection`]).
    connection: Option<Peer>,
}

/// What every request of one server shares.
#[derive(Clone, Debug)]
struct Shared {
    mesh: Mesh,
    workload: Arc<Workload>,
    bypass_health_checks: bool,
    /// Overrides the policy's path normalization when set.
    path_normalization: Option<PathNormalizer>,
    limiter: RateLimiter,
    /// Whether the "no connection facts" misconfiguration was logged already (once per
    /// server, not once per request).
    reported_unknown_peer: Arc<AtomicBool>,
}

/// The server stack around a handler `S`.
#[derive(Clone, Debug)]
pub struct MeshServer<S> {
    shared: Arc<Shared>,
    connection: Option<Peer>,
    inner: S,
}

// === impl Mesh ===

impl Mesh {
    /// The server stack for `workload`, as one layer for tonic's `Server::builder().layer(..)`
    /// or axum's `Router::layer(..)`. See [`crate::server`] for a tonic and an axum server.
    ///
    /// ```
    /// use mesh_tower::{Mesh, Workload, mesh_core::MeshConfig};
    ///
    /// let mesh = Mesh::new(MeshConfig::empty());
    /// let layer = mesh
    ///     .server_layer(Workload::new("default", "reviews.default.svc.cluster.local", 9080))
    ///     .bypass_health_checks(true);
    /// let router: axum::Router = axum::Router::new()
    ///     .route("/healthz", axum::routing::get(|| async { "ok" }))
    ///     .layer(layer);
    /// # let _ = router;
    /// ```
    pub fn server_layer(&self, workload: Workload) -> ServerLayer {
        ServerLayer::new(self.clone(), workload)
    }
}

// === impl ServerLayer ===

impl ServerLayer {
    /// The server stack of `workload`, enforcing `mesh`'s server policy. Health checks go
    /// through policy unless [`bypass_health_checks`](Self::bypass_health_checks) is set.
    pub fn new(mesh: Mesh, workload: Workload) -> Self {
        Self {
            shared: Arc::new(Shared {
                mesh,
                workload: Arc::new(workload),
                bypass_health_checks: false,
                path_normalization: None,
                limiter: RateLimiter::default(),
                reported_unknown_peer: Arc::default(),
            }),
            connection: None,
        }
    }

    /// Whether health checks (exactly `/grpc.health.v1.Health/Check`,
    /// `/grpc.health.v1.Health/Watch` and `/healthz`, after path normalization) skip
    /// authorization, faults and the rate limit (they are still counted in metrics). Default is
    /// `false`.
    pub fn bypass_health_checks(self, bypass: bool) -> Self {
        let mut shared = (*self.shared).clone();
        shared.bypass_health_checks = bypass;
        Self {
            shared: Arc::new(shared),
            connection: self.connection,
        }
    }

    /// This layer for the one connection of `peer`, for servers that run hyper's
    /// `server::conn` themselves on a [`MeshStream`](crate::tls::MeshStream) (whose
    /// [`peer`](crate::tls::MeshStream::peer) it takes): requests that carry no `Peer` of their
    /// own are judged as `peer`'s, and handlers find it in their extensions. The rate limiter
    /// stays shared with `self`.
    ///
    /// ```no_run
    /// use futures::StreamExt as _;
    /// use hyper_util::rt::{TokioExecutor, TokioIo};
    /// use mesh_tower::{ServerLayer, tls::MeshListener};
    /// use tower::ServiceExt as _;
    ///
    /// # async fn run(
    /// #     mut listener: MeshListener,
    /// #     layer: ServerLayer,
    /// #     router: axum::Router,
    /// # ) -> std::io::Result<()> {
    /// while let Some(stream) = listener.next().await {
    ///     let stream = stream?;
    ///     let service = tower::ServiceBuilder::new()
    ///         // The layer meters tonic's and axum's request bodies: hyper's becomes axum's.
    ///         .map_request(|req: http::Request<hyper::body::Incoming>| req.map(axum::body::Body::new))
    ///         .layer(layer.for_connection(stream.peer().clone()))
    ///         .service(router.clone());
    ///     let service = hyper::service::service_fn(move |req| service.clone().oneshot(req));
    ///     tokio::spawn(
    ///         hyper::server::conn::http2::Builder::new(TokioExecutor::new())
    ///             .serve_connection(TokioIo::new(stream), service),
    ///     );
    /// }
    /// # Ok(()) }
    /// ```
    pub fn for_connection(&self, peer: Peer) -> Self {
        Self {
            shared: self.shared.clone(),
            connection: Some(peer),
        }
    }

    /// How this server normalizes request paths, in place of the server policy's
    /// [`path_normalization`](mesh_core::ServerPolicy::path_normalization) (Istio's
    /// `MeshConfig.pathNormalization`). Default is the policy's, itself Istio's `BASE` unless
    /// configured. Authorization and the handler both see the normalized path, so choose the
    /// mode that matches how the application reads paths (see Istio's "Security best
    /// practices" on path normalization): [`PathNormalization::None`](mesh_core::PathNormalization::None)
    /// leaves path rules open to `/%61dmin` and `/public/../admin`.
    pub fn path_normalization(self, normalizer: PathNormalizer) -> Self {
        let mut shared = (*self.shared).clone();
        shared.path_normalization = Some(normalizer);
        Self {
            shared: Arc::new(shared),
            connection: self.connection,
        }
    }

    /// The workload this layer serves.
    pub fn workload(&self) -> &Workload {
        &self.shared.workload
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerTrace<MeshServer<S>>;

    /// Trace extraction goes first, so the policy steps, their metrics and the handler all run
    /// inside the request's trace.
    fn layer(&self, inner: S) -> Self::Service {
        let tracing = self.shared.mesh.tracing().clone();
        ServerTrace::new(
            MeshServer {
                shared: self.shared.clone(),
                connection: self.connection.clone(),
                inner,
            },
            tracing,
        )
    }
}

// === impl MeshServer ===

impl<S> MeshServer<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Whether a request from a peer without a verified identity must be refused before
    /// authorization: the port is STRICT, or the connection is unknown and the policy would
    /// judge it by identity (see the [module docs](self)).
    fn refuses_unproven_peer(
        &self,
        policy: &mesh_core::ServerPolicy,
        peer: &Peer,
        peer_is_known: bool,
    ) -> bool {
        let workload = &self.shared.workload;
        let strict = policy.mtls_mode(
            &workload.namespace,
            &workload.labels,
            workload.port,
            &workload.root_namespace,
        ) == MtlsMode::Strict;
        if peer_is_known {
            if strict {
                tracing::debug!(address = ?peer.address, "request without a verified peer identity refused: the port is STRICT");
            }
            return strict;
        }
        let needs_identity = strict
            || policy.needs_peer_identity(
                &workload.namespace,
                &workload.labels,
                &workload.root_namespace,
            );
        if needs_identity
            && !self
                .shared
                .reported_unknown_peer
                .swap(true, Ordering::Relaxed)
        {
            tracing::error!(
                workload = %workload.name,
                "a request reached the mesh server layer without connection facts, so the \
                 caller's identity is unknown; requests are refused while the policy needs it. \
                 Serve behind MeshListener with tonic's serve_with_incoming, axum's \
                 into_make_service_with_connect_info::<Peer>(), or \
                 ServerLayer::for_connection for hyper"
            );
        }
        needs_identity
    }
}

impl<S, B, RB> Service<Request<B>> for MeshServer<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    B: MeteredRequestBody,
{
    type Response = Response<ServerBody<RB>>;
    type Error = S::Error;
    type Future = ServerFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The server's decisions (denials, faults, rate limits: see `Failure::into_response`)
        // are logged inside a span carrying the request's trace id.
        let span = tracing::debug_span!("mesh_serve", trace_id = tracing::field::Empty);
        if !span.is_disabled()
            && let Some(trace) = req.extensions().get::<crate::trace::RequestTrace>()
        {
            span.record(
                "trace_id",
                tracing::field::display(trace.context().trace_id()),
            );
        }
        span.in_scope(|| self.serve(req))
    }
}

impl<S> MeshServer<S> {
    fn serve<B, RB>(&mut self, mut req: Request<B>) -> ServerFuture<S, B>
    where
        S: Service<Request<B>, Response = Response<RB>> + Clone,
        B: MeteredRequestBody,
    {
        let shared = &self.shared;
        let config = shared.mesh.config();
        let policy = config.server();
        let is_grpc = is_grpc(&req);
        let known_peer = peer_of(&req, self.connection.as_ref());
        let peer_is_known = known_peer.is_some();
        let peer = known_peer.unwrap_or_default();
        if self.connection.is_some() && req.extensions().get::<Peer>().is_none() {
            req.extensions_mut().insert(peer.clone());
        }

        let mut recorder =
            ServerRecorder::start(&shared.mesh, &shared.workload, &peer, is_grpc, &req);
        if let Some(recorder) = recorder.as_mut() {
            req = recorder.meter_request(req);
        }

        let paths = shared
            .path_normalization
            .as_ref()
            .unwrap_or(&policy.path_normalization);
        if let Err(refused) = normalize::normalize(&mut req, paths) {
            return ServerFuture::answer(normalize::refused_response(refused, is_grpc), recorder);
        }

        if shared.bypass_health_checks && is_health_check(req.uri().path()) {
            return ServerFuture::forward(self.inner.call(req), recorder);
        }

        // A port an xDS client serves follows its inbound listener, and serves nothing while
        // it has none; any other port follows the local policy.
        let rules = match config.inbound().get(shared.workload.port) {
            None => {
                if peer.identity.is_none()
                    && self.refuses_unproven_peer(policy, &peer, peer_is_known)
                {
                    if let Some(recorder) = recorder.as_mut() {
                        recorder.denied(None);
                    }
                    return ServerFuture::answer(authz::denied_response(is_grpc), recorder);
                }
                authz::Rules::Local(policy)
            }
            Some(InboundState::Serving(listener)) => {
                // Each request follows the chain the current listener gives its connection: a
                // connection whose chain changed is drained by the listener, and meanwhile its
                // requests get the new chain's policy.
                let chain = match (peer.local_address, peer.address) {
                    (Some(local), Some(remote)) => listener.select(local, remote),
                    _ => listener.chain_for_every_connection(),
                };
                match chain {
                    // A plaintext connection accepted before its chain required mTLS.
                    Some(chain) if chain.mtls == MtlsMode::Strict && peer.identity.is_none() => {
                        return ServerFuture::answer(
                            authz::not_serving_response(is_grpc),
                            recorder,
                        );
                    }
                    // Without connection facts neither the chain nor RBAC's principals can be
                    // judged.
                    Some(_) if !peer_is_known => {
                        if let Some(recorder) = recorder.as_mut() {
                            recorder.denied(None);
                        }
                        return ServerFuture::answer(authz::denied_response(is_grpc), recorder);
                    }
                    Some(chain) => authz::Rules::Rbac(&chain.rbac),
                    // No chain takes this connection (any more): it is being drained, or its
                    // addresses are unknown and the chain depends on them.
                    None => {
                        return ServerFuture::answer(
                            authz::not_serving_response(is_grpc),
                            recorder,
                        );
                    }
                }
            }
            Some(InboundState::NotServing(_)) => {
                return ServerFuture::answer(authz::not_serving_response(is_grpc), recorder);
            }
        };
        match authz::authorize(rules, &shared.workload, &peer, &req, recorder.as_ref()) {
            Authorized::Allowed => {}
            Authorized::Denied(policy) => {
                if let Some(recorder) = recorder.as_mut() {
                    recorder.denied(policy.as_deref());
                }
                return ServerFuture::answer(authz::denied_response(is_grpc), recorder);
            }
        }

        if let Some(fault) = &policy.fault {
            let active = shared
                .mesh
                .active_faults()
                .load(std::sync::atomic::Ordering::Relaxed);
            let (delay_draw, abort_draw) = (rng::draw(), rng::draw());
            // An inbound fault filter with `header_abort` / `header_delay` reads the caller's
            // `x-envoy-fault-*` headers, as on the client side.
            let decision = if fault.reads_headers() {
                fault
                    .for_request(req.headers())
                    .decide(active, delay_draw, abort_draw)
            } else {
                fault.decide(active, delay_draw, abort_draw)
            };
            if decision.is_fault() {
                let guard = ActiveFault::new(&shared.mesh);
                let abort = decision
                    .abort
                    .map(|status| injected_abort(status).into_response(is_grpc));
                if let Some(delay) = decision.delay {
                    if let Some(recorder) = recorder.as_mut() {
                        recorder.flag(ResponseFlags::DelayInjected);
                    }
                    // The service polled ready is the one that will take the request after the
                    // delay; a fresh clone stays here for the next call.
                    let ready = self.inner.clone();
                    let inner = std::mem::replace(&mut self.inner, ready);
                    return ServerFuture::delay(
                        delay,
                        req,
                        abort,
                        inner,
                        guard,
                        self.shared.clone(),
                        policy.rate_limit,
                        is_grpc,
                        recorder,
                    );
                }
                drop(guard);
                if let Some(abort) = abort {
                    return ServerFuture::answer(abort, recorder);
                }
            }
        }

        if let Some(limit) = policy.rate_limit
            && !shared.limiter.try_acquire(limit)
        {
            return ServerFuture::answer(rate_limit::limited_response(is_grpc), recorder);
        }
        ServerFuture::forward(self.inner.call(req), recorder)
    }
}

/// Whether the request is gRPC (`content-type: application/grpc[+proto|;...]`).
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// gRPC's health service methods and the conventional HTTP probe path, exactly: the path is
/// normalized already, and anything longer could lead elsewhere.
fn is_health_check(path: &str) -> bool {
    matches!(
        path,
        "/grpc.health.v1.Health/Check" | "/grpc.health.v1.Health/Watch" | "/healthz"
    )
}

/// The request's [`Peer`]: the one the TLS acceptor put in the extensions (tonic: `Peer`; axum:
/// `ConnectInfo<Peer>`), else the `connection`'s ([`ServerLayer::for_connection`]), else a
/// plaintext peer with the address a plain TCP server recorded (tonic's `TcpConnectInfo`,
/// axum's `ConnectInfo<SocketAddr>`). `None` when the request carries no connection facts at
/// all: then nothing says whether the caller proved an identity.
fn peer_of<B>(req: &Request<B>, connection: Option<&Peer>) -> Option<Peer> {
    let ext = req.extensions();
    if let Some(peer) = Peer::from_extensions(ext).or(connection) {
        return Some(peer.clone());
    }
    let (address, local_address) = ext
        .get::<tonic::transport::server::TcpConnectInfo>()
        .map(|info| (info.remote_addr, info.local_addr))
        .or_else(|| {
            ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|info| (Some(info.0), None))
        })?;
    Some(Peer {
        address,
        local_address,
        identity: None,
    })
}

#[cfg(test)]
mod tests;
