//! The server stack: one layer for tonic's `Server::builder()` and for an axum `Router`.
//!
//! ```text
//! (TLS accept: Peer) → trace → metrics → authorization → fault → local rate limit → handler
//! ```
//!
//! ```rust,ignore
//! let layer = mesh.server_layer(Workload::new("default", "reviews.default.svc.cluster.local", 9080));
//! tonic::transport::Server::builder().layer(layer.clone()).add_service(reviews).serve(addr);
//! axum::Router::new().route("/", get(index)).layer(layer);
//! ```
//!
//! Each request loads the mesh's configuration once ([`Mesh::config`]) and is judged entirely by
//! that snapshot: by its [`ServerPolicy`](mesh_core::ServerPolicy), or, on a port an xDS client
//! serves, by the port's inbound listener ([`MeshConfig::inbound`](mesh_core::MeshConfig::inbound):
//! its RBAC filters; while it has none, every request is answered UNAVAILABLE). The steps are one service rather
//! than four stacked ones because every step reads the same snapshot and the same request
//! facts (is it gRPC, who is the peer), and a denied request must never reach the later steps;
//! each step's logic lives in its own module ([`authz`], [`rate_limit`], the shared
//! [`crate::fault`] decision).
//!
//! Everything the server answers itself is gRPC-correct for gRPC callers (trailers-only
//! `PERMISSION_DENIED`, `RESOURCE_EXHAUSTED`, the fault's status) and an HTTP status otherwise
//! (403, 429, the fault's status). The layer never fails a request with an `Err`: its error type
//! is the inner service's (`Infallible` for tonic and axum).
//!
//! Health checks (`/grpc.health.v1.Health/*`, `/healthz`) skip authorization, faults and the
//! rate limit when [`ServerLayer::bypass_health_checks`] is set, so a kubelet probe or a load
//! balancer's health check is not denied by a policy written for application traffic.

pub mod authz;
mod body;
mod future;
pub mod rate_limit;

use std::{
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, header};
use mesh_core::{DEFAULT_ROOT_NAMESPACE, InboundState, Labels, MtlsMode};
use tower::{Layer, Service};

use self::{authz::Authorized, rate_limit::RateLimiter};
pub use self::{
    body::{MeteredRequestBody, ServerBody},
    future::ServerFuture,
};
use crate::{
    Mesh, Peer,
    fault::{ActiveFault, injected_abort},
    metrics::ServerRecorder,
    rng,
    synthesize::ResponseFlags,
    trace::ServerTrace,
};

/// The workload a server belongs to: what authorization and peer-authentication selectors
/// match, and the `destination_*` labels of its metrics.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Workload {
    /// The workload's name (Istio's `destination_workload`, e.g. `reviews-v1`).
    pub name: Arc<str>,
    /// Its namespace.
    pub namespace: Arc<str>,
    /// Its labels (`app`, `version`, ...): selectors match them, metrics read `app` and
    /// `version`.
    pub labels: Labels,
    /// The service host it serves (`reviews.default.svc.cluster.local`).
    pub service: Arc<str>,
    /// The port it listens on (authorization's `destination.port`, peer-authentication port
    /// overrides).
    pub port: u16,
    /// The cluster it runs in (`destination_cluster`). Default is `Kubernetes`, Istio's.
    pub cluster: Arc<str>,
    /// Its own SPIFFE identity without `spiffe://` (`destination_principal`), when it has one.
    pub principal: Option<Arc<str>>,
    /// The mesh's root namespace. Default is `istio-system`.
    pub root_namespace: Arc<str>,
}

/// The server stack as a [`Layer`]; see the [module docs](self).
///
/// Clones share the local rate limiter: one server, one token bucket, as Envoy's local rate
/// limit is per listener.
#[derive(Clone, Debug)]
pub struct ServerLayer {
    shared: Arc<Shared>,
}

/// What every request of one server shares.
#[derive(Clone, Debug)]
struct Shared {
    mesh: Mesh,
    workload: Arc<Workload>,
    bypass_health_checks: bool,
    limiter: RateLimiter,
}

/// The server stack around a handler `S`.
#[derive(Clone, Debug)]
pub struct MeshServer<S> {
    shared: Arc<Shared>,
    inner: S,
}

// === impl Workload ===

