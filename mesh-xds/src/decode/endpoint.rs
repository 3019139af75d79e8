//! Decoding Envoy's `ClusterLoadAssignment` (EDS, or a cluster's inline `load_assignment`) into
//! [`Endpoint`]s.
//!
//! # Locality weights
//!
//! The model has no per-locality weight: endpoints carry their own weight, locality and
//! priority, and the balancer picks among the endpoints of the best healthy priority. Envoy's
//! locality-weighted balancing (and gRPC's `wrr_locality`) first picks a locality by its
//! `load_balancing_weight`, then an endpoint inside it by endpoint weight. The two agree
//! exactly when, within a priority, every locality's weight is proportional to the sum of its
//! endpoints' weights — which is what istiod sends (it sets a locality's weight to the sum of its
//! endpoints' weights). Multiplying the locality weight into each endpoint's weight would *not*
//! agree (a locality with more endpoints would get more than its share), so it is not done.
//! Locality weights that are not proportional are reported as unsupported, never silently
//! dropped.

// Deprecated fields are read on purpose: control planes still send them (istiod's proxyless
// TLS uses the deprecated certificate-provider-instance fields), and a set field must be
// decoded or reported, never skipped.
#![allow(deprecated)]

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
};

use envoy_types::pb::{
    envoy::config::{
        core::v3::{self as core, address, socket_address},
        endpoint::v3::{ClusterLoadAssignment, LbEndpoint, lb_endpoint, locality_lb_endpoints},
    },
    google::protobuf::value::Kind,
};
use mesh_core::{Endpoint, EndpointAddress, HealthStatus, Labels, Locality};

use super::{Ctx, DecodeError, Decoded};

/// Envoy's default overprovisioning factor (1.4, in percent).
const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;

/// Metadata namespaces whose string fields become endpoint [`Labels`]; earlier wins on a clash.
const LABEL_NAMESPACES: [&str; 2] = ["envoy.lb", "istio"];

/// Decodes an EDS `ClusterLoadAssignment` into endpoints (errors and reports name it by its
/// `cluster_name`).
pub fn decode_load_assignment(
    cla: &ClusterLoadAssignment,
) -> Result<Decoded<Vec<Endpoint>>, DecodeError> {
    let mut ctx = Ctx::new("ClusterLoadAssignment", cla.cluster_name.clone());
    let endpoints = endpoints(&mut ctx, "", cla)?;
    Ok(ctx.done(endpoints))
}

/// The endpoints of `cla`; field paths start with `prefix` (`""` or `"load_assignment."`).
pub(crate) fn endpoints(
    ctx: &mut Ctx,
    prefix: &str,
    cla: &ClusterLoadAssignment,
) -> Result<Vec<Endpoint>, DecodeError> {
    let mut out = Vec::new();
    // Per locality: (path, priority, locality weight, sum of endpoint weights).
    let mut weights: Vec<(String, u32, Option<u32>, u64)> = Vec::new();
    for (i, lle) in cla.endpoints.iter().enumerate() {
        let path = format!("{prefix}endpoints[{i}]");
        let locality = lle
            .locality
            .as_ref()
            .map(|l| Locality {
                region: l.region.as_str().into(),
                zone: l.zone.as_str().into(),
                sub_zone: l.sub_zone.as_str().into(),
            })
            .unwrap_or_default();
        if lle.metadata.is_some() {
            ctx.unsupported(format!("{path}.metadata"), "ignored");
        }
        if lle.proximity.is_some() {
            ctx.unsupported(format!("{path}.proximity"), "ignored");
        }
        match &lle.lb_config {
            None => {}
            Some(locality_lb_endpoints::LbConfig::LoadBalancerEndpoints(_)) => {
                ctx.unsupported(format!("{path}.load_balancer_endpoints"), "ignored");
            }
            Some(locality_lb_endpoints::LbConfig::LedsClusterLocalityConfig(_)) => {
                ctx.unsupported(format!("{path}.leds_cluster_locality_config"), "ignored");
            }
        }
        let locality_weight = match lle.load_balancing_weight {
            Some(w) if w.value == 0 => {
                return Err(ctx.error(
                    format!("{path}.load_balancing_weight"),
                    "must be at least 1",
                ));
            }
            w => w.map(|w| w.value),
        };
        let mut sum = 0u64;
        for (j, lbe) in lle.lb_endpoints.iter().enumerate() {
            let ep = lb_endpoint(ctx, &format!("{path}.lb_endpoints[{j}]"), lbe)?;
            sum += u64::from(ep.weight.get());
            out.push(Endpoint {
                locality: locality.clone(),
                priority: lle.priority,
                ..ep
            });
        }
        weights.push((path, lle.priority, locality_weight, sum));
    }
    report_locality_weights(ctx, &weights);
    if !cla.named_endpoints.is_empty() {
        ctx.unsupported(format!("{prefix}named_endpoints"), "ignored");
    }
    if let Some(policy) = &cla.policy {
        let path = format!("{prefix}policy");
        if !policy.drop_overloads.is_empty() {
            ctx.unsupported(
                format!("{path}.drop_overloads"),
                "ignored: nothing is dropped",
            );
        }
        if let Some(f) = policy.overprovisioning_factor
            && f.value != DEFAULT_OVERPROVISIONING_FACTOR
        {
            ctx.unsupported(
                format!("{path}.overprovisioning_factor"),
                "ignored: the default 140 is used",
            );
        }
        if policy.endpoint_stale_after.is_some() {
            ctx.unsupported(format!("{path}.endpoint_stale_after"), "ignored");
        }
        if policy.weighted_priority_health {
            ctx.unsupported(format!("{path}.weighted_priority_health"), "ignored");
        }
    }
    Ok(out)
}

