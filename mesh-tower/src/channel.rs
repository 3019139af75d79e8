//! A channel to one target: the client stack as a single `tower::Service`, and where your own
//! layers go.
//!
//! The metrics layer sits right after the route layer rather than before it: it labels each
//! call with the destination the route layer chose (the [`RouteDecision`]
//! in the request's extensions), and it still sees each call once, around every retry.
//! Calls the route layer answers itself (no route, direct responses) never reach it: the route
//! layer records those itself, with the channel's target as their destination.
//!
//! # Your layers
//! There are two documented points:
//! - **Around the channel**, e.g. `ServiceBuilder::new().layer(auth).service(mesh.channel(t))`:
//!   the layer sees each call once, before routing — authentication headers, client-side rate
//!   limits, logging of what the application asked for.
//! - **Per attempt**, with [`Mesh::channel_with_attempt_layer`]: the layer sits between the retry
//!   layer and the balancer and sees every attempt, with the [`RouteDecision`]
//!   in the request's extensions and `x-envoy-attempt-count` set — per-attempt spans and
//!   metrics, request signing that must be fresh per attempt. Its service must be always ready
//!   or cheap to make ready, like the balancer it wraps.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tower::{Layer, Service};
use tracing::Instrument as _;

use crate::{
    Mesh,
    body::{BoxError, RequestBody, ResponseBody},
    decision::RouteDecision,
    discovery,
    fault::Fault,
    metrics::ClientMetrics,
    retry::Retry,
    route::Route,
    timeout::Timeout,
    trace::{self, ClientTrace, SpanFuture},
};

mod future;

pub use self::future::ResponseFuture;
pub use crate::{
    balance::{Balance, UpstreamAddress},
    endpoint::ConnectError,
};

/// A channel to one target (`host:port`): route → metrics → fault → timeout → retry → trace →
/// (your per-attempt layer) → breaker and balance → endpoint.
///
/// Every attempt is a new client span of the caller's trace, written into its headers (see
/// [`trace`]; settings from [`MeshBuilder::tracing`](crate::MeshBuilder::tracing) or
/// [`Mesh::set_tracing`]).
///
/// It is a `tower::Service<http::Request<B>>` for any body `B`, so a tonic-generated client
/// takes it as is (`ReviewsClient::new(mesh.channel("reviews.default.svc.cluster.local:9080"))`)
/// and an axum handler can send plain HTTP requests through it. Cloning is cheap; clones share
/// the mesh's connections. The channel is always ready: admission is decided per request by the
/// cluster's circuit breaker, which answers an overflow at once.
#[derive(Clone, Debug)]
pub struct Channel<S = Balance> {
    stack: Route<Routed<S>>,
}

/// The layers after the route layer, around the per-attempt service `S`.
type Routed<S> = ClientMetrics<Fault<Timeout<Retry<ClientTrace<S>>>>>;

// === impl Mesh ===

impl Mesh {
    /// A channel to `target` (`host:port`, e.g. `reviews.default.svc.cluster.local:9080`):
    /// a `tower::Service` that tonic clients accept unchanged and plain HTTP callers can use.
    ///
    /// An `xds:///host:port` target is resolved through the mesh's [`Discovery`](crate::Discovery)
    /// source, which is asked to watch it now.
    ///
    /// # Example
    ///
    /// A tonic-generated client takes the channel as is:
    /// `ReviewsClient::new(mesh.channel("reviews.default.svc.cluster.local:9080"))`. Without
    /// generated code, `tonic::client::Grpc` does the same:
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// use mesh_tower::Mesh;
    /// use tonic::client::Grpc;
    /// use tonic_prost::ProstCodec;
    ///
    /// # #[derive(Clone, PartialEq, prost::Message)]
    /// # struct EchoRequest { #[prost(string, tag = "1")] message: String }
    /// # #[derive(Clone, PartialEq, prost::Message)]
    /// # struct EchoReply { #[prost(string, tag = "1")] message: String }
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let (mesh, _watch) = Mesh::from_istio_yaml(&["mesh.yaml"], Duration::from_secs(1))?;
    /// let mut echo = Grpc::new(mesh.channel("echo.default.svc.cluster.local:50051"));
    ///
    /// echo.ready().await?;
    /// let reply: tonic::Response<EchoReply> = echo
    ///     .unary(
    ///         tonic::Request::new(EchoRequest { message: "hello".into() }),
    ///         "/echo.Echo/Say".parse()?,
    ///         ProstCodec::default(),
    ///     )
    ///     .await?;
    /// println!("{}", reply.into_inner().message);
    /// # Ok(()) }
    /// ```
    pub fn channel(&self, target: impl Into<Arc<str>>) -> Channel {
        Channel::with_attempt_service(self.clone(), target.into(), Balance::new(), true)
    }

    /// A channel to `target` whose every attempt also passes through `layer`, between the retry
    /// layer and the balancer (see the [module docs](crate::channel)).
    pub fn channel_with_attempt_layer<L>(
        &self,
        target: impl Into<Arc<str>>,
        layer: L,
    ) -> Channel<L::Service>
    where
        L: Layer<Balance>,
    {
        Channel::with_attempt_service(
            self.clone(),
            target.into(),
            layer.layer(Balance::new()),
            false,
        )
    }
}

// === impl Channel ===

impl<S> Channel<S> {
    /// With `balancer_below_retry` (the attempt service is the mesh's balancer alone), the
    /// balancer hands back the head a retry needs instead of the retry layer copying it up
    /// front ([`retry::head`](crate::retry)).
    fn with_attempt_service(
        mesh: Mesh,
        target: Arc<str>,
        attempt: S,
        balancer_below_retry: bool,
    ) -> Self {
        let target = match discovery::strip_scheme(&target) {
            Some(name) => {
                if let Some(discovery) = mesh.discovery() {
                    discovery.watch(name);
                }
                Arc::from(name)
            }
            None => target,
        };
        let stack = Route::new(
            mesh.clone(),
            target,
            ClientMetrics::new(
                mesh.clone(),
                Fault::new(
                    mesh.clone(),
                    Timeout::new({
                        let attempt = ClientTrace::with_shared(attempt, mesh.shared_tracing())
                            .with_pinned(RouteDecision::pinned_trace);
                        if balancer_below_retry {
                            Retry::handing_back_heads(attempt)
                        } else {
                            Retry::new(attempt)
                        }
                    }),
                ),
            ),
        );
        Self { stack }
    }
}

impl<S, B> Service<Request<B>> for Channel<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.stack.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let req = req.map(|body| body.map_err(Into::into).boxed_unsync());
        let (pinned, call_span) = trace::pin_caller_trace(&req, self.stack.mesh().tracing());
        // The call's diagnostics (route, retries, synthesized answers) carry its trace id; the
        // span costs a callsite check when debug logging is off.
        let span = tracing::debug_span!(
            "mesh_call",
            trace_id = tracing::field::Empty,
            target = %self.stack.target_name(),
        );
        if !span.is_disabled()
            && let Some(trace) = pinned
                .as_ref()
                .or_else(|| req.extensions().get::<trace::RequestTrace>())
        {
            span.record(
                "trace_id",
                tracing::field::display(trace.context().trace_id()),
            );
        }
        self.stack.pin_trace(pinned);
        let future = span.in_scope(|| self.stack.call(req));
        ResponseFuture::new(SpanFuture::new(future.instrument(span), call_span))
    }
}
