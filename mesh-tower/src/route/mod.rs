//! The route layer: loads the configuration snapshot once, normalizes the request path (as the
//! server stack does, with the mesh's [`PathNormalizer`](mesh_core::PathNormalizer)), matches
//! the request, picks the weighted cluster, rewrites the request, starts mirrors, and answers
//! redirects, direct responses, "no route" and refused paths (400 / `INVALID_ARGUMENT`)
//! itself.
//!
//! Its decision travels in the request's extensions as a [`RouteDecision`]; no later layer
//! reads the live configuration. A request that cannot be routed is answered, not failed: a
//! gRPC caller gets `UNAVAILABLE` (as gRPC's own xDS client answers an unmatched RPC), an HTTP
//! caller 404, and the message says what was missing.
//!
//! A target with no listener in a configuration loaded from Istio YAML follows the workload's
//! `outboundTrafficPolicy` ([`mesh_core::sidecar`]): `ALLOW_ANY` (Istio's default) passes it
//! through to the target by DNS with no mesh policy, as Envoy's `PassthroughCluster`;
//! `REGISTRY_ONLY` refuses it (`UNAVAILABLE`, HTTP 502) naming the Sidecar.

mod future;
mod mirror;
mod passthrough;

use std::{
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use http::{
    HeaderValue, Request, Response, StatusCode, Uri, header,
    uri::{Authority, PathAndQuery, Scheme},
};
use mesh_core::{
    Action, GrpcCode, Workload,
    matcher::PathMatch,
    route::{
        DirectResponse, Forward, HeaderMutations, PathRewrite, Redirect, RequestHead,
        Route as RouteRule,
    },
    sidecar::OutboundMode,
};
use tower::Service;

pub(crate) use self::future::RouteFuture;
use self::passthrough::{Passthrough, black_hole, pass_through};
use crate::{
    Mesh,
    body::{BoxError, RequestBody, ResponseBody},
    decision::RouteDecision,
    mesh::Snapshot,
    metrics::Recorder,
    request_path, rng,
    synthesize::{Failure, ResponseFlags},
    trace::RequestTrace,
};

/// Routes requests for one target; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Route<S> {
    mesh: Mesh,
    target: Target,
    inner: S,
    /// The trace the channel pinned to the next call, for its decision (`pin_trace`).
    pinned: Option<RequestTrace>,
}

/// The channel's target: its name (`host:port`), and that name parsed as the authority of
/// requests that name none (`None` when it is not a valid authority: each such request then
/// reports why).
#[derive(Clone, Debug)]
struct Target {
    name: Arc<str>,
    authority: Option<Authority>,
    /// The channel's namespace, for short names (see `MeshConfig::listener_in`).
    namespace: Arc<str>,
    /// The local workload, for routes scoped by source (`sourceLabels`, `sourceNamespace`).
    workload: Arc<Workload>,
    /// The target's passthrough cluster (`ALLOW_ANY`), made on its first use.
    passthrough: Arc<OnceLock<Passthrough>>,
}

// === impl Route ===

impl<S> Route<S> {
    /// Routes requests for `target` with `mesh`'s configuration, then calls `inner`.
    pub(crate) fn new(mesh: Mesh, target: Arc<str>, inner: S) -> Self {
        let workload = Arc::new(mesh.local_workload());
        Self {
            mesh,
            target: Target {
                authority: Authority::try_from(&*target).ok(),
                name: target,
                namespace: workload.namespace.clone(),
                workload,
                passthrough: Arc::default(),
            },
            inner,
            pinned: None,
        }
    }

    /// Routes the next call with `trace` (the trace the channel pinned to it) in its decision.
    pub(crate) fn pin_trace(&mut self, trace: Option<RequestTrace>) {
        self.pinned = trace;
    }

    /// The mesh it routes with.
    pub(crate) fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The channel's target (`host:port`).
    pub(crate) fn target_name(&self) -> &str {
        &self.target.name
    }
}