/// Reports the locality weights of every priority where they are not proportional to the
/// localities' endpoint weights (see the module docs for why proportional ones are exact).
fn report_locality_weights(ctx: &mut Ctx, weights: &[(String, u32, Option<u32>, u64)]) {
    let mut priorities: Vec<u32> = weights.iter().map(|w| w.1).collect();
    priorities.sort_unstable();
    priorities.dedup();
    for p in priorities {
        let level: Vec<_> = weights.iter().filter(|w| w.1 == p).collect();
        if level.iter().all(|w| w.2.is_none()) {
            continue;
        }
        let reference = level.iter().find_map(|w| w.2.map(|lw| (lw, w.3)));
        let proportional = level.iter().all(|w| match (w.2, reference) {
            // W_l / S_l == W_r / S_r, cross-multiplied to stay in integers.
            (Some(lw), Some((rw, rs))) => {
                u128::from(lw) * u128::from(rs) == u128::from(rw) * u128::from(w.3)
            }
            _ => false,
        });
        if !proportional {
            for w in level.iter().filter(|w| w.2.is_some()) {
                ctx.unsupported(
                    format!("{}.load_balancing_weight", w.0),
                    "ignored: endpoints are balanced by their own weights",
                );
            }
        }
    }
}

/// One `LbEndpoint`, without locality and priority.
fn lb_endpoint(ctx: &mut Ctx, path: &str, lbe: &LbEndpoint) -> Result<Endpoint, DecodeError> {
    let ep = match &lbe.host_identifier {
        Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => ep,
        Some(lb_endpoint::HostIdentifier::EndpointName(_)) => {
            return Err(ctx.error(
                format!("{path}.endpoint_name"),
                "named endpoints are not supported",
            ));
        }
        None => return Err(ctx.error(format!("{path}.endpoint"), "required")),
    };
    let epath = format!("{path}.endpoint");
    let address = match &ep.address {
        Some(a) => address(ctx, &format!("{epath}.address"), a)?,
        None => return Err(ctx.error(format!("{epath}.address"), "required")),
    };
    if ep.health_check_config.is_some() {
        ctx.unsupported(format!("{epath}.health_check_config"), "ignored");
    }
    if !ep.hostname.is_empty() {
        ctx.unsupported(format!("{epath}.hostname"), "ignored");
    }
    if !ep.additional_addresses.is_empty() {
        ctx.unsupported(format!("{epath}.additional_addresses"), "ignored");
    }
    if !ep.observability_name.is_empty() {
        ctx.unsupported(format!("{epath}.observability_name"), "ignored");
    }
    let health = match core::HealthStatus::try_from(lbe.health_status) {
        Ok(core::HealthStatus::Unknown) => HealthStatus::Unknown,
        Ok(core::HealthStatus::Healthy) => HealthStatus::Healthy,
        Ok(core::HealthStatus::Unhealthy) => HealthStatus::Unhealthy,
        Ok(core::HealthStatus::Draining) => HealthStatus::Draining,
        Ok(core::HealthStatus::Timeout) => HealthStatus::Timeout,
        Ok(core::HealthStatus::Degraded) => HealthStatus::Degraded,
        Err(_) => {
            return Err(ctx.error(
                format!("{path}.health_status"),
                format!("unknown value {}", lbe.health_status),
            ));
        }
    };
    let weight = match lbe.load_balancing_weight {
        None => NonZeroU32::MIN,
        Some(w) => NonZeroU32::new(w.value).ok_or_else(|| {
            ctx.error(
                format!("{path}.load_balancing_weight"),
                "must be at least 1",
            )
        })?,
    };
    let labels = match &lbe.metadata {
        Some(m) => labels(ctx, &format!("{path}.metadata"), m)?,
        None => Labels::default(),
    };
    Ok(Endpoint {
        weight,
        health,
        labels,
        ..Endpoint::new(address)
    })
}

