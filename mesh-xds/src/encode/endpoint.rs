//! A cluster's endpoints as a `ClusterLoadAssignment`.
//!
//! Endpoints are grouped by (priority, locality) in order of first appearance — gRPC rejects
//! a locality listed twice in a priority — and every group carries a locality and a locality
//! weight, the sum of its endpoints' weights, as istiod sends them: gRPC ignores groups
//! without a weight, and a weight proportional to the endpoints' makes locality-weighted
//! balancing agree with per-endpoint weights (see [`crate::decode::endpoint`]).

use envoy_types::pb::{
    envoy::config::{
        core::v3::{self as core, Address, Metadata, SocketAddress, address, socket_address},
        endpoint::v3::{
            ClusterLoadAssignment, Endpoint as PbEndpoint, LbEndpoint, LocalityLbEndpoints,
            lb_endpoint,
        },
    },
    google::protobuf::{Struct, UInt32Value, Value, value::Kind},
};
use mesh_core::{Cluster, Endpoint, EndpointAddress, HealthStatus, Locality};

/// The metadata namespace endpoint labels are written to.
const LABELS: &str = "envoy.lb";

pub(super) fn encode(c: &Cluster) -> ClusterLoadAssignment {
    let mut groups: Vec<LocalityLbEndpoints> = Vec::new();
    for ((priority, locality), members) in groups_of(&c.endpoints) {
        let total: u64 = members.iter().map(|e| u64::from(e.weight.get())).sum();
        groups.push(LocalityLbEndpoints {
            locality: Some(core::Locality {
                region: locality.region.to_string(),
                zone: locality.zone.to_string(),
                sub_zone: locality.sub_zone.to_string(),
            }),
            lb_endpoints: members.iter().map(|e| lb_endpoint(e)).collect(),
            load_balancing_weight: Some(UInt32Value {
                value: u32::try_from(total).unwrap_or(u32::MAX).max(1),
            }),
            priority,
            ..LocalityLbEndpoints::default()
        });
    }
    ClusterLoadAssignment {
        cluster_name: c.name.to_string(),
        endpoints: groups,
        ..ClusterLoadAssignment::default()
    }
}

/// The endpoints in the order the load assignment lists them.
pub(super) fn grouped(endpoints: &[Endpoint]) -> Vec<Endpoint> {
    groups_of(endpoints)
        .into_iter()
        .flat_map(|(_, members)| members.into_iter().cloned())
        .collect()
}

type Group<'a> = ((u32, Locality), Vec<&'a Endpoint>);

fn groups_of(endpoints: &[Endpoint]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for e in endpoints {
        let key = (e.priority, e.locality.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(e),
            None => groups.push((key, vec![e])),
        }
    }
    groups
}

fn lb_endpoint(e: &Endpoint) -> LbEndpoint {
    let (host, port) = match &e.address {
        EndpointAddress::Socket(sa) => (sa.ip().to_string(), sa.port()),
        EndpointAddress::Dns { host, port } => (host.to_string(), *port),
    };
    let health = match e.health {
        HealthStatus::Unknown => core::HealthStatus::Unknown,
        HealthStatus::Healthy => core::HealthStatus::Healthy,
        HealthStatus::Unhealthy => core::HealthStatus::Unhealthy,
        HealthStatus::Draining => core::HealthStatus::Draining,
        HealthStatus::Timeout => core::HealthStatus::Timeout,
        HealthStatus::Degraded => core::HealthStatus::Degraded,
    };
    let metadata = (!e.labels.is_empty()).then(|| Metadata {
        filter_metadata: [(
            LABELS.to_string(),
            Struct {
                fields: e
                    .labels
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            Value {
                                kind: Some(Kind::StringValue(v.to_string())),
                            },
                        )
                    })
                    .collect(),
            },
        )]
        .into_iter()
        .collect(),
        ..Metadata::default()
    });
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(PbEndpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: host,
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
                    ..SocketAddress::default()
                })),
            }),
            ..PbEndpoint::default()
        })),
        health_status: health as i32,
        metadata,
        load_balancing_weight: Some(UInt32Value {
            value: e.weight.get(),
        }),
    }
}