impl<S> Service<Request<RequestBody>> for Route<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = RouteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        let trace = self.pinned.take();
        let snapshot = self.mesh.snapshot();
        if snapshot
            .config
            .listener_in(&self.target.name, &self.target.namespace)
            .is_none()
            && self.is_pending()
        {
            // The rare path: the target's configuration is still being discovered. The inner
            // service that was made ready goes with the request, a clone stays (tower's rule).
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            let (mesh, target) = (self.mesh.clone(), self.target.clone());
            let bound =
                crate::timeout::caller_deadline(req.headers()).unwrap_or(PENDING_TARGET_WAIT);
            let wait = wait_for_target(mesh.clone(), target.name.clone(), bound);
            return RouteFuture::waiting(
                Box::pin(wait),
                Box::new(move || {
                    dispatch(&mesh, &mesh.snapshot(), &target, &mut inner, req, trace)
                }),
            );
        }
        dispatch(
            &self.mesh,
            &snapshot,
            &self.target,
            &mut self.inner,
            req,
            trace,
        )
    }
}

impl<S> Route<S> {
    fn is_pending(&self) -> bool {
        self.mesh
            .discovery()
            .is_some_and(|d| d.is_pending(&self.target.name))
    }
}

/// How long a request waits for a pending target's configuration when its caller set no
/// `grpc-timeout`: long enough for a control plane that is slow to answer, short enough that a
/// caller without a deadline is not held forever.
/// The route's and the weighted cluster's response header changes, applied when the response
/// arrives.
type ResponseHeaders = Box<[HeaderMutations; 2]>;

const PENDING_TARGET_WAIT: Duration = Duration::from_secs(30);

/// Routes `req` with `snapshot` and calls `inner` (which must be ready).
fn dispatch<S>(
    mesh: &Mesh,
    snapshot: &Snapshot,
    target: &Target,
    inner: &mut S,
    mut req: Request<RequestBody>,
    trace: Option<RequestTrace>,
) -> RouteFuture<S::Future>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>,
{
    let is_grpc = mesh_core::route::is_grpc(req.headers());
    match route(mesh, snapshot, target, &mut req, is_grpc) {
        Ok((mut decision, response_headers)) => {
            mesh.request_controls()
                .apply_overrides(&mut decision, req.headers_mut());
            tracing::debug!(
                route = decision.route_name.as_deref().unwrap_or("-"),
                cluster = decision.cluster_name(),
                path = req.uri().path(),
                "routed"
            );
            if !decision.forward.mirrors.is_empty() {
                let forward = decision.forward.clone();
                req = mirror::start(snapshot, &forward, &decision, req);
            }
            decision.trace = trace;
            req.extensions_mut().insert(decision);
            RouteFuture::inner(inner.call(req), response_headers)
        }
        Err(response) => {
            // The access log reads the call's trace from the request.
            if let Some(trace) = trace {
                req.extensions_mut().insert(trace);
            }
            tracing::debug!(
                target = %target.name,
                path = req.uri().path(),
                status = response.status().as_u16(),
                "not routed: answered by the route layer"
            );
            RouteFuture::ready(counted(mesh, target, is_grpc, &req, *response))
        }
    }
}

/// An answer the route layer made itself (`NR`, a direct response, a redirect), recorded in
/// the client metrics with the channel's target as its destination: the metrics layer sits
/// after this one and never sees it, and Envoy's source reporter counts these too.
fn counted(
    mesh: &Mesh,
    target: &Target,
    is_grpc: bool,
    req: &Request<RequestBody>,
    response: Response<ResponseBody>,
) -> Response<ResponseBody> {
    match Recorder::client(mesh, &target.name, is_grpc, req) {
        Some(mut recorder) => {
            recorder.head(&response);
            response.map(|body| body.with_recorder(recorder))
        }
        None => response,
    }
}

/// Waits until `target` has configuration or stops being pending (the discovery source learnt
/// it does not exist), bounded by `bound`. Expiry is not an error: routing then answers the
/// still-missing target like any unknown one.
async fn wait_for_target(mesh: Mesh, target: Arc<str>, bound: Duration) {
    let mut published = mesh.published();
    let arrived = async {
        loop {
            let resolved = mesh.snapshot().config.listener(&target).is_some()
                || !mesh.discovery().is_some_and(|d| d.is_pending(&target));
            if resolved || published.changed().await.is_err() {
                return;
            }
        }
    };
    let _expired = tokio::time::timeout(bound, arrived).await;
}

