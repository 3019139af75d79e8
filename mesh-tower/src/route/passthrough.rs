//! Targets the workload does not know, under the Sidecar's `outboundTrafficPolicy`:
//! `ALLOW_ANY` passes them through by DNS (Envoy's `PassthroughCluster`), `REGISTRY_ONLY`
//! refuses them.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use http::{Request, Response, StatusCode};
use mesh_core::{
    Cluster, EndpointAddress, GrpcCode,
    route::{Forward, WeightedClusters},
    sidecar::OutboundScope,
};

use super::{ResponseHeaders, Target, set_uri};
use crate::{
    Mesh,
    body::{RequestBody, ResponseBody},
    cluster::ClusterEntry,
    decision::RouteDecision,
    synthesize::{Failure, ResponseFlags},
};

/// Where a target the workload does not know goes under `outboundTrafficPolicy: ALLOW_ANY`:
/// the target itself, resolved by DNS, with no mesh policy (Envoy's `PassthroughCluster`).
#[derive(Debug)]
pub(super) struct Passthrough {
    forward: Arc<Forward>,
    cluster: ClusterEntry,
}

/// Routes a request for a target the workload does not know to the target itself by DNS,
/// with no policy (no retries, no timeout), as Envoy's `PassthroughCluster` does for
/// `ALLOW_ANY`.
pub(super) fn pass_through(
    mesh: &Mesh,
    target: &Target,
    req: &mut Request<RequestBody>,
    is_grpc: bool,
) -> Result<(RouteDecision, Option<ResponseHeaders>), Box<Response<ResponseBody>>> {
    let fail = |code, status, message: String| {
        Box::new(Failure::new(code, status, ResponseFlags::NoRoute, message).into_response(is_grpc))
    };
    let Some(address) = passthrough_address(&target.name) else {
        return Err(fail(
            GrpcCode::Unavailable,
            StatusCode::NOT_FOUND,
            format!(
                "target `{}` is not in the mesh registry and has no port to pass through to",
                target.name
            ),
        ));
    };
    let passthrough = target.passthrough.get_or_init(|| {
        let policy = Arc::new(Cluster::new(
            PASSTHROUGH_CLUSTER,
            vec![mesh_core::Endpoint::new(address)],
        ));
        Passthrough {
            forward: Arc::new(Forward::to(WeightedClusters::single(PASSTHROUGH_CLUSTER))),
            cluster: ClusterEntry::build(&policy, None, mesh.tls(), mesh.connector(), None),
        }
    });
    set_uri(req, target, None, None).map_err(|message| {
        fail(
            GrpcCode::Internal,
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
        )
    })?;
    let decision = RouteDecision {
        forward: passthrough.forward.clone(),
        fault: None,
        is_grpc,
        route_name: Some(Arc::from("allow_any")),
        cluster: passthrough.cluster.clone(),
        source_ip: target.workload.address,
        trace: None,
        hand_back: None,
    };
    Ok((decision, None))
}

/// Envoy's name for the cluster of hosts passed through under `ALLOW_ANY`.
const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";

/// The address a `host:port` target is passed through to.
fn passthrough_address(target: &str) -> Option<EndpointAddress> {
    let (host, port) = target.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(match host.parse::<IpAddr>() {
        Ok(ip) => EndpointAddress::Socket(SocketAddr::new(ip, port)),
        Err(_) => EndpointAddress::Dns {
            host: host.into(),
            port,
        },
    })
}

/// The answer to a target the workload does not know under `REGISTRY_ONLY` (Envoy's
/// `block_all` route: HTTP 502; gRPC `UNAVAILABLE`), naming the Sidecar that decided it.
pub(super) fn black_hole(
    target: &Target,
    scope: &OutboundScope,
    is_grpc: bool,
) -> Response<ResponseBody> {
    let hidden_why = format!(
        "is not imported by its egress hosts or not exported to namespace `{}`",
        scope.namespace
    );
    let why = match scope.hidden_listener(&target.name) {
        Some(hidden) if **hidden == *target.name => hidden_why,
        Some(hidden) => format!("({hidden}) {hidden_why}"),
        None => "is not in the mesh registry".to_string(),
    };
    let target = &target.name;
    let by = match &scope.sidecar {
        Some(sidecar) => format!("Sidecar {sidecar}"),
        None => "the mesh".to_string(),
    };
    Failure::new(
        GrpcCode::Unavailable,
        StatusCode::BAD_GATEWAY,
        ResponseFlags::NoRoute,
        format!("target `{target}` {why}: refused by outboundTrafficPolicy REGISTRY_ONLY of {by}"),
    )
    .into_response(is_grpc)
}