impl Workload {
    /// A workload of `namespace` serving `service` on `port`. Its name defaults to the
    /// service's first DNS label, its labels to none, the cluster to `Kubernetes`, no principal,
    /// and the root namespace to `istio-system`.
    pub fn new(namespace: impl Into<Arc<str>>, service: impl Into<Arc<str>>, port: u16) -> Self {
        let service: Arc<str> = service.into();
        let name = service.split('.').next().unwrap_or_default().into();
        Self {
            name,
            namespace: namespace.into(),
            labels: Labels::default(),
            service,
            port,
            cluster: "Kubernetes".into(),
            principal: None,
            root_namespace: DEFAULT_ROOT_NAMESPACE.into(),
        }
    }

    /// Sets the workload name.
    pub fn with_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the labels.
    pub fn with_labels(mut self, labels: Labels) -> Self {
        self.labels = labels;
        self
    }

    /// Sets the workload's own principal (`cluster.local/ns/<ns>/sa/<sa>`).
    pub fn with_principal(mut self, principal: impl Into<Arc<str>>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// Sets the cluster name.
    pub fn with_cluster(mut self, cluster: impl Into<Arc<str>>) -> Self {
        self.cluster = cluster.into();
        self
    }

    /// The `app` label, else Kubernetes' `app.kubernetes.io/name`, else the workload name.
    pub fn app(&self) -> &str {
        self.labels
            .get("app")
            .or_else(|| self.labels.get("app.kubernetes.io/name"))
            .unwrap_or(&self.name)
    }

    /// The `version` label, else Kubernetes' `app.kubernetes.io/version`, else `unknown`.
    pub fn version(&self) -> &str {
        self.labels
            .get("version")
            .or_else(|| self.labels.get("app.kubernetes.io/version"))
            .unwrap_or("unknown")
    }
}

// === impl Mesh ===

impl Mesh {
    /// The server stack for `workload`, as one layer for tonic's `Server::builder().layer(..)`
    /// or axum's `Router::layer(..)`. See [`crate::server`].
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
                limiter: RateLimiter::default(),
            }),
        }
    }

    /// Whether `grpc.health.v1.Health/*` and `/healthz` skip authorization, faults and the rate
    /// limit (they are still counted in metrics). Default is `false`.
    pub fn bypass_health_checks(self, bypass: bool) -> Self {
        let mut shared = (*self.shared).clone();
        shared.bypass_health_checks = bypass;
        Self {
            shared: Arc::new(shared),
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

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        let config = shared.mesh.config();
        let policy = config.server();
        let is_grpc = is_grpc(&req);
        let peer = peer_of(&req);

        let mut recorder = ServerRecorder::start(&shared.mesh, &shared.workload, &peer, is_grpc);
        if let Some(recorder) = recorder.as_mut() {
            req = recorder.meter_request(req);
        }

        if shared.bypass_health_checks && is_health_check(req.uri().path()) {
            return ServerFuture::forward(self.inner.call(req), recorder);
        }

        // A port an xDS client serves follows its inbound listener, and serves nothing while
        // it has none; any other port follows the local policy. A plaintext connection
        // accepted before the listener's chain required mTLS is not served either (A36 drains
        // connections whose chain changed; refusing their requests is the part security needs).
        let rules = match config.inbound().get(shared.workload.port) {
            None => authz::Rules::Local(policy),
            Some(InboundState::Serving(listener))
                if listener.mtls == MtlsMode::Strict && peer.identity.is_none() =>
            {
                return ServerFuture::answer(authz::not_serving_response(is_grpc), recorder);
            }
            Some(InboundState::Serving(listener)) => authz::Rules::Rbac(&listener.rbac),
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
            let decision = fault.decide(active, rng::draw(), rng::draw());
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

/// gRPC's health service and the conventional HTTP probe path.
fn is_health_check(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path == "/healthz"
}

/// The request's [`Peer`]: the one the TLS acceptor put in the extensions, else a plaintext
/// peer with the address tonic (`TcpConnectInfo`) or axum (`ConnectInfo<SocketAddr>`) recorded.
fn peer_of<B>(req: &Request<B>) -> Peer {
    let ext = req.extensions();
    if let Some(peer) = ext.get::<Peer>() {
        return peer.clone();
    }
    let address = ext
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr)
        .or_else(|| {
            ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|info| info.0)
        });
    Peer {
        address,
        identity: None,
    }
}

#[cfg(test)]
mod tests;