/// Matches `req` and prepares it for its cluster, or says how to answer it (boxed: the answer
/// is the rare path).
fn route(
    mesh: &Mesh,
    snapshot: &Snapshot,
    target: &Target,
    req: &mut Request<RequestBody>,
    is_grpc: bool,
) -> Result<(RouteDecision, Option<ResponseHeaders>), Box<Response<ResponseBody>>> {
    let no_route = |message: String| {
        Failure::new(
            GrpcCode::Unavailable,
            StatusCode::NOT_FOUND,
            ResponseFlags::NoRoute,
            message,
        )
        .into_response(is_grpc)
        .into()
    };
    // Istio normalizes the paths of outbound requests too (one `pathNormalization` for every
    // HTTP connection manager): routes match, and the destination receives, the normalized
    // path. A clean path is only scanned.
    let paths = &snapshot.config.server().path_normalization;
    if let Err(message) = request_path::normalize_path(req, paths) {
        let refused =
            Failure::unflagged(GrpcCode::InvalidArgument, StatusCode::BAD_REQUEST, message);
        return Err(refused.into_response(is_grpc).into());
    }
    let Some(table) = snapshot.config.listener_in(&target.name, &target.namespace) else {
        return match snapshot.config.outbound().map(|o| (o.mode, o)) {
            Some((OutboundMode::AllowAny, _)) => pass_through(mesh, target, req, is_grpc),
            Some((OutboundMode::RegistryOnly, scope)) => {
                Err(black_hole(target, scope, is_grpc).into())
            }
            None => Err(no_route(format!(
                "no route configuration for target `{}`",
                target.name
            ))),
        };
    };
    // Matching reads the request in place; what the rewrite needs is computed before the
    // request is changed, so nothing is copied unless it is rewritten.
    let (rule, forward, weighted, new_path) = {
        let authority = request_authority(req, &target.name);
        let path_and_query = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
        let head = RequestHead {
            method: req.method(),
            authority,
            path_and_query,
            headers: req.headers(),
            source: Some(&target.workload),
        };
        let Some(matched) = table.find(&head) else {
            return Err(no_route(format!(
                "no route matches `{authority}{path_and_query}` for target `{}`",
                target.name
            )));
        };
        let rule = matched.route;
        let forward = match &rule.action {
            Action::Forward(forward) => forward,
            Action::DirectResponse(direct) => {
                return Err(direct_response(direct, is_grpc).into());
            }
            Action::Redirect(redirect) => {
                return Err(redirect_response(redirect, authority, path_and_query, is_grpc).into());
            }
        };
        let weighted = forward.clusters.pick(rng::draw());
        (
            rule,
            forward,
            weighted,
            rewritten_path(rule, forward, path_and_query),
        )
    };
    let Some(cluster) = snapshot.clusters.get(&weighted.name) else {
        // `MeshConfig` guarantees the cluster exists; answer rather than panic if it ever does not.
        return Err(Box::new(
            Failure::new(
                GrpcCode::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlags::NoCluster,
                format!("cluster `{}` is not configured", weighted.name),
            )
            .into_response(is_grpc),
        ));
    };
    set_uri(req, target, new_path, forward.authority_rewrite.as_ref()).map_err(|message| {
        Failure::new(
            GrpcCode::Internal,
            StatusCode::INTERNAL_SERVER_ERROR,
            ResponseFlags::NoRoute,
            message,
        )
        .into_response(is_grpc)
    })?;
    rule.request_headers.apply(req.headers_mut());
    weighted.request_headers.apply(req.headers_mut());
    let decision = RouteDecision {
        forward: forward.clone(),
        fault: weighted.fault.clone().or_else(|| rule.fault.clone()),
        is_grpc,
        route_name: rule.name.clone(),
        cluster: cluster.clone(),
        source_ip: target.workload.address,
        trace: None,
        hand_back: None,
    };
    // Most routes change no response headers: then nothing is copied or kept for the response.
    let response_headers =
        (!rule.response_headers.is_empty() || !weighted.response_headers.is_empty()).then(|| {
            Box::new([
                rule.response_headers.clone(),
                weighted.response_headers.clone(),
            ])
        });
    Ok((decision, response_headers))
}

/// The authority the caller addressed: the URI's, else `Host`, else the channel's target.
fn request_authority<'a>(req: &'a Request<RequestBody>, target: &'a str) -> &'a str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or(target)
}

