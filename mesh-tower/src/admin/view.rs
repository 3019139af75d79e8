//! JSON views of the configuration and of the clusters' runtime state.
//!
//! Views, not `Serialize` on the model: the model stays free of serde, and the dump can show
//! what an operator needs (names, thresholds, health) in a stable shape. Matchers and actions
//! are shown in their `Debug` form, which is complete, rather than re-modelled here.

use serde_json::{Value, json};

use mesh_core::{
    AuthzAction, Cluster, HealthStatus, Labels, MeshConfig, MtlsMode, ServerPolicy,
    route::VirtualHost,
};

use crate::{Mesh, RequestControls};

/// `/config_dump`: the whole configuration.
pub(super) fn config(config: &MeshConfig) -> Value {
    let listeners: Vec<Value> = config
        .listeners()
        .iter()
        .map(|(target, table)| {
            json!({
                "target": &**target,
                "route_config": table.name(),
                "virtual_hosts": table.virtual_hosts().iter().map(virtual_host).collect::<Vec<_>>(),
            })
        })
        .collect();
    let clusters: Vec<Value> = config.clusters().values().map(|c| cluster(c)).collect();
    json!({
        "version": config.version(),
        "listeners": listeners,
        "clusters": clusters,
        "server": server(config.server()),
    })
}

/// The `x-envoy-*` request headers the mesh honours: an operator must be able to see that a
/// caller can inject faults or change timeouts.
pub(super) fn request_controls(controls: &RequestControls) -> Value {
    json!({
        "header_faults": controls.header_fault_policy().map(|f| format!("{f:?}")),
        "trust_override_headers": controls.trusts_override_headers(),
    })
}

fn virtual_host(vh: &VirtualHost) -> Value {
    json!({
        "name": vh.name(),
        "domains": vh.domains().iter().map(|d| format!("{d:?}")).collect::<Vec<_>>(),
        "routes": vh.routes().iter().map(|r| json!({
            "name": r.name.as_deref(),
            "match": format!("{:?}", r.matcher),
            "action": format!("{:?}", r.action),
            "fault": r.fault.as_ref().map(|f| format!("{f:?}")),
        })).collect::<Vec<_>>(),
    })
}

fn cluster(c: &Cluster) -> Value {
    let b = &c.breaker;
    json!({
        "name": &*c.name,
        "lb_policy": format!("{:?}", c.lb),
        "connect_timeout_ms": millis(c.connect_timeout),
        "circuit_breakers": {
            "max_connections": b.max_connections,
            "max_pending_requests": b.max_pending_requests,
            "max_requests": b.max_requests,
            "max_retries": b.max_retries,
            "retry_budget": b.retry_budget.as_ref().map(|r| format!("{r:?}")),
        },
        "outlier_detection": c.outlier.as_ref().map(|o| format!("{o:?}")),
        "panic_threshold": c.panic_threshold.to_string(),
        "tls_mode": format!("{:?}", c.tls.mode),
        "endpoints": c.endpoints.iter().map(|e| json!({
            "address": e.address.to_string(),
            "weight": e.weight.get(),
            "priority": e.priority,
            "health": health(e.health),
            "locality": format!("{}/{}/{}", e.locality.region, e.locality.zone, e.locality.sub_zone),
            "labels": labels(&e.labels),
        })).collect::<Vec<_>>(),
    })
}

fn server(s: &ServerPolicy) -> Value {
    json!({
        "authorization": s.authorization.iter().map(|p| json!({
            "name": &*p.name,
            "namespace": &*p.scope.namespace,
            "selector": p.scope.selector.as_ref().map(labels),
            "action": match p.action {
                AuthzAction::Allow => "ALLOW",
                AuthzAction::Deny => "DENY",
                AuthzAction::Audit => "AUDIT",
            },
            "dry_run": p.dry_run,
            "rules": p.rules.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "peer_authentication": s.peer_authentication.iter().map(|p| json!({
            "name": &*p.name,
            "namespace": &*p.scope.namespace,
            "mode": p.mode.map(mtls_mode),
            "port_modes": p.port_modes.iter().map(|(port, m)| (port.to_string(), Value::from(mtls_mode(*m)))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "fault": s.fault.as_ref().map(|f| format!("{f:?}")),
        "rate_limit": s.rate_limit.map(|r| json!({
            "max_tokens": r.max_tokens(),
            "tokens_per_fill": r.tokens_per_fill(),
            "fill_interval_ms": millis(r.fill_interval()),
        })),
    })
}

/// `/clusters`: every cluster's endpoints and counters, as the data plane sees them now.
pub(super) fn clusters(mesh: &Mesh) -> Value {
    let snapshot = mesh.snapshot();
    let mut names: Vec<_> = snapshot.clusters.keys().collect();
    names.sort();
    let clusters: Vec<Value> = names
        .into_iter()
        .filter_map(|name| snapshot.clusters.get(name))
        .map(|entry| {
            let stats = entry.stats();
            let endpoints: Vec<Value> = entry
                .policy
                .endpoints
                .iter()
                .zip(entry.connections.iter())
                .map(|(e, connection)| {
                    json!({
                        "address": e.address.to_string(),
                        "health": health(e.health),
                        "ejected": entry.state.is_ejected(&e.address),
                        "active_requests": connection.active_requests(),
                        "weight": e.weight.get(),
                        "priority": e.priority,
                    })
                })
                .collect();
            json!({
                "name": &*entry.policy.name,
                "active_requests": stats.active_requests,
                "overflows": stats.overflows,
                "connections": stats.open_connections,
                "connection_overflows": stats.connection_overflows,
                "retries": stats.retries,
                "ejections": stats.ejections,
                "outcomes_dropped": stats.outcomes_dropped,
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({ "version": snapshot.config.version(), "clusters": clusters })
}

fn health(h: HealthStatus) -> &'static str {
    match h {
        HealthStatus::Unknown => "UNKNOWN",
        HealthStatus::Healthy => "HEALTHY",
        HealthStatus::Unhealthy => "UNHEALTHY",
        HealthStatus::Draining => "DRAINING",
        HealthStatus::Timeout => "TIMEOUT",
        HealthStatus::Degraded => "DEGRADED",
    }
}

fn mtls_mode(m: MtlsMode) -> &'static str {
    match m {
        MtlsMode::Strict => "STRICT",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Disable => "DISABLE",
    }
}

fn labels(l: &Labels) -> Value {
    l.iter()
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