/// A socket address: an IP literal, or a host name the data plane resolves.
pub(crate) fn address(
    ctx: &mut Ctx,
    path: &str,
    a: &core::Address,
) -> Result<EndpointAddress, DecodeError> {
    let sa = match &a.address {
        Some(address::Address::SocketAddress(sa)) => sa,
        Some(address::Address::Pipe(_)) => {
            return Err(ctx.error(
                format!("{path}.pipe"),
                "only socket addresses are supported",
            ));
        }
        Some(address::Address::EnvoyInternalAddress(_)) => {
            return Err(ctx.error(
                format!("{path}.envoy_internal_address"),
                "only socket addresses are supported",
            ));
        }
        None => return Err(ctx.error(format!("{path}.socket_address"), "required")),
    };
    let path = format!("{path}.socket_address");
    if sa.protocol != socket_address::Protocol::Tcp as i32 {
        return Err(ctx.error(format!("{path}.protocol"), "only TCP is supported"));
    }
    if !sa.resolver_name.is_empty() {
        ctx.unsupported(format!("{path}.resolver_name"), "ignored");
    }
    if sa.ipv4_compat {
        ctx.unsupported(format!("{path}.ipv4_compat"), "ignored");
    }
    if !sa.network_namespace_filepath.is_empty() {
        ctx.unsupported(format!("{path}.network_namespace_filepath"), "ignored");
    }
    let port = match &sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => match u16::try_from(*p) {
            Ok(p) if p != 0 => p,
            _ => {
                return Err(ctx.error(
                    format!("{path}.port_value"),
                    format!("{p} is not a port between 1 and 65535"),
                ));
            }
        },
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(ctx.error(
                format!("{path}.named_port"),
                "named ports are not supported",
            ));
        }
        None => return Err(ctx.error(format!("{path}.port_value"), "required")),
    };
    if let Ok(ip) = sa.address.parse::<IpAddr>() {
        return Ok(EndpointAddress::Socket(SocketAddr::new(ip, port)));
    }
    if !is_host_name(&sa.address) {
        return Err(ctx.error(
            format!("{path}.address"),
            format!("`{}` is neither an IP address nor a host name", sa.address),
        ));
    }
    Ok(EndpointAddress::Dns {
        host: Arc::from(sa.address.as_str()),
        port,
    })
}

/// Whether `s` looks like a DNS host name (letters, digits, `-`, `_`, dots; 1..=253 bytes).
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').enumerate().all(|(i, label)| {
            // A single trailing dot (fully-qualified form) is allowed.
            (label.is_empty() && i > 0 && s.ends_with('.') && s.len() > 1)
                || (!label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        })
}

/// Labels from the string fields of the `envoy.lb` and `istio` metadata namespaces.
fn labels(ctx: &mut Ctx, path: &str, m: &core::Metadata) -> Result<Labels, DecodeError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for ns in LABEL_NAMESPACES {
        let Some(fields) = m.filter_metadata.get(ns) else {
            continue;
        };
        let mut keys: Vec<&String> = fields.fields.keys().collect();
        keys.sort();
        for key in keys {
            let fpath = format!("{path}.filter_metadata[{ns}].{key}");
            match fields.fields.get(key).and_then(|v| v.kind.as_ref()) {
                Some(Kind::StringValue(v)) => match out.iter().find(|(k, _)| k == key) {
                    Some((_, first)) if first != v => {
                        ctx.unsupported(fpath, "ignored: the envoy.lb value wins");
                    }
                    Some(_) => {}
                    None => out.push((key.clone(), v.clone())),
                },
                _ => ctx.unsupported(fpath, "ignored: only string values become labels"),
            }
        }
    }
    let mut others: Vec<&String> = m
        .filter_metadata
        .keys()
        .filter(|ns| !LABEL_NAMESPACES.contains(&ns.as_str()))
        .collect();
    others.sort();
    for ns in others {
        ctx.unsupported(format!("{path}.filter_metadata[{ns}]"), "ignored");
    }
    if !m.typed_filter_metadata.is_empty() {
        ctx.unsupported(format!("{path}.typed_filter_metadata"), "ignored");
    }
    Labels::new(out).map_err(|e| ctx.error(path, e.message()))
}

#[cfg(test)]
mod tests;