/// The path and query after the route's path rewrite; `None` when the path is kept.
fn rewritten_path(rule: &RouteRule, forward: &Forward, path_and_query: &str) -> Option<String> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let new_path = match forward.path_rewrite.as_ref()? {
        PathRewrite::FullPath(full) => full.clone(),
        PathRewrite::Regex(rw) => rw.apply(path).into_owned(),
        PathRewrite::Prefix(prefix) => match rule.matcher.path.kind() {
            PathMatch::Prefix(matched) => {
                format!("{prefix}{}", path.get(matched.len()..).unwrap_or(""))
            }
            PathMatch::Exact(_) => prefix.clone(),
            PathMatch::Any => format!("{prefix}{}", path.strip_prefix('/').unwrap_or(path)),
            PathMatch::Regex(_) => prefix.clone(),
        },
    };
    Some(match query {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    })
}

/// Makes the request URI absolute (`http`, the authority the caller addressed or the
/// rewritten one) with the rewritten path, if any. The parts that stay are moved, not parsed
/// again; the target's authority is parsed once per channel.
fn set_uri(
    req: &mut Request<RequestBody>,
    target: &Target,
    new_path: Option<String>,
    authority_rewrite: Option<&HeaderValue>,
) -> Result<(), String> {
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    if let Some(rewrite) = authority_rewrite {
        req.headers_mut().insert(header::HOST, rewrite.clone());
        let authority = Authority::try_from(rewrite.as_bytes())
            .map_err(|e| format!("authority rewrite is not an authority: {e}"))?;
        parts.authority = Some(authority);
    } else if parts.authority.is_none() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let authority = match (host, &target.authority) {
            (None, Some(parsed)) => parsed.clone(),
            (host, _) => Authority::try_from(host.unwrap_or(&target.name))
                .map_err(|e| format!("request authority is invalid: {e}"))?,
        };
        parts.authority = Some(authority);
    }
    if let Some(path) = new_path {
        let path = PathAndQuery::try_from(path)
            .map_err(|e| format!("rewritten request path is invalid: {e}"))?;
        parts.path_and_query = Some(path);
    } else if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    parts.scheme = Some(Scheme::HTTP);
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|e| format!("rewritten request URI is invalid: {e}"))?;
    Ok(())
}

fn direct_response(direct: &DirectResponse, is_grpc: bool) -> Response<ResponseBody> {
    let body = direct.body.as_deref().unwrap_or("");
    if is_grpc {
        let code = GrpcCode::from_http_status(direct.status);
        let mut r = Failure::new(code, StatusCode::OK, ResponseFlags::DirectResponse, body)
            .into_response(true);
        r.extensions_mut().insert(ResponseFlags::DirectResponse);
        return r;
    }
    let mut r = Response::new(ResponseBody::full(body.to_owned()));
    *r.status_mut() =
        StatusCode::from_u16(direct.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.extensions_mut().insert(ResponseFlags::DirectResponse);
    r
}

fn redirect_response(
    redirect: &Redirect,
    authority: &str,
    path_and_query: &str,
    is_grpc: bool,
) -> Response<ResponseBody> {
    let scheme = redirect.scheme.as_deref().unwrap_or("http");
    let host = redirect
        .host
        .as_deref()
        .unwrap_or_else(|| authority.rsplit_once(':').map_or(authority, |(h, _)| h));
    let port = redirect
        .port
        .map(|p| format!(":{p}"))
        .or_else(|| {
            (redirect.host.is_none())
                .then(|| authority.rsplit_once(':').map(|(_, p)| format!(":{p}")))
                .flatten()
        })
        .unwrap_or_default();
    let (path, query) = path_and_query
        .split_once('?')
        .map_or((path_and_query, None), |(p, q)| (p, Some(q)));
    let path = match &redirect.path {
        Some(PathRewrite::FullPath(p) | PathRewrite::Prefix(p)) => p.clone(),
        Some(PathRewrite::Regex(rw)) => rw.apply(path).into_owned(),
        None => path.to_owned(),
    };
    let query = match query {
        Some(q) if !redirect.strip_query => format!("?{q}"),
        _ => String::new(),
    };
    let location = format!("{scheme}://{host}{port}{path}{query}");
    if is_grpc {
        // gRPC clients do not follow redirects: say where the service went.
        return Failure::new(
            GrpcCode::Unavailable,
            StatusCode::OK,
            ResponseFlags::DirectResponse,
            format!("redirected to {location}"),
        )
        .into_response(true);
    }
    let mut r = Response::new(ResponseBody::empty());
    *r.status_mut() =
        StatusCode::from_u16(redirect.status.as_u16()).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.extensions_mut().insert(ResponseFlags::DirectResponse);
    r
}

#[cfg(test)]
mod tests;
